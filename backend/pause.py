"""Pause: the display holds while any reason to pause is on.

Reasons are short names: "skin" for the skin's Pause command, a rule's name for the desktop
rules (a full-screen game, a busy GPU). `set(reason, on)` may be called from any thread; the
daemon's loop acts on the change (`wanted` vs `applied`), because only that thread may touch
the VAE. While paused, ComfyUI's memory is given back with /free `free_delay` seconds after the
pause began (a rule that flickers on and off should not unload the models each time; ComfyUI
applies /free after the job in flight, so the interrupted job is over by then anyway).
No torch here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Pause:
    """Why the display is paused (`reason`), and when the memory is due to be given back."""

    def __init__(self, clock: Callable[[], float], free_delay: float = 0.0) -> None:
        self._clock, self.free_delay = clock, free_delay
        self._lock = threading.Lock()
        self._reasons: dict[str, None] = {}  # in the order they came on
        self.applied = False                 # the loop has paused the schedule
        self._free_at: float | None = None

    def set(self, reason: str, on: bool) -> None:
        with self._lock:
            if on:
                self._reasons.setdefault(reason, None)
            else:
                self._reasons.pop(reason, None)

    def toggle(self, reason: str) -> None:
        with self._lock:
            on = reason not in self._reasons
        self.set(reason, on)

    @property
    def wanted(self) -> bool:
        with self._lock:
            return bool(self._reasons)

    @property
    def reason(self) -> str:
        """The reasons on, comma-separated ("" when not paused)."""
        with self._lock:
            return ", ".join(self._reasons)

    def began(self) -> None:
        self.applied = True
        self._free_at = self._clock() + self.free_delay

    def ended(self) -> None:
        self.applied = False
        self._free_at = None

    def free_due(self) -> bool:
        """True once per pause, when the memory should be given back now."""
        if self._free_at is None or self._clock() < self._free_at:
            return False
        self._free_at = None
        return True
