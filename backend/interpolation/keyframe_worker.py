"""The keyframe lookahead: one thread that asks the keyframe source for the next keyframe.

The worker never touches torch: it only talks to the source (ComfyUI over HTTP, or a folder).
It holds at most ONE finished keyframe that the schedule has not taken yet, and starts the
next one only when that slot is empty, so while segment s plays (K_s and K_{s+1} taken) it is
making K_{s+2} and nothing further: exactly one keyframe ahead, as DESIGN.md's lookahead says.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from backend.frames import Keyframe

log = logging.getLogger(__name__)


class KeyframeSource(Protocol):
    """Anything that makes the next keyframe from the previous one.

    `next_keyframe(previous)` returns a `frames.Keyframe` (image: PIL RGB, any size; `seconds`
    its generation time; `generated` False for a loaded image, so it does not count as
    latency), or None once the source was closed. `previous` is None for the first keyframe.
    Optional `close()` aborts an in-flight request (called from another thread on shutdown).
    Optional `.state`: "unavailable" while the source cannot reach its server (an outage, which
    the schedule must not mistake for a slow keyframe).
    """

    def next_keyframe(self, previous: Keyframe | None) -> Keyframe | None: ...


class LatencyEstimate:
    """Keyframe latency in seconds: rises at once to a slower sample, decays slowly (EMA 0.25)."""

    def __init__(self, decay: float = 0.25) -> None:
        self.decay = decay
        self.value: float | None = None

    def add(self, seconds: float) -> None:
        # Fast attack: under-estimating the latency costs a stall, over-estimating costs only
        # a few extra in-betweens, so a slower keyframe is believed immediately.
        if self.value is None or seconds >= self.value:
            self.value = seconds
        else:
            self.value += self.decay * (seconds - self.value)


class KeyframeWorker:
    """Background thread: `source.next_keyframe(previous)` -> one-slot hand-off to `take()`."""

    def __init__(self, source: KeyframeSource, *, name: str = "reverie-keyframes",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self.made = 0                       # keyframes finished by the source so far
        self.latency = LatencyEstimate()    # seconds per generated keyframe
        self._name = name
        self._clock = clock
        self._cond = threading.Condition()
        self._ready: Keyframe | None = None  # the finished keyframe nobody has taken yet
        self._since: float | None = None    # when the keyframe being made was asked for
        self._working = False               # the thread is inside source.next_keyframe
        self._error: BaseException | None = None
        self._paused = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def take(self, timeout: float | None = None) -> Keyframe | None:
        """The next keyframe, or None if none arrived within `timeout` s (None = wait forever).

        Re-raises, in the caller's thread, a fatal error the source raised (e.g. a wrong
        checkpoint found once ComfyUI came back).
        """
        with self._cond:
            self._cond.wait_for(lambda: self._ready is not None or self._error is not None
                                or self._stopping, timeout)
            if self._error is not None:
                raise self._error
            keyframe, self._ready = self._ready, None
            if keyframe is not None and not self._paused and not self._stopping:
                # The slot is free, so the next keyframe is asked for now: stamp it here, not
                # when the thread gets scheduled, so the schedule sees it in flight at once.
                self._since = self._clock()
            self._cond.notify_all()
            return keyframe

    def pause(self) -> None:
        """Start no new keyframe (the one in flight finishes) until `resume()`."""
        with self._cond:
            self._paused = True
            if not self._working:  # asked for by take() but not started: nothing is in flight
                self._since = None

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    @property
    def ready(self) -> Keyframe | None:
        """The finished keyframe waiting to be taken, or None (a peek: does not take it)."""
        return self._ready

    @property
    def in_flight_since(self) -> float | None:
        """When (on the worker's clock, monotonic s) the keyframe being made now was asked for.

        None while nothing is being made: the finished keyframe waits in the slot, paused, or
        the source is "unavailable" (an outage is not latency: the display should hold and say
        so). The schedule reads `clock() - in_flight_since` as a lower bound on that keyframe's
        latency, long before the keyframe finishes and the estimate can learn it.
        """
        if getattr(self.source, "state", None) == "unavailable":
            return None
        return self._since

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self, timeout: float = 2.0) -> bool:
        """Stop the thread, aborting the source's in-flight request; True if it joined in time."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        closer = getattr(self.source, "close", None)
        if callable(closer):
            closer()
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.alive

    def _run(self) -> None:
        previous: Keyframe | None = None
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or (
                    self._ready is None and not self._paused))
                if self._stopping:
                    return
                started = self._clock()
                if self._since is None:   # the first keyframe, or the first after a pause
                    self._since = started
                self._working = True
            try:
                keyframe = self.source.next_keyframe(previous)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread
                with self._cond:
                    self._since, self._working = None, False
                    if not self._stopping:
                        log.debug("keyframe source failed: %r", exc)
                        self._error = exc
                    self._cond.notify_all()
                return
            if keyframe is None:          # the source was closed while we waited on it
                with self._cond:
                    self._since, self._working = None, False
                return
            previous = keyframe
            if keyframe.generated:
                self.latency.add(keyframe.seconds or self._clock() - started)
            with self._cond:
                self._ready = keyframe
                self.made += 1
                self._since, self._working = None, False
                self._cond.notify_all()
