"""A reader that opens frames the way Rainmeter does, as often as it can, while the real
FrameWriter + StatusWriter write as fast as they can: it must never see a partial picture.

Rainmeter's loader (BitmapLoader.cpp) opens the file for reading, reads and decodes it whole, and
closes it. Here that is open + read + full PNG decode. On Linux a reader cannot block the writer
the way FILE_SHARE_READ does on Windows (there the writer's os.replace retries instead); what this
proves is the writer's side: no reader, at any moment, finds a half-written file under a name it
was given.
"""

from __future__ import annotations

import io
import re
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from backend.frame_writer import FrameWriter
from backend.status import StatusWriter, new_status
from tests.rainmeter.conftest import Installed

SIZE = 64
SECONDS = 1.5


def frame_for(index: int) -> np.ndarray:
    """A frame whose every pixel depends on its index, so a mixed or torn picture cannot pass."""
    return np.random.default_rng(index).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def decode(path: Path) -> np.ndarray:
    with Image.open(io.BytesIO(path.read_bytes())) as image:
        image.load()
        return np.asarray(image.convert("RGB"))


def identify(pixels: np.ndarray, candidates: range) -> int | None:
    return next((i for i in candidates if np.array_equal(pixels, frame_for(i))), None)


def test_a_rainmeter_like_reader_never_sees_a_partial_frame(installed: Installed) -> None:
    output = installed.output
    regexp = installed.load().get("MeasureStatus", "RegExp")
    frames, status = FrameWriter(output, ring_size=3, png_compression=0), StatusWriter(output)
    written: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        index = 0
        while not stop.is_set():
            ring = frames.write(frame_for(index), index)
            status.write(new_status(state="live", frame=index, frame_file=ring))
            written.append(index)
            index += 1

    thread = threading.Thread(target=writer)
    ring_reads = current_reads = stale = 0
    failures: list[str] = []
    frames.write(frame_for(0), 0)
    status.write(new_status(state="live", frame=0, frame_file=frames.ring_path(0)))
    thread.start()
    deadline = time.monotonic() + SECONDS
    try:
        while time.monotonic() < deadline:
            # the skin's path: status.txt -> ring file it names
            text = (output / "status.txt").read_bytes().decode("utf-8")
            match = re.search(regexp, text)
            if match is None:
                failures.append(f"status.txt unparsable: {text!r}")
                continue
            shown = int(match.group(2))
            try:
                pixels = decode(output / match.group(6))
            except Exception as e:  # noqa: BLE001 - any decode failure is the bug we look for
                failures.append(f"ring file {match.group(6)}: {e}")
                continue
            got = identify(pixels, range(shown, shown + 3 * 50, 3))
            if got is None:
                failures.append(f"ring file {match.group(6)} holds no frame >= {shown} of its slot")
            stale += got != shown
            ring_reads += 1
            # a viewer of the single name current_frame.png
            try:
                decode(output / "current_frame.png")
                current_reads += 1
            except Exception as e:  # noqa: BLE001
                failures.append(f"current_frame.png: {e}")
    finally:
        stop.set()
        thread.join()
    fps = len(written) / SECONDS
    print(f"writer {fps:.0f} fps, reader {ring_reads / SECONDS:.0f} ring + {current_reads / SECONDS:.0f} "
          f"current reads/s, ring slot overwritten before read {stale}x")
    assert failures == []
    assert fps > 20 and ring_reads > 100 and current_reads > 100
