"""Fit any picture to the display resolution: RGB, cover-scaled, centre-cropped.

Pure PIL (no torch), shared by the keyframe sources and the frame schedule, so that every
keyframe reaches the VAE at exactly `(width, height)` whatever size ComfyUI or a folder gave.
`load_fitted` reads a file the cheap way: JPEGs decode at a reduced scale (`draft`), other
formats are box-reduced before any conversion, and pictures whose decoded size is over
`max_pixels` are refused with `ImageTooLarge` before their pixels are read.
`to_rgb` is the one mode conversion every picture Reverie reads goes through: PIL's own
`convert("RGB")` clips 16-bit, 32-bit and float tones at 255 (a 16-bit PNG comes out almost
white) and drops alpha to whatever colour hides under transparent pixels; `to_rgb` scales the
tones to 0..255 and composites alpha over black instead.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image



# Decoded pixels above which a picture is refused: decoding and converting one costs memory and
# time in proportion, on every cycle of a folder; a bigger photo fits the window as well once shrunk.
MAX_PIXELS = 50_000_000


class ImageTooLarge(ValueError):
    """A picture whose decoded size is over the pixel cap; the message says its size and what to do."""


def load_fitted(path: str | Path, size: tuple[int, int], max_pixels: int = MAX_PIXELS) -> Image.Image:
    """An image file -> RGB image of exactly `size`, reading no more pixels than the fit needs.

    Raises OSError / PIL's UnidentifiedImageError / DecompressionBombError for unreadable files and
    ImageTooLarge above `max_pixels` decoded pixels (after a JPEG's reduced-scale decode)."""
    with Image.open(path) as image:
        width, height = size
        scale = max(width / image.width, height / image.height)
        cover = (max(1, math.ceil(image.width * scale)), max(1, math.ceil(image.height * scale)))
        if image.format == "JPEG":
            image.draft("RGB", cover)  # decodes at 1/2, 1/4 or 1/8 scale, never below `cover`
        if image.width * image.height > max_pixels:
            raise ImageTooLarge(f"{image.width}x{image.height} pixels is over the {max_pixels // 1_000_000} megapixel "
                                f"limit; save a smaller copy (the window shows {width}x{height})")
        image.load()
        factor = min(image.width // cover[0], image.height // cover[1])
        if factor >= 2:
            try:
                image = image.reduce(factor)  # box average: cheap, and the size stays >= cover
            except ValueError:  # a mode reduce() does not handle: fit_cover resizes it directly
                pass
        return fit_cover(image, size)


def fit_cover(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Any-size, any-mode image -> RGB image (0..255) of exactly `size` = (width, height).

    Scales so the image covers the target (no letterbox bars) and crops the overflow evenly
    from both sides. Always returns a new, loaded image (safe after the source file is closed).
    """
    width, height = size
    if width <= 0 or height <= 0:
        raise ValueError(f"size must be positive, got {size}")
    image = to_rgb(image)  # loads the pixels and makes a copy; 16-bit/float tones scaled, alpha over black
    if image.size == (width, height):
        return image
    scale = max(width / image.width, height / image.height)
    # Round up so the scaled image is never a pixel short of the target on either axis.
    scaled = (max(width, round(image.width * scale + 0.4999)),
              max(height, round(image.height * scale + 0.4999)))
    image = image.resize(scaled, Image.Resampling.LANCZOS)
    left = (image.width - width) // 2
    top = (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> a new RGB image with 0..255 tones.

    16-bit (I;16*) -> top 8 bits; I (int32) -> clipped to 0..65535, top 8 bits when any value
    exceeds 255 (else taken as 0..255); F (float) -> 0..1, 0..255 or 0..65535 judged by its
    maximum. Alpha (RGBA, LA, PA, P/L/RGB with a transparency key) is composited over black.
    """
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_tones_to_uint8(np.asarray(image), mode), "L").convert("RGB")
    if "A" in mode or "a" in mode or "transparency" in image.info:
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return image.convert("RGB")


def _tones_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """One-channel 16-bit/int32/float values [H, W] -> uint8 [H, W] (see to_rgb for the ranges)."""
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=65535.0, neginf=0.0)
    top = float(values.max()) if values.size else 0.0
    if mode == "F":
        scale = 255.0 if top <= 1.0 else 1.0 if top <= 255.0 else 255.0 / 65535.0
        return np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    values = np.clip(values, 0, 65535).astype(np.uint16)
    if mode.startswith("I;16") or top > 255:
        values = values >> 8
    return values.astype(np.uint8)
