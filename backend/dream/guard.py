"""The collapse and blank guard: when is a keyframe, or a run of them, a problem?

`blank_reason(metrics)`: a keyframe too dark or too flat to show (checked before display).
`Guard.judge(metrics, novelty, target)`: after each observed keyframe, "" or why the next
keyframe should be made afresh from the anchor with a fresh seed:
- "collapse": novelty to the previous keyframe below `collapse_novelty` for `collapse_patience`
  keyframes in a row (the loop converged to a fixed point or repeats itself);
- "drift": chroma or sharpness beyond +-band of the target's, or the magenta-crimson share
  above `magenta_max` (and clearly above the target's own: a magenta prompt may be magenta);
- "blank": the keyframe is (nearly) black or flat.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from backend.dream.metrics import Metrics
from backend.dream.settings import DreamSettings

MAGENTA_MARGIN = 0.2      # the share may exceed magenta_max only up to the target's own share + this


def blank_reason(metrics: Metrics, settings: DreamSettings) -> str:
    if not all(math.isfinite(v) for v in metrics.as_dict().values()):
        return "its pixels are not finite numbers"
    if metrics.l_mean < settings.blank_l_mean:
        return f"it is black (L* mean {metrics.l_mean:.1f} < {settings.blank_l_mean:g})"
    if metrics.l_std < settings.blank_l_std:
        return f"it is flat (L* std {metrics.l_std:.2f} < {settings.blank_l_std:g})"
    return ""


def image_not_finite(image: Image.Image) -> bool:
    """True for a float image (mode F) holding NaN or infinity; 8-bit images are always finite."""
    if image.mode not in ("F", "I"):
        return False
    return not bool(np.isfinite(np.asarray(image, dtype=np.float64)).all())


class Guard:
    def __init__(self, settings: DreamSettings):
        self.settings = settings
        self.still = 0            # observed keyframes in a row below collapse_novelty

    def judge(self, metrics: Metrics, novelty: float | None, target: Metrics | None) -> str:
        """"" or the reason the guard fires for this observed keyframe (the still-count resets on firing)."""
        s = self.settings
        self.still = self.still + 1 if novelty is not None and novelty < s.collapse_novelty else 0
        if self.still >= s.collapse_patience:
            self.still = 0
            return "collapse"
        if blank_reason(metrics, s):
            return "blank"
        if target is None:
            return ""
        if _beyond(metrics.chroma, target.chroma, s.chroma_band) or \
                _beyond(metrics.sharpness, target.sharpness, s.sharpness_band):
            return "drift"
        if metrics.magenta > max(s.magenta_max, target.magenta + MAGENTA_MARGIN):
            return "drift"
        return ""


def relative(value: float, reference: float) -> float:
    """value / reference - 1, or 0 when the reference is ~0 (a grey target has no chroma to scale)."""
    return value / reference - 1.0 if abs(reference) > 1e-6 else 0.0


def _beyond(value: float, reference: float, band: float) -> bool:
    return reference > 1e-6 and abs(relative(value, reference)) > band
