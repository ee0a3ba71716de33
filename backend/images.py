"""Fit any picture to the display resolution: RGB, cover-scaled, centre-cropped.

Pure PIL (no torch), shared by the keyframe sources and the frame schedule, so that every
keyframe reaches the VAE at exactly `(width, height)` whatever size ComfyUI or a folder gave.
"""

from __future__ import annotations

from PIL import Image

from backend.comfyui.images import to_rgb


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
