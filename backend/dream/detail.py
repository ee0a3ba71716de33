"""Detail grounding: pull an img2img input's sharpness toward a target's.

Chained img2img over-sharpens ("burnt" keyframes) as surely as it drifts in colour, and the
palette transfer cannot see it. The input is split into a blurred base and its detail layer
(input - base); the detail layer is scaled by `gain` so that the variance of the Laplacian
(which grows roughly with gain squared) moves toward the target's, then mixed with `strength`.
Like the palette, it is applied to the img2img input only.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from backend.dream.metrics import METRIC_PIXELS, downscale, laplacian_variance

GAIN_CLAMP = (0.5, 1.5)
DEAD_BAND = 0.05        # gains this close to 1 are left alone: not worth a resample of the input


def detail_gain(sharpness: float, target: float, strength: float) -> float:
    """The detail-layer gain that moves `sharpness` toward `target` with `strength` 0..1."""
    if sharpness <= 1e-6 or target <= 1e-6 or strength <= 0:
        return 1.0
    full = float(np.clip((target / sharpness) ** 0.5, *GAIN_CLAMP))
    return 1.0 + strength * (full - 1.0)


def ground_detail(image: Image.Image, target_sharpness: float, strength: float = 0.5,
                  sharpness: float | None = None) -> Image.Image:
    """`image` with its detail layer scaled toward `target_sharpness` (a metrics.sharpness value).
    `sharpness`: `image`'s own metrics.sharpness when the caller has it already."""
    image = image.convert("RGB")
    if sharpness is None:
        sharpness = laplacian_variance(downscale(image))
    gain = detail_gain(sharpness, target_sharpness, strength)
    if abs(gain - 1.0) < DEAD_BAND:
        return image
    # The base is a box downscale blown back up (a few times faster than a Gaussian blur), its
    # factor following the image size so the detail layer is the one the metric sees on its
    # downscale (a 512x512 input is measured at about 181x181).
    scale = max(1.0, (image.size[0] * image.size[1] / METRIC_PIXELS) ** 0.5)
    base = image.reduce(max(2, round(1.5 * scale))).resize(image.size, Image.BILINEAR)
    # base + gain * (image - base), clipped: Image.blend extrapolates for gain > 1, in C
    return Image.blend(base, image, gain)
