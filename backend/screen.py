"""The screen: each frame written for the skin, and what is on it now.

A frame counts as shown only once it is written (a failed write leaves the previous picture up
and is not counted). With it go K_s into the keyframe history (FrameWriter.write_keyframe) and
the frame-written listeners (a recorder queues frames to its own thread; listeners must not
block). The achieved fps is measured over the last 30 frames written.
No torch here.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable

import numpy as np

from backend.frame_writer import AtomicWriteError, FrameWriter
from backend.frames import Frame

log = logging.getLogger(__name__)

FrameListener = Callable[[np.ndarray, int], None]


def worth_logging(count: int) -> bool:
    """The 1st, 100th, 200th... of a repeating problem: not one log line per frame for days."""
    return count == 1 or count % 100 == 0


class Screen:
    """Writes frames through `writer`; `written` counts the frames that reached the disk."""

    def __init__(self, writer: FrameWriter, clock: Callable[[], float]) -> None:
        self.writer, self._clock = writer, clock
        self.written = 0
        self.fields: dict[str, int | str] = {}  # status fields of the frame on screen
        self.prompt: str | None = None          # prompt of the keyframe that opened the segment on screen
        self.listeners: list[FrameListener] = []
        self._times: collections.deque[float] = collections.deque(maxlen=30)
        self._unwritten = 0                     # frames in a row that could not be written

    @property
    def fps(self) -> float:
        times = self._times
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def show(self, frame: Frame) -> str:
        """Write `frame`: "" when written, else the problem (the previous frame stays up)."""
        try:
            ring = self.writer.write(frame.pixels, frame.index)
        except AtomicWriteError as exc:
            self._unwritten += 1
            if worth_logging(self._unwritten):
                log.warning("frame %d not written (%d in a row): %s", frame.index, self._unwritten, exc)
            return f"frame not written: {exc}"
        if self._unwritten:
            log.info("frames are written again after %d that could not be", self._unwritten)
        self._unwritten = 0
        self.written += 1
        keyframe = frame.keyframe
        if keyframe is not None:
            try:
                self.writer.write_keyframe(keyframe.image, frame.segment)
            except OSError as exc:  # disk full, a viewer holding the old file: the show goes on
                log.warning("keyframe %d not kept in history: %s", frame.segment, exc)
            self.prompt = keyframe.prompt or self.prompt
        self._times.append(self._clock())
        self.fields = dict(frame=frame.index, frame_kind=frame.kind, segment=frame.segment,
                           position=frame.position, segment_frames=frame.segment_frames,
                           frame_file=ring.relative_to(self.writer.output_dir).as_posix())
        for listener in self.listeners:
            try:
                listener(frame.pixels, frame.index)
            except Exception:  # noqa: BLE001 - a listener's bug must not stop the show
                log.exception("a frame listener failed on frame %d", frame.index)
        return ""
