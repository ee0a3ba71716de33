"""Quality metrics of one keyframe, measured on a small downscale (~256x128 pixels' worth).

`measure(image) -> Metrics` and `pool_latent(latent) -> unit vector` + `novelty(a, b)`;
`analyse(image) -> Analysis` keeps the downscale and its LAB with the metrics, so grounding the
same picture later (it is the next img2img input) does not downscale or convert it again.
What each metric catches in a long img2img loop:
- L* mean / std (CIELAB lightness, 0..100): a loop going dark, or a flat / black keyframe;
- chroma C* mean and HSV saturation mean: oversaturation;
- hue mean (chroma-weighted circular mean, degrees) and `magenta`, the share of all pixels
  whose hue lies in the magenta-crimson band (MAGENTA_BAND) with chroma above CHROMA_FLOOR:
  the attractor a chained SD loop walks into;
- hue entropy (0..1, 36 hue bins over chromatic pixels): a palette narrowing to one colour;
- sharpness (variance of the Laplacian of 8-bit luma) and `hf_ratio` (share of spectral energy
  above a quarter of the sampling rate): over-sharpened, "burnt" keyframes, or eroded detail;
- novelty: cosine distance of average-pooled latents (POOL grid), 0 = same picture. A colour
  histogram or a perceptual hash cannot rank differences within one motif; pooled latents do.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from backend.dream.lab import rgb_to_lab

METRIC_PIXELS = 256 * 128          # images larger than this are downscaled to about this many pixels
MAGENTA_BAND = (290.0, 20.0)       # hue degrees, wrapping through 0: magenta (~330) to crimson
CHROMA_FLOOR = 15.0                # C* below this is grey enough to have no meaningful hue
HUE_BINS = 36
HIGH_FREQUENCY = 0.25              # cycles per pixel (Nyquist = 0.5)
POOL = (4, 8)                      # latent pooling grid (rows, columns) for novelty


@dataclass(frozen=True)
class Metrics:
    l_mean: float
    l_std: float
    chroma: float         # mean C*
    hue: float            # degrees 0..360, chroma-weighted circular mean
    magenta: float        # 0..1
    hue_entropy: float    # 0..1
    saturation: float     # HSV saturation mean, 0..1
    sharpness: float      # variance of the Laplacian of 8-bit luma
    hf_ratio: float       # 0..1

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class Analysis:
    """One picture's metrics downscale (uint8 RGB [h, w, 3]), its CIELAB, and its Metrics."""

    rgb: np.ndarray
    lab: np.ndarray
    metrics: Metrics


def analyse(image: Image.Image) -> Analysis:
    rgb = downscale(image)
    lab = rgb_to_lab(rgb)
    return Analysis(rgb, lab, _metrics(rgb, lab))


def downscale(image: Image.Image, pixels: int = METRIC_PIXELS) -> np.ndarray:
    """PIL image -> uint8 RGB [h, w, 3] with at most ~`pixels` pixels (aspect kept)."""
    image = image.convert("RGB")
    w, h = image.size
    if w * h > pixels:
        k = (pixels / (w * h)) ** 0.5
        image = image.resize((max(8, round(w * k)), max(8, round(h * k))), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def measure(image: Image.Image) -> Metrics:
    """All metrics of `image` (any size; downscaled first)."""
    return analyse(image).metrics


def measure_array(rgb: np.ndarray) -> Metrics:
    """uint8 RGB [h, w, 3] -> Metrics (no downscaling)."""
    return _metrics(rgb, rgb_to_lab(rgb))


def _metrics(rgb: np.ndarray, lab: np.ndarray) -> Metrics:
    light, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    chroma = np.hypot(a, b)
    hue = np.degrees(np.arctan2(b, a)) % 360.0
    chromatic = chroma > CHROMA_FLOOR
    low, high = MAGENTA_BAND
    in_band = (hue >= low) | (hue < high)
    weight = chroma.sum()
    mean_hue = 0.0
    if weight > 1e-6:
        mean_hue = float(np.degrees(np.arctan2((b).sum(), (a).sum())) % 360.0)  # sum C*(cos, sin) = sum (a, b)
    y = luma(rgb)
    return Metrics(
        l_mean=float(light.mean()), l_std=float(light.std()), chroma=float(chroma.mean()), hue=mean_hue,
        magenta=float((in_band & chromatic).mean()), hue_entropy=_hue_entropy(hue[chromatic]),
        saturation=_saturation(rgb), sharpness=_laplacian_variance(y), hf_ratio=_hf_ratio(y))


def _hue_entropy(hues: np.ndarray) -> float:
    if hues.size == 0:
        return 0.0
    counts = np.bincount((hues * (HUE_BINS / 360.0)).astype(np.int64) % HUE_BINS, minlength=HUE_BINS)
    p = counts[counts > 0] / hues.size
    return float(max(0.0, -(p * np.log(p)).sum() / np.log(HUE_BINS)))


def _saturation(rgb: np.ndarray) -> float:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]      # channel by channel: a reduction over the
    top = np.maximum(np.maximum(r, g), b)                # last axis of 3 is several times slower
    span = (top - np.minimum(np.minimum(r, g), b)).astype(np.float32)
    return float((span / np.maximum(top, 1).astype(np.float32)).mean())   # top == 0 means span == 0


def luma(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB -> float32 Rec.601 luma 0..255 [h, w]."""
    return rgb[..., 0] * np.float32(0.299) + rgb[..., 1] * np.float32(0.587) + rgb[..., 2] * np.float32(0.114)


def laplacian_variance(rgb: np.ndarray) -> float:
    return _laplacian_variance(luma(rgb))


def _laplacian_variance(y: np.ndarray) -> float:
    if min(y.shape) < 3:
        return 0.0
    lap = y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:] - 4.0 * y[1:-1, 1:-1]
    return float(lap.var())


def _hf_ratio(y: np.ndarray) -> float:
    spectrum = np.fft.rfft2(y - y.mean())
    power = spectrum.real ** 2 + spectrum.imag ** 2
    total = power.sum()
    if total <= 1e-9:
        return 0.0
    return float(power[_high_band(*y.shape)].sum() / total)


@lru_cache(maxsize=8)
def _high_band(height: int, width: int) -> np.ndarray:
    """Mask of the rfft2 bins above HIGH_FREQUENCY for a [height, width] picture (a few sizes recur)."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    return np.hypot(fy, fx) > HIGH_FREQUENCY


def pool_latent(latent: np.ndarray, grid: tuple[int, int] = POOL) -> np.ndarray:
    """latent [C, h, w] -> L2-normalised float64 vector of its average pool to C x grid."""
    latent = np.asarray(latent, dtype=np.float64)
    if latent.ndim == 4:            # [1, C, h, w] from a batch of one
        latent = latent[0]
    rows = np.array_split(np.arange(latent.shape[1]), min(grid[0], latent.shape[1]))
    cols = np.array_split(np.arange(latent.shape[2]), min(grid[1], latent.shape[2]))
    pooled = np.stack([np.stack([latent[:, r[0]:r[-1] + 1, c[0]:c[-1] + 1].mean(axis=(1, 2)) for c in cols], -1)
                       for r in rows], -2)  # [C, rows, cols]
    vector = np.nan_to_num(pooled.ravel())
    norm = np.linalg.norm(vector)
    return vector / norm if norm > 0 else vector


def novelty(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    """Cosine distance 0..2 of two pooled latents (None when either is missing)."""
    if a is None or b is None or a.shape != b.shape:
        return None
    return float(max(0.0, 1.0 - float(np.dot(a, b))))
