"""Stalls: the display holding its picture because the keyframe the next frame needs is late.

A wait counts as a stall only once a frame is on screen: waiting for K_1 after K_0 was shown
is a stall (the picture stands still), waiting for K_0 at start-up is "starting" (there is no
picture yet). A wait starts at the moment the frame was due (`due`), not when it was asked
for early, and the stall going on now is counted (and timed up to now) before it ends.
No torch here.
"""

from __future__ import annotations

from collections.abc import Callable


class Stalls:
    """`count` and `seconds` of the holds so far, the one going on included."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._count = 0
        self._seconds = 0.0
        self._since: float | None = None   # when the missing keyframe was first needed
        self._counts = False               # that wait holds a picture (not start-up)
        self.holding = False               # the last request for that keyframe came back empty

    def need(self, due: float | None, shown: bool) -> None:
        """A keyframe is needed for the frame due at `due` (None: now); `shown`: a frame is on screen."""
        if self._since is None:
            now = self._clock()
            self._since = now if due is None else max(now, due)
            self._counts = shown

    def missing(self) -> None:
        self.holding = True

    def arrived(self) -> None:
        waited = self._clock() - (self._since if self._since is not None else self._clock())
        if self._counts and waited > 0.001:
            self._count += 1
            self._seconds += waited
        self._since, self.holding = None, False

    def _so_far(self) -> float:
        if not self.holding or self._since is None or not self._counts:
            return 0.0
        return max(0.0, self._clock() - self._since)

    @property
    def count(self) -> int:
        return self._count + (1 if self._so_far() > 0.001 else 0)

    @property
    def seconds(self) -> float:
        return self._seconds + self._so_far()
