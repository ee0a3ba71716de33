"""The torch-free types that travel from a keyframe source to the screen.

A source returns a `Keyframe`; the schedule turns keyframes into `Frame`s; the daemon writes
frames. Nothing here imports torch, so sources, status and tests stay light.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np
from PIL import Image


class KeyframeSourceError(RuntimeError):
    """A problem the user must fix (empty folder, workflow the server rejects); one sentence."""


@dataclass(frozen=True)
class Keyframe:
    image: Image.Image        # RGB, as the source made it (the schedule fits it to the resolution)
    seconds: float = 0.0      # generation time in seconds; 0 for loaded images
    prompt: str = ""          # positive prompt its image was made with ("" for loaded images): what is on screen
    seed: int | None = None   # sampler seed, None for loaded images
    generated: bool = True    # False for loaded images: they do not count as keyframe latency
    origin: str = ""          # "txt2img" | "img2img" | "start_image" | "skipped" | a file name
    negative: str = ""        # negative prompt it was made with ("" when none or not generated)
    denoise: float | None = None   # img2img denoise it was made with (None: txt2img or loaded)
    prompt_id: str | None = None   # ComfyUI's id of the job (its history entry already deleted)


@dataclass(frozen=True)
class Frame:
    pixels: np.ndarray       # [H, W, 3] uint8
    index: int               # 0.. over the whole run
    segment: int             # s
    position: int            # j in 0..segment_frames-1
    kind: str                # "keyframe" (j == 0) | "inbetween"
    segment_frames: int      # N_s + 1
    keyframe: Keyframe | None = None  # K_s on j == 0 frames (its image fitted to the resolution), else None
