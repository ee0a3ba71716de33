"""Test helpers for the keyframe thread: a clock the test moves and a source it releases by hand."""

from __future__ import annotations

import threading
import time


class FakeClock:
    """A monotonic clock the test moves by hand (`now`, seconds); `wait` passes time at once
    (a pacing.Clock: the daemon's waits take no real time on it)."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.waited = 0.0

    def __call__(self) -> float:
        return self.now

    def wait(self, event: threading.Event, seconds: float) -> bool:
        if not event.is_set():
            seconds = max(0.0, seconds)
            self.now += seconds
            self.waited += seconds
        return event.is_set()


class Gated:
    """Base of a keyframe source whose keyframes finish only when the test calls `finish()`."""

    def __init__(self) -> None:
        self.calls = 0
        self._gate = threading.Semaphore(0)
        self._closed = threading.Event()

    def _wait_for_finish(self) -> bool:
        """Block until `finish()` (True) or `close()` (False)."""
        while not self._gate.acquire(timeout=0.02):
            if self._closed.is_set():
                return False
        return True

    def finish(self) -> None:
        self._gate.release()

    def close(self) -> None:
        self._closed.set()


def wait_until(condition, seconds: float = 5.0) -> None:
    """Poll `condition()` (the keyframe thread runs on real time) until true, at most `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the keyframe thread did not get there"
        time.sleep(0.002)
