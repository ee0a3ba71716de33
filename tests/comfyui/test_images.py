"""to_rgb and decode_image: every mode becomes RGB with its tones kept (16-bit, int32 and float
scaled to 0..255, alpha composited over black), and oversized images are refused on their header."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from backend.comfyui.errors import ExecutionFailed
from backend.comfyui.images import decode_image, encode_png, to_rgb

RAMP = np.linspace(0.0, 1.0, 32 * 32).reshape(32, 32)   # 0..1, the tones every case must keep
EXPECTED = np.rint(RAMP * 255)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def big_endian_16_bit(values: np.ndarray) -> Image.Image:
    image = Image.new("I;16B", (values.shape[1], values.shape[0]))
    image.frombytes(values.astype(">u2").tobytes())
    return image


TONE_IMAGES = {
    "I;16": lambda: Image.fromarray((RAMP * 65535).astype(np.uint16)),
    "I;16B": lambda: big_endian_16_bit(RAMP * 65535),
    "I 0..65535": lambda: Image.fromarray((RAMP * 65535).astype(np.int32)),
    "I 0..255": lambda: Image.fromarray(np.rint(RAMP * 255).astype(np.int32)),
    "F 0..1": lambda: Image.fromarray(RAMP.astype(np.float32)),
    "F 0..255": lambda: Image.fromarray((RAMP * 255).astype(np.float32)),
    "F 0..65535": lambda: Image.fromarray((RAMP * 65535).astype(np.float32)),
    "L": lambda: Image.fromarray(np.rint(RAMP * 255).astype(np.uint8)),
}


@pytest.mark.parametrize("kind", TONE_IMAGES)
def test_to_rgb_scales_16_bit_int_and_float_tones_to_0_255(kind):
    image = to_rgb(TONE_IMAGES[kind]())
    assert image.mode == "RGB" and image.size == (32, 32)
    pixels = np.asarray(image).astype(float)
    assert np.abs(pixels[..., 0] - EXPECTED).max() <= 1.0, kind
    assert (pixels[..., 0] == pixels[..., 2]).all()


def test_to_rgb_clips_negative_and_out_of_range_int32_values():
    image = to_rgb(Image.fromarray(np.array([[-5, 0, 70000, 65535]], dtype=np.int32)))
    assert np.asarray(image)[0, :, 0].tolist() == [0, 0, 255, 255]


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA"])
def test_to_rgb_composites_alpha_over_black(mode):
    base = Image.new("RGBA", (4, 1), (200, 100, 50, 255))
    base.putpixel((1, 0), (200, 100, 50, 0))
    base.putpixel((2, 0), (200, 100, 50, 128))
    pixels = np.asarray(to_rgb(base.convert(mode))).astype(int)
    assert pixels[0, 1].tolist() == [0, 0, 0]                     # fully transparent -> black
    assert (pixels[0, 0] > 40).all() and (pixels[0, 2] < pixels[0, 0]).all()   # half -> darker


def test_to_rgb_makes_a_palette_transparency_key_black():
    image = Image.new("P", (2, 1), 1)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.info["transparency"] = 0
    assert np.asarray(to_rgb(image))[0].tolist() == [[0, 0, 0], [0, 255, 0]]


def test_to_rgb_returns_a_new_image_even_for_rgb():
    source = Image.new("RGB", (2, 2), (1, 2, 3))
    out = to_rgb(source)
    out.putpixel((0, 0), (9, 9, 9))
    assert source.getpixel((0, 0)) == (1, 2, 3)


def test_decode_image_keeps_the_tones_of_a_16_bit_png():
    image = decode_image(png(TONE_IMAGES["I;16"]()))
    assert image.mode == "RGB"
    assert np.abs(np.asarray(image)[..., 0].astype(float) - EXPECTED).max() <= 1.0


def test_decode_image_composites_a_transparent_png_over_black():
    rgba = Image.new("RGBA", (8, 8), (250, 250, 250, 0))
    assert np.asarray(decode_image(png(rgba))).max() == 0


def test_decode_image_refuses_too_many_pixels_and_garbage():
    with pytest.raises(ExecutionFailed, match="pixel cap"):
        decode_image(png(Image.new("RGB", (64, 64))), max_pixels=64 * 63)
    with pytest.raises(ExecutionFailed, match="could not be decoded"):
        decode_image(b"\x89PNG not really")


def test_encode_png_round_trips_an_rgb_image():
    image = Image.fromarray(np.rint(np.stack([RAMP * 255] * 3, -1)).astype(np.uint8), "RGB")
    assert np.array_equal(np.asarray(decode_image(encode_png(image))), np.asarray(image))
