"""sRGB <-> CIELAB (D65, 2 degree observer) in numpy, for the metrics and the palette transfer.

`rgb_to_lab`: uint8 sRGB [..., 3] -> float32 LAB [..., 3] (L* 0..100, a*/b* roughly -128..127),
through a 256-entry table of the sRGB curve (exact on 8-bit input, and fast).
`srgb_to_lab` / `lab_to_srgb`: the same on float sRGB in [0, 1] (used to build colour lookup
tables); `lab_to_rgb`: LAB -> uint8 sRGB. Colours outside the sRGB gamut are clipped.
"""

from __future__ import annotations

import numpy as np

# linear sRGB -> XYZ (IEC 61966-2-1), and its inverse
_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]], dtype=np.float64)
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_WHITE = np.array([0.95047, 1.0, 1.08883])            # D65 reference white, Y = 1
_EPS = (6.0 / 29.0) ** 3                               # where f(t) switches from cube root to a line
_LIN_LEVELS = 16384          # lab_to_rgb quantises linear light to this (< 0.3 of an 8-bit level near black)


def _decode(v: np.ndarray) -> np.ndarray:
    """sRGB-encoded [0, 1] -> linear light [0, 1]."""
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _encode(v: np.ndarray) -> np.ndarray:
    """Linear light [0, 1] -> sRGB-encoded [0, 1]."""
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * np.power(v, 1.0 / 2.4) - 0.055)


_TO_LINEAR = _decode(np.arange(256) / 255.0).astype(np.float32)
_FROM_LINEAR = np.clip(np.rint(_encode(np.arange(_LIN_LEVELS + 1) / _LIN_LEVELS) * 255.0), 0, 255).astype(np.uint8)
# XYZ normalised by the white point, folded into the matrices
_FWD = (_RGB_TO_XYZ / _WHITE[:, None]).T.astype(np.float32)
_INV = (_XYZ_TO_RGB * _WHITE[None, :]).T.astype(np.float32)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 sRGB [..., 3] -> float32 CIELAB [..., 3]."""
    return _linear_to_lab(_TO_LINEAR[np.asarray(rgb, dtype=np.uint8)])


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """float sRGB [..., 3] in [0, 1] -> float32 CIELAB [..., 3]."""
    return _linear_to_lab(_decode(np.clip(np.asarray(rgb, dtype=np.float64), 0.0, 1.0)).astype(np.float32))


def _linear_to_lab(linear: np.ndarray) -> np.ndarray:
    xyz = linear @ _FWD
    f = np.where(xyz > _EPS, np.cbrt(xyz), xyz * (1.0 / (3.0 * (6.0 / 29.0) ** 2)) + 4.0 / 29.0)
    fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
    return np.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1).astype(np.float32)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """float CIELAB [..., 3] -> uint8 sRGB [..., 3] (colours outside the sRGB gamut are clipped)."""
    return _FROM_LINEAR[np.rint(_lab_to_linear(lab) * _LIN_LEVELS).astype(np.int32)]


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """float CIELAB [..., 3] -> float32 sRGB [..., 3] in [0, 1] (float32 is exact to far below an
    8-bit level, and several times faster on a lookup table's 36k colours)."""
    v = _lab_to_linear(lab)
    return np.where(v <= np.float32(0.0031308), v * np.float32(12.92),
                    np.float32(1.055) * np.power(v, np.float32(1.0 / 2.4)) - np.float32(0.055))


def _lab_to_linear(lab: np.ndarray) -> np.ndarray:
    lab = np.asarray(lab, dtype=np.float32)
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
    xyz = np.where(f > 6.0 / 29.0, f * f * f, (f - 4.0 / 29.0) * (3.0 * (6.0 / 29.0) ** 2))
    return np.clip(xyz @ _INV, 0.0, 1.0)
