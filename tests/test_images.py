"""fit_cover: any size and any mode -> RGB of exactly the display size, tones kept."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from backend.images import fit_cover


def gray_ramp(mode: str, size: tuple[int, int]) -> Image.Image:
    """A left-to-right ramp 0..1 stored in `mode`'s own range (16-bit, int32, float or 8-bit)."""
    ramp = np.tile(np.linspace(0.0, 1.0, size[0]), (size[1], 1))
    if mode == "I;16":
        return Image.fromarray((ramp * 65535).astype(np.uint16))
    if mode == "I":
        return Image.fromarray((ramp * 65535).astype(np.int32))
    if mode == "F":
        return Image.fromarray(ramp.astype(np.float32))
    return Image.fromarray(np.rint(ramp * 255).astype(np.uint8)).convert(mode)


@pytest.mark.parametrize("mode", ["I;16", "I", "F", "L", "RGB", "LA", "RGBA", "P"])
def test_fit_cover_keeps_the_tones_of_every_mode(mode):
    image = fit_cover(gray_ramp(mode, (64, 64)), (64, 64))
    pixels = np.asarray(image).astype(float)
    assert image.mode == "RGB" and image.size == (64, 64)
    assert pixels[:, 0].max() <= 2 and pixels[:, -1].min() >= 250      # black on the left, white on the right
    assert 115 < pixels.mean() < 140, mode                                # not clipped to white


@pytest.mark.parametrize("size, target", [((1, 1), (64, 48)), ((300, 1), (64, 48)), ((1, 300), (64, 48)),
                                          ((640, 480), (64, 48)), ((7, 13), (24, 16))])
def test_fit_cover_returns_exactly_the_target_size(size, target):
    assert fit_cover(Image.new("RGB", size, (5, 6, 7)), target).size == target


def test_fit_cover_crops_the_overflow_evenly_from_both_sides():
    image = Image.new("RGB", (96, 32), (255, 0, 0))
    image.paste((0, 255, 0), (32, 0, 64, 32))                            # the middle third green
    pixels = np.asarray(fit_cover(image, (32, 32)))
    assert (pixels == [0, 255, 0]).all()


def test_fit_cover_rejects_a_non_positive_size():
    with pytest.raises(ValueError):
        fit_cover(Image.new("RGB", (8, 8)), (0, 8))


def test_fit_cover_of_an_alpha_image_shows_transparent_parts_black():
    image = Image.new("RGBA", (16, 16), (255, 255, 255, 0))
    assert np.asarray(fit_cover(image, (16, 16))).max() == 0
