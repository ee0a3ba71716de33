"""Pacing: when each frame is due, what this machine sustains, and how long a segment must last.

One object per run, shared by the daemon (which shows a frame at each `deadline`) and the
schedule (which measures decode cost, sizes decode batches and plans N for `auto`):

- the target fps comes from the config (display.fps) and is set live on an edit;
- decode and write costs are EMAs of measured seconds per frame; `fps_cap` is what they
  sustain, and `fps` (the rate frames are paced at) is the target capped by it;
- the cadence is a monotonic deadline advanced by one period per frame shown, restarted
  instead of bursting when it falls behind, and restarted at once on a control or an edit;
- auto N: the frames a segment needs so that it lasts as long as a keyframe takes.

The clock is injected (`Clock`), so the daemon and the schedule are tested on a fake one.
No torch here.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds, and a wait on an Event that this clock's time passes through."""

    def __call__(self) -> float: ...

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait up to `seconds` for `event`; True when it is set."""
        ...


class MonotonicClock:
    """Real time: `time.monotonic()`, and `Event.wait` (a stop request cuts the wait short)."""

    def __call__(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(max(0.0, seconds))


def ema(old: float | None, sample: float, weight: float = 0.2) -> float:
    return sample if old is None else old + weight * (sample - old)


class Pacing:
    """The cadence (`deadline`, `period`) and the costs that cap it (`fps_cap`, `fps`)."""

    def __init__(self, fps: float, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or MonotonicClock()
        self.target_fps = fps                     # display.fps, as configured
        self.decode_seconds: float | None = None  # EMA per decoded frame
        self.write_seconds: float | None = None   # EMA per written frame (PNG + files + status)
        self.deadline = self.clock()              # monotonic time the next frame is due

    # -- costs -------------------------------------------------------------------------------
    def record_decode(self, seconds: float, frames: int) -> None:
        # Floored: a clock coarser than the decode (15.6 ms ticks on Windows before Python 3.13)
        # reads 0 s, and the batch budgets divide by this cost.
        self.decode_seconds = ema(self.decode_seconds, max(1e-6, seconds / max(1, frames)))

    def record_write(self, seconds: float) -> None:
        self.write_seconds = ema(self.write_seconds, seconds)

    @property
    def fps_cap(self) -> float | None:
        """Frames per second that decode + write sustain on this machine (None: not measured)."""
        cost = (self.decode_seconds or 0.0) + (self.write_seconds or 0.0)
        return 1.0 / cost if cost > 0 else None

    @property
    def fps(self) -> float:
        """The rate frames are paced at: the target, or `fps_cap` once measured and lower."""
        cap = self.fps_cap
        return self.target_fps if cap is None else min(self.target_fps, cap)

    @property
    def period(self) -> float:
        return 1.0 / self.fps

    # -- the cadence -------------------------------------------------------------------------
    def restart(self) -> None:
        """A new cadence from now: the next frame is due at once."""
        self.deadline = self.clock()

    def advance(self) -> None:
        """A frame was shown: the next is due one period later, or one period from now when the
        cadence has fallen behind (late frames are not made up in a burst)."""
        self.deadline += self.period
        now = self.clock()
        if self.deadline < now:
            self.deadline = now + self.period

    def left(self, until: float) -> float:
        return until - self.clock()

    def decodes_before(self, until: float) -> int:
        """Frames that can be decoded before `until`, counting each at twice its measured cost
        (a decode that runs long must not make the frame waiting for `until` late); 0 until
        the cost is measured."""
        if self.decode_seconds is None:
            return 0
        return max(0, int(self.left(until) / (2.0 * self.decode_seconds)))

    def batch(self, max_batch: int) -> int:
        """Frames to decode in one call so the batch fits in one frame interval (1 until the
        decode cost is measured), at most `max_batch`."""
        if self.decode_seconds is None:
            return 1
        budget = self.period - (self.write_seconds or 0.0)
        return max(1, min(max_batch, int(budget / self.decode_seconds)))

    # -- auto N ------------------------------------------------------------------------------
    def frames_to_last(self, seconds: float) -> int:
        """N such that a segment of N + 1 frames lasts at least `seconds` at `fps`."""
        return math.ceil(seconds * self.fps - 1e-9) - 1

    def frames_until(self, arrival: float, after: float) -> int:
        """Frames shown from `after` (monotonic) until `arrival`, rounded up."""
        return math.ceil((arrival - after) * self.fps - 1e-9)
