"""Record what the live display shows to MP4 segments, on a thread of its own, under a disk cap.

The display thread calls ``submit(pixels)``, which copies the frame into a bounded queue and
returns at once (a full queue drops the frame and counts it: the display never waits for the
encoder). The recorder thread encodes each segment as ``<name>.mp4.part`` and renames it to
``<name>.mp4`` once complete, so a killed process leaves every finished segment playable and
loses at most the one being written (its ``.part`` is removed at the next start). After each
finished segment the oldest ones are deleted while the folder holds more than ``max_bytes``.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.render.video import VideoWriter

log = logging.getLogger(__name__)
PART = ".part"


@dataclass(frozen=True)
class Segment:
    path: Path
    frames: int


class Recorder:
    """``Recorder(folder, segment_seconds, fps, max_bytes)``; ``submit`` per frame; ``close`` at the end."""

    def __init__(self, folder: Path, segment_seconds: float, fps: float, max_bytes: int, *,
                 prefix: str = "reverie", queue_frames: int = 64, crf: int = 23):
        if segment_seconds <= 0 or fps <= 0 or max_bytes <= 0:
            raise ValueError("segment_seconds, fps and max_bytes must be positive")
        self.folder, self.fps, self.max_bytes, self.prefix, self.crf = Path(folder), fps, max_bytes, prefix, crf
        self.segment_frames = max(1, round(segment_seconds * fps))
        self.submitted = self.dropped = 0
        self.segments: list[Segment] = []      # finished segments, oldest first (deleted ones included)
        self.error: str = ""                   # set when recording had to stop (disk full, ...)
        self._queue: queue.Queue = queue.Queue(maxsize=queue_frames)
        self._count = 0
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob(f"{prefix}_*.mp4{PART}"):   # the segment a killed process was writing
            stale.unlink(missing_ok=True)
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    def submit(self, pixels: np.ndarray) -> bool:
        """Queue a uint8 ``[H, W, 3]`` frame (copied); False when it was dropped. Never blocks."""
        self.submitted += 1
        if self.error:
            self.dropped += 1
            return False
        try:
            self._queue.put_nowait(np.array(pixels, dtype=np.uint8, copy=True))
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def close(self, timeout: float = 30.0) -> None:
        """Finish the current segment (it is kept, however short) and stop the thread."""
        while self._thread.is_alive():
            try:
                self._queue.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        self._thread.join(timeout)

    # -- the recorder thread --------------------------------------------------------------------
    def _run(self) -> None:
        writer: VideoWriter | None = None
        size = None
        try:
            while True:
                pixels = self._queue.get()
                if pixels is None:
                    break
                if writer is not None and (writer.frames >= self.segment_frames or pixels.shape != size):
                    self._finish(writer)
                    writer = None
                if writer is None:
                    writer, size = self._open(), pixels.shape
                writer.write(pixels)
        except Exception as exc:     # noqa: BLE001 - a recording problem must never reach the display
            self.error = f"recording stopped: {exc}"
            log.warning("%s", self.error)
        finally:
            if writer is not None:
                self._finish(writer)

    def _open(self) -> VideoWriter:
        self._count += 1
        name = f"{self.prefix}_{time.strftime('%Y%m%d_%H%M%S')}_{self._count:05d}.mp4"
        # a fast preset: the encoder must keep up with the display on a CPU that also decodes frames
        return VideoWriter(self.folder / (name + PART), self.fps, crf=self.crf, preset="veryfast")

    def _finish(self, writer: VideoWriter) -> None:
        try:
            writer.close()
            final = writer.path.with_name(writer.path.name[: -len(PART)])
            os.replace(writer.path, final)
        except Exception as exc:     # noqa: BLE001 - as above
            self.error = f"recording stopped: {exc}"
            log.warning("%s", self.error)
            return
        self.segments.append(Segment(final, writer.frames))
        self._enforce_cap(final)

    def _enforce_cap(self, newest: Path) -> None:
        """Delete the oldest finished segments while the folder holds more than max_bytes (never the newest)."""
        finished = sorted(self.folder.glob(f"{self.prefix}_*.mp4"))
        sizes = {p: p.stat().st_size for p in finished}
        total = sum(sizes.values())
        for path in finished:
            if total <= self.max_bytes or path == newest:
                break
            try:
                path.unlink()
                total -= sizes[path]
            except OSError:          # a player has it open (Windows): try again after the next segment
                continue
