"""The fake server's drifting sampler: what chained img2img does to a picture, deterministically.

`drift_sample(image, seed, denoise, rates)` is one img2img pass. Each effect is scaled by the
pass's denoise (a 0.5 pass does half of what the rate says), and they compound because the
loop feeds each output back in:
- warp: the picture flows along a seed-chosen smooth displacement field of up to `warp` of its
  width (the way img2img moves and re-draws shapes without destroying the composition);
- motion: the luma moves `motion` of the way toward a seed-chosen cloud pattern (three octaves
  of smooth noise around the picture's mean): new seeds slowly erode the structure into the
  model's own shapes; a fixed seed pulls every pass toward the same pattern.
- magenta_pull: blend toward a solid magenta (the attractor the
  upstream project measured: 0.87 magenta-crimson share after 27,505 chained keyframes, 0.02
  for fresh frames). 0.06 at denoise 0.5 is 3 % a pass, a ~33-keyframe time constant, which
  matches its report that an intervention was "forgotten within ~30 frames".
- chroma_gain / contrast_gain: chroma and contrast grow by (1 + rate * denoise) a pass, the
  oversaturated, high-contrast look of long loops; clipping at 0 and 255 bounds them.
- sharpen: an unsharp mask of `sharpen * denoise` a pass (radius 1): the "burnt" look.
- settle: the nearer the picture is to the attractor (its magenta share), the less a pass
  moves it (motion scaled by 1 - settle * share), so an uncontrolled loop converges: the change
  between keyframes shrinks toward a fixed point.
Modes (FakeComfyUI.sampler): "exact" (nodes.fake_sample, the default), "drift" (this),
"collapse" (a near-copy of the input: +-1 level of noise), "black" (an almost black image).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

MODES = ("exact", "drift", "collapse", "black")
MAGENTA = np.array([1.0, 0.2, 0.75])      # the tint's colour (sRGB, 0..1), hue ~330 in CIELAB
_LUMA = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class DriftRates:
    warp: float = 0.03           # largest displacement, as a share of the width, per unit denoise
    motion: float = 0.12         # share of the luma moved toward the seed's pattern, per unit denoise
    magenta_pull: float = 0.06   # blend toward the magenta tint, per unit denoise
    chroma_gain: float = 0.04    # chroma x (1 + this * denoise) a pass
    contrast_gain: float = 0.03  # contrast x (1 + this * denoise) a pass
    sharpen: float = 0.2         # unsharp-mask amount, per unit denoise
    settle: float = 0.9          # warp and motion x (1 - settle * magenta share): convergence near the attractor


def drift_sample(image: np.ndarray, seed: int, denoise: float, rates: DriftRates = DriftRates()) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [H, W, 3]; deterministic in (image, seed, denoise, rates)."""
    x = np.asarray(image, dtype=np.float64) / 255.0
    h, w = x.shape[:2]
    lum = x @ _LUMA
    share = magenta_share(x)
    calm = 1.0 - rates.settle * share
    x = _warp(x, seed, rates.warp * denoise * calm * w)
    lum = x @ _LUMA
    k = rates.motion * denoise * calm
    x = x + (k * (_pattern(seed + 1, h, w, lum.mean()) - lum))[..., None]
    x = x + rates.magenta_pull * denoise * (MAGENTA - x)
    lum = (x @ _LUMA)[..., None]
    x = lum + (x - lum) * (1.0 + rates.chroma_gain * denoise)
    x = x.mean() + (x - x.mean()) * (1.0 + rates.contrast_gain * denoise)
    x = np.clip(x, 0.0, 1.0)
    blurred = np.asarray(Image.fromarray(np.rint(x * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1)),
                         dtype=np.float64) / 255.0
    x = x + rates.sharpen * denoise * (x - blurred)
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def collapse_sample(image: np.ndarray, seed: int) -> np.ndarray:
    """A near-copy of the input (what a converged loop returns): one channel one level off."""
    out = np.asarray(image, dtype=np.int16).copy()
    out[..., seed % 3] += 1 if seed % 2 else -1
    return np.clip(out, 0, 255).astype(np.uint8)


def black_sample(image: np.ndarray, seed: int) -> np.ndarray:
    """An almost black image of the input's size (a NaN decode or a blank sample)."""
    rng = np.random.default_rng(seed % 2**63)
    return rng.integers(0, 3, size=np.shape(image)).astype(np.uint8)


def magenta_share(x: np.ndarray) -> float:
    """Share of pixels (float RGB 0..1) that are clearly magenta-crimson: red and blue over green."""
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    return float(((r - g > 0.2) & (b - g > 0.1)).mean())


def _warp(x: np.ndarray, seed: int, pixels: float) -> np.ndarray:
    """x [h, w, 3] moved along a smooth field of up to `pixels`, to whole pixels (edges clamped):
    resampling between pixels would blur the picture a little every pass, which img2img does not."""
    if pixels < 0.5:
        return x
    h, w = x.shape[:2]
    dy = np.rint(_pattern(seed, h, w, 0.0) * (pixels / 0.32)).astype(int)   # the pattern spans about +-0.32
    dx = np.rint(_pattern(seed + 7, h, w, 0.0) * (pixels / 0.32)).astype(int)
    yy, xx = np.mgrid[0:h, 0:w]
    return x[np.clip(yy + dy, 0, h - 1), np.clip(xx + dx, 0, w - 1)]


def _pattern(seed: int, h: int, w: int, mean: float) -> np.ndarray:
    """A seed's cloud pattern: three octaves of smooth noise around `mean`, float [h, w]."""
    rng = np.random.default_rng(seed % 2**63)
    out = np.full((h, w), mean)
    for octave, amplitude in ((1, 0.18), (2, 0.09), (4, 0.05)):
        grid = rng.uniform(-1.0, 1.0, size=(2 * octave, 4 * octave)).astype(np.float32)
        out += amplitude * np.asarray(Image.fromarray(grid, "F").resize((w, h), Image.BICUBIC), dtype=np.float64)
    return out
