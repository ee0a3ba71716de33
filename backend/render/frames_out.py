"""Where rendered frames go: an MP4 and/or a folder of numbered PNGs, always in frame order.

The PNG folder doubles as the resume record: a frame whose PNG exists (and opens, at the right
size) is not rendered again, and its PNG is read back to fill the MP4, which is rewritten whole
each run, one frame in memory at a time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from backend.render.video import VideoWriter


MANIFEST = "render.json"


def png_name(index: int) -> str:
    return f"frame_{index:06d}.png"


def claim_png_dir(png_dir: Path, settings: dict, *, resume: bool) -> None:
    """Make `png_dir` hold this render's frames, recording `settings` (JSON-able) beside them.

    With resume, PNGs recorded under other settings are refused (ValueError, one sentence): they
    would be spliced into a different walk. Without it, the frames of an earlier render go first,
    so a shorter render cannot leave stale frames behind its last one.
    """
    manifest = png_dir / MANIFEST
    try:
        recorded = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        recorded = None
    if resume and isinstance(recorded, dict) and recorded != settings:
        changed = sorted(k for k in set(recorded) | set(settings) if recorded.get(k) != settings.get(k))
        raise ValueError(f"the PNGs in {png_dir} are from a render with other {', '.join(changed)}: "
                         f"drop --resume to render again, or choose another --output")
    png_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        for old in png_dir.glob("frame_[0-9][0-9][0-9][0-9][0-9][0-9].png"):
            old.unlink()
    temp = manifest.with_name(MANIFEST + ".tmp")
    temp.write_text(json.dumps(settings, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(temp, manifest)


class FrameSink:
    """``put(index, image)`` in increasing index order; ``close()`` leaves every file complete."""

    def __init__(self, *, video: Path | None, png_dir: Path | None, fps: float, size: tuple[int, int],
                 crf: int = 18, codec: str = "libx264"):
        self.png_dir, self.size = png_dir, size
        if png_dir is not None:
            png_dir.mkdir(parents=True, exist_ok=True)
        # a first frame at the wrong size would fix the video's size: frames are resized to `size`
        self.video = VideoWriter(video, fps, crf=crf, codec=codec) if video is not None else None
        self.written = 0

    def existing(self, count: int) -> set[int]:
        """Indices below `count` whose PNG is already there, complete and of the render's size."""
        done = set()
        if self.png_dir is None:
            return done
        for index in range(count):
            path = self.png_dir / png_name(index)
            try:
                with Image.open(path) as image:
                    image.verify()
                with Image.open(path) as image:
                    if image.size == self.size:
                        done.add(index)
            except (OSError, SyntaxError):
                continue
        return done

    def load(self, index: int) -> Image.Image:
        with Image.open(self.png_dir / png_name(index)) as image:
            return image.convert("RGB")

    def put(self, index: int, image: Image.Image, *, from_disk: bool = False) -> None:
        image = image.convert("RGB")
        if image.size != self.size:
            image = image.resize(self.size, Image.Resampling.LANCZOS)
        if self.png_dir is not None and not from_disk:
            final = self.png_dir / png_name(index)
            temp = final.with_name(final.name + ".tmp")
            image.save(temp, format="PNG")
            os.replace(temp, final)     # a killed render never leaves a half PNG that --resume would trust
        if self.video is not None:
            self.video.write(np.asarray(image, dtype=np.uint8))
        self.written += 1

    def close(self) -> None:
        if self.video is not None:
            self.video.close()
