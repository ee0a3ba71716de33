"""The fake server's node implementations: deterministic image ops on uint8 arrays [H, W, 3].

Its "sampler" is not diffusion: `fake_sample(image, seed, denoise)` rolls the image by a
seed-chosen offset, shifts its colours by a seed-chosen amount and blends that with the input by
`denoise` (0 -> the input, 1 -> fully transformed), so a test can recompute the exact expected
keyframe and prove which input, seed and denoise made it. `fake_txt2img(seed, w, h)` paints a
seed-determined gradient of the requested size.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def to_array(image) -> np.ndarray:
    """PIL image or array -> uint8 [H, W, 3]."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    return np.asarray(image, dtype=np.uint8)


def fake_sample(image, seed: int, denoise: float) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [H, W, 3]; exact and deterministic in (image, seed, denoise)."""
    src = to_array(image)
    h, w = src.shape[:2]
    rng = np.random.default_rng(seed % (2 ** 63))
    dy, dx = int(rng.integers(0, max(h, 1))), int(rng.integers(0, max(w, 1)))
    offset = rng.integers(0, 256, size=3).astype(np.int32)
    moved = (np.roll(src, (dy, dx), axis=(0, 1)).astype(np.int32) + offset) % 256
    out = (1.0 - denoise) * src.astype(np.float64) + denoise * moved.astype(np.float64)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def fake_txt2img(seed: int, width: int, height: int) -> np.ndarray:
    """A seed-determined two-colour gradient, uint8 [height, width, 3]."""
    rng = np.random.default_rng(seed % (2 ** 63))
    a, b = rng.integers(0, 256, size=(2, 3)).astype(np.float64)
    ramp = np.linspace(0.0, 1.0, width)[None, :, None] * np.ones((height, 1, 1))
    stripes = ((np.arange(height) // 8) % 2)[:, None, None] * 16.0
    out = a * (1 - ramp) + b * ramp + stripes
    return np.clip(out, 0, 255).astype(np.uint8)


def encode_png(arr: np.ndarray, fault: str | None = None) -> bytes:
    """PNG bytes of `arr`; fault "corrupt" gives undecodable bytes, "huge" a 50000x50000 header."""
    if fault == "corrupt":
        return b"\x89PNG\r\n\x1a\n" + b"this is not an image" * 4
    if fault == "huge":
        return _png_with_header(50000, 50000)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def encode_jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def _png_with_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def load_image(path: Path) -> np.ndarray:
    """Raises PIL.UnidentifiedImageError for a corrupt file, like LoadImage does."""
    with Image.open(path) as im:
        return to_array(im)


def invert(arr: np.ndarray) -> np.ndarray:
    return 255 - arr


def scale(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    width = width or arr.shape[1]
    height = height or arr.shape[0]
    return to_array(Image.fromarray(arr, "RGB").resize((width, height), Image.BILINEAR))


def crop_to_8(arr: np.ndarray) -> np.ndarray:
    """VAEEncode crops to a multiple of 8 like the real node."""
    h, w = arr.shape[0] // 8 * 8, arr.shape[1] // 8 * 8
    return arr[:h, :w]


def next_save_name(folder: Path, base: str) -> str:
    """SaveImage's counter: `base_00001_.png`, one more than the highest present."""
    highest = 0
    if folder.is_dir():
        for p in folder.glob(f"{base}_*_.png"):
            digits = p.name[len(base) + 1:-5]
            if digits.isdigit():
                highest = max(highest, int(digits))
    return f"{base}_{highest + 1:05d}_.png"
