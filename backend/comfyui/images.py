"""Image bytes <-> PIL for the ComfyUI client, with caps so a bad server cannot exhaust memory,
and `to_rgb`, the one mode conversion every picture Reverie reads goes through.

The pixel cap is checked on the header (Image.open reads only that) before anything is decoded:
a 50000x50000 PNG is a few hundred bytes on the wire and 7.5 GB once decoded.
PIL's own `convert("RGB")` clips 16-bit, 32-bit and float tones at 255 (a 16-bit PNG comes out
almost white) and drops alpha to whatever colour hides under transparent pixels; `to_rgb` scales
the tones to 0..255 and composites alpha over black instead.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

from backend.comfyui.errors import ExecutionFailed

MAX_IMAGE_BYTES = 64 * 1024 * 1024      # one PNG keyframe; 4096x4096 RGB uncompressed is 48 MiB
MAX_IMAGE_PIXELS = 8192 * 8192


def decode_image(data: bytes, *, max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """PNG/JPEG bytes -> RGB PIL image; ExecutionFailed when too big or undecodable."""
    if len(data) > max_bytes:
        raise ExecutionFailed(f"output image is {len(data)} bytes, more than the {max_bytes}-byte cap")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise ExecutionFailed(f"output image is {width}x{height}, more than the {max_pixels}-pixel cap")
                im.load()
                return to_rgb(im)
    except ExecutionFailed:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ExecutionFailed(f"output image could not be decoded: {exc}") from exc


def encode_png(image: Image.Image) -> bytes:
    """RGB PNG bytes for upload (fast compression: the file lives a few seconds)."""
    buf = io.BytesIO()
    to_rgb(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


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
