"""Image bytes <-> PIL for the ComfyUI client, with caps so a bad server cannot exhaust memory.
Every picture is made RGB by backend.images.to_rgb, the one mode conversion Reverie has.

The pixel cap is checked on the header (Image.open reads only that) before anything is decoded:
a 50000x50000 PNG is a few hundred bytes on the wire and 7.5 GB once decoded.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image

from backend.comfyui.errors import ExecutionFailed
from backend.images import to_rgb

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
