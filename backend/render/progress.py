"""The render's progress line: frames done, seconds per frame, time left (tqdm when installed)."""

from __future__ import annotations

import sys
import time


class Progress:
    """``update()`` once per frame written; ``close()`` at the end. Quiet (``enabled=False``) in tests."""

    def __init__(self, total: int, initial: int = 0, *, enabled: bool = True):
        self.total, self.done, self.enabled = total, initial, enabled
        self._start = time.monotonic()
        self._fresh = 0
        self._bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, initial=initial, unit="frame", dynamic_ncols=True,
                                 bar_format="{l_bar}{bar}| {n}/{total} [{elapsed}<{remaining}, {rate_inv_fmt}]")

    @property
    def seconds_per_frame(self) -> float:
        return (time.monotonic() - self._start) / self._fresh if self._fresh else 0.0

    def update(self, rendered: bool = True) -> None:
        self.done += 1
        self._fresh += rendered
        if self._bar is not None:
            self._bar.update(1)
        elif self.enabled:
            left = (self.total - self.done) * self.seconds_per_frame
            print(f"\r{self.done}/{self.total} frames, {self.seconds_per_frame:.1f} s/frame, "
                  f"about {left / 60:.1f} min left", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            print(file=sys.stderr)
