"""Listeners: the callbacks that hear whether a ComfyUI server answers, kept for Reachability
(one server) and CurrentReachability (whichever server is current) alike.

Why its own noun: both hold the same list with the same rules. It is changed from any thread
(a source subscribes, a request reports), and a listener is called outside the lock, because a
listener may read the reachability back or unsubscribe itself while it is being told.
"""

from __future__ import annotations

import threading
from typing import Callable

Listener = Callable[[bool, str], None]


class Listeners:
    """Thread-safe list of `listener(ok: bool, error: str)` callbacks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        """`listener(ok, error)` on each change from now on."""
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        """Stop telling `listener`; one that was never subscribed is ignored."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def tell(self, ok: bool, error: str) -> None:
        """Call every listener subscribed now with (ok, error), in subscription order; the error
        is dropped when ok (an answering server has no reason to be down)."""
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:          # outside the lock: a listener may read us back
            listener(ok, "" if ok else error)
