"""Quality metrics on synthetic pictures whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter
from skimage.color import rgb2lab

from backend.dream.lab import lab_to_rgb, rgb_to_lab, srgb_to_lab
from backend.dream.metrics import measure, measure_array, novelty, pool_latent


def photo(w: int = 128, h: int = 64, seed: int = 0) -> np.ndarray:
    """A colourful, detailed test picture: smooth colour ramps plus random blocks."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h) + 60], axis=-1)
    blocks = np.kron(rng.uniform(-60, 60, size=(h // 8, w // 8, 3)), np.ones((8, 8, 1)))
    return np.clip(base + blocks, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("rgb, lab", [((255, 0, 0), (53.24, 80.09, 67.20)), ((255, 255, 255), (100.0, 0.0, 0.0)),
                                      ((128, 128, 128), (53.59, 0.0, 0.0)), ((0, 0, 0), (0.0, 0.0, 0.0))])
def test_lab_conversion_gives_the_published_values(rgb, lab):
    assert np.allclose(rgb_to_lab(np.array([[rgb]], np.uint8))[0, 0], lab, atol=0.02)


def test_lab_conversion_matches_scikit_image_on_random_colours():
    pixels = np.random.default_rng(1).integers(0, 256, size=(64, 64, 3)).astype(np.uint8)
    assert np.abs(rgb_to_lab(pixels) - rgb2lab(pixels)).max() < 0.02
    assert np.abs(srgb_to_lab(pixels / 255.0) - rgb2lab(pixels)).max() < 0.02


def test_lab_round_trip_returns_the_same_8_bit_colours():
    pixels = np.random.default_rng(2).integers(0, 256, size=(64, 64, 3)).astype(np.uint8)
    assert np.abs(lab_to_rgb(rgb_to_lab(pixels)).astype(int) - pixels).max() <= 1


def test_grey_pictures_have_no_chroma_no_saturation_and_no_magenta():
    grey = np.tile(np.linspace(0, 255, 128).astype(np.uint8)[None, :, None], (64, 1, 3))
    m = measure_array(grey)
    assert m.chroma < 0.01 and m.saturation == 0.0 and m.magenta == 0.0 and m.hue_entropy == 0.0


def test_a_hue_rotated_picture_moves_the_mean_hue_by_the_rotation():
    lab = rgb_to_lab(photo()).astype(np.float64)
    lab[..., 1:] = lab[..., 1:] * 0.5        # keep the rotated colours inside the sRGB gamut
    before = measure_array(lab_to_rgb(lab)).hue
    angle = np.radians(40.0)
    a, b = lab[..., 1].copy(), lab[..., 2].copy()
    lab[..., 1], lab[..., 2] = a * np.cos(angle) - b * np.sin(angle), a * np.sin(angle) + b * np.cos(angle)
    after = measure_array(lab_to_rgb(lab)).hue
    assert abs(((after - before) % 360.0) - 40.0) < 1.5


def test_solid_magenta_is_all_magenta_and_orange_is_none():
    magenta = measure(Image.new("RGB", (64, 32), (255, 0, 255)))
    orange = measure(Image.new("RGB", (64, 32), (255, 140, 0)))
    assert magenta.magenta == 1.0 and 320 < magenta.hue < 335
    assert orange.magenta == 0.0


def test_blur_lowers_sharpness_and_high_frequency_energy():
    sharp = Image.fromarray(photo())
    blurred = sharp.filter(ImageFilter.GaussianBlur(2))
    assert measure(blurred).sharpness < 0.5 * measure(sharp).sharpness
    assert measure(blurred).hf_ratio < measure(sharp).hf_ratio


def test_a_darker_flatter_picture_has_lower_lightness_mean_and_std():
    pixels = photo()
    dim = (pixels * 0.3 + 20).astype(np.uint8)
    assert measure_array(dim).l_mean < measure_array(pixels).l_mean
    assert measure_array(dim).l_std < measure_array(pixels).l_std


def test_hue_entropy_is_higher_for_many_hues_than_for_one():
    rainbow = (np.stack(np.meshgrid(np.arange(128), np.arange(64)), -1) * 7 % 256)
    many = np.concatenate([rainbow, 255 - rainbow[..., :1]], axis=-1).astype(np.uint8)
    one = np.zeros((64, 128, 3), np.uint8) + np.array([200, 40, 40], np.uint8)
    assert measure_array(many).hue_entropy > 0.5 > measure_array(one).hue_entropy


def test_large_pictures_are_measured_on_a_downscale_with_the_same_colour_answers():
    small = Image.fromarray(photo(128, 64))
    big = small.resize((1024, 512), Image.NEAREST)
    assert abs(measure(big).chroma - measure(small).chroma) < 1.0
    assert abs(measure(big).l_mean - measure(small).l_mean) < 1.0


def test_novelty_is_zero_for_the_same_latent_and_grows_with_the_change():
    rng = np.random.default_rng(3)
    latent = rng.normal(size=(4, 16, 32)).astype(np.float32)
    a = pool_latent(latent)
    assert abs(np.linalg.norm(a) - 1.0) < 1e-9 and a.shape == (4 * 4 * 8,)
    small = pool_latent(latent + 0.1 * rng.normal(size=latent.shape))
    large = pool_latent(latent + 2.0 * rng.normal(size=latent.shape))
    assert novelty(a, a) == 0.0
    assert 0.0 < novelty(a, small) < novelty(a, large)
    assert novelty(None, a) is None


def test_pooling_accepts_a_batch_of_one_and_latents_smaller_than_the_grid():
    latent = np.random.default_rng(4).normal(size=(1, 4, 3, 5)).astype(np.float32)
    assert pool_latent(latent).shape == (4 * 3 * 5,)
