"""Palette grounding: move an img2img input's CIELAB statistics toward a target's.

Two modes, both mixed back per channel with a strength (L* `luma`, a*/b* `chroma`):
- "reinhard": per channel `(x - mean_src) * clip(std_ref / std_src, 0.6, 1.6) + mean_ref`
  (the clamp keeps a nearly flat input from being blown up into noise, or a busy one crushed);
- "histogram": per channel quantile matching (the input's value at quantile q goes to the
  target's value at q); it matches the whole distribution, not just two moments.
Both are a function of a pixel's colour alone, so the transfer is computed once on a 33^3 grid
of colours and applied as a 3D lookup table (Pillow's Color3DLUT, trilinear, in C): the image
itself never goes through LAB, and the input's statistics come from its metrics downscale.
Apply it to the img2img INPUT only, once: correcting the displayed output as well would correct
twice per loop, which posterises the picture and flattens its palette.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from backend.dream.lab import lab_to_srgb, rgb_to_lab, srgb_to_lab
from backend.dream.metrics import downscale
from backend.dream.settings import MODES

STD_RATIO_CLAMP = (0.6, 1.6)
QUANTILES = np.linspace(0.0, 1.0, 129)
LUT_SIZE = 33
# the grid's colours, red changing fastest (Color3DLUT's table order)
_B, _G, _R = np.meshgrid(*[np.linspace(0.0, 1.0, LUT_SIZE)] * 3, indexing="ij")
_GRID_LAB = srgb_to_lab(np.stack([_R, _G, _B], axis=-1).reshape(-1, 3))


@dataclass(frozen=True)
class PaletteTarget:
    """A target's CIELAB statistics: mean [3], std [3], quantiles [3, len(QUANTILES)]."""

    mean: np.ndarray
    std: np.ndarray
    quantiles: np.ndarray

    @classmethod
    def of(cls, image: Image.Image) -> "PaletteTarget":
        """Statistics of `image`, taken on the metrics downscale (stats of a downscale are the image's)."""
        return cls.of_lab(rgb_to_lab(downscale(image)))

    @classmethod
    def of_lab(cls, lab: np.ndarray, quantiles: bool = True) -> "PaletteTarget":
        """From LAB pixels [..., 3]; `quantiles` False leaves them empty (Reinhard needs none)."""
        channels = np.ascontiguousarray(lab.reshape(-1, 3).T)      # [3, n]: reductions along rows are fast
        # quantiles from every 4th pixel: 8k samples pin 129 quantiles as well, at a quarter of the sort
        q = _quantiles(channels[:, ::4]) if quantiles else np.empty((3, 0), np.float32)
        return cls(channels.mean(axis=1), channels.std(axis=1), q)


def _quantiles(channels: np.ndarray) -> np.ndarray:
    """[3, n] -> [3, len(QUANTILES)], linear between order statistics (np.quantile's default
    method) from one sort, without np.quantile's per-call overhead."""
    ordered = np.sort(channels, axis=1)
    position = QUANTILES * (ordered.shape[1] - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, ordered.shape[1] - 1)
    frac = (position - low).astype(np.float32)
    return ordered[:, low] + (ordered[:, high] - ordered[:, low]) * frac


def ground(image: Image.Image, target: PaletteTarget, *, mode: str = "reinhard", chroma: float = 0.6,
           luma: float = 0.2, chroma_scale: float = 1.0, ab_offset=(0.0, 0.0),
           lab: np.ndarray | None = None) -> Image.Image:
    """`image` with its CIELAB statistics moved toward `target`; strengths 0 (unchanged) .. 1 (full).
    `chroma_scale` then multiplies a*/b* and `ab_offset` is added to them (the caller's trim for
    what a pass adds on its own). `lab`: the LAB of `image`'s metrics downscale when the caller
    has it already (metrics.Analysis.lab); its statistics are the image's."""
    if mode not in MODES:
        raise ValueError(f"unknown grounding mode {mode!r}; choose one of {', '.join(MODES)}")
    image = image.convert("RGB")
    if mode == "off" or (chroma <= 0 and luma <= 0 and chroma_scale == 1.0 and not any(ab_offset)):
        return image
    if lab is None:
        lab = rgb_to_lab(downscale(image))
    own = PaletteTarget.of_lab(lab, quantiles=mode == "histogram")
    lab = _GRID_LAB
    moved = _reinhard(lab, own, target) if mode == "reinhard" else _histogram(lab, own, target)
    strength = np.array([luma, chroma, chroma], dtype=np.float32)
    mixed = lab + (moved - lab) * strength
    mixed[:, 1:] = mixed[:, 1:] * np.float32(chroma_scale) + np.asarray(ab_offset, np.float32)
    table = lab_to_srgb(mixed)
    return image.filter(ImageFilter.Color3DLUT(LUT_SIZE, table.astype(np.float32)))


def _reinhard(lab: np.ndarray, own: PaletteTarget, target: PaletteTarget) -> np.ndarray:
    ratio = np.clip(target.std / np.maximum(own.std, 1e-6), *STD_RATIO_CLAMP)
    return ((lab - own.mean) * ratio + target.mean).astype(np.float32)


def _histogram(lab: np.ndarray, own: PaletteTarget, target: PaletteTarget) -> np.ndarray:
    out = np.empty_like(lab)
    for c in range(3):
        # a flat stretch (many equal values) must still map monotonically: nudge ties apart
        xp = own.quantiles[c] + np.arange(QUANTILES.size) * 1e-6
        out[:, c] = np.interp(lab[:, c], xp, target.quantiles[c])
    return out
