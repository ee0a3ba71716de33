"""Palette and detail grounding: statistics move toward the target, clamps and strengths hold."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from backend.dream.detail import detail_gain, ground_detail
from backend.dream.lab import rgb_to_lab
from backend.dream.metrics import measure
from backend.dream.palette import PaletteTarget, ground
from tests.dream.test_metrics import photo


def stats(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    lab = rgb_to_lab(np.asarray(image)).reshape(-1, 3)
    return lab.mean(axis=0), lab.std(axis=0)


@pytest.fixture
def pair():
    source = Image.fromarray(photo(seed=1))
    warm = (np.asarray(photo(seed=2), np.float64) * [1.0, 0.7, 0.45] + [40, 10, 0]).clip(0, 255)
    return source, Image.fromarray(warm.astype(np.uint8))


@pytest.mark.parametrize("mode", ["reinhard", "histogram"])
def test_full_strength_transfer_lands_on_the_targets_lab_statistics(pair, mode):
    source, target = pair
    out = ground(source, PaletteTarget.of(target), mode=mode, chroma=1.0, luma=1.0)
    (m_out, s_out), (m_ref, s_ref), (m_src, _) = stats(out), stats(target), stats(source)
    assert np.abs(m_out - m_ref).max() < 0.15 * np.abs(m_src - m_ref).max()
    assert np.abs(s_out - s_ref).max() < 2.5


@pytest.mark.parametrize("mode", ["reinhard", "histogram"])
def test_strengths_move_each_channel_that_share_of_the_way(pair, mode):
    source, target = pair
    out = ground(source, PaletteTarget.of(target), mode=mode, chroma=0.6, luma=0.2)
    (m_out, _), (m_ref, _), (m_src, _) = stats(out), stats(target), stats(source)
    share = (m_out - m_src) / (m_ref - m_src)
    assert abs(share[0] - 0.2) < 0.08
    assert np.all(np.abs(share[1:] - 0.6) < 0.12)


def test_zero_strengths_leave_the_picture_alone(pair):
    source, target = pair
    out = ground(source, PaletteTarget.of(target), chroma=0.0, luma=0.0)
    assert np.array_equal(np.asarray(out), np.asarray(source))


def test_mode_off_leaves_the_picture_alone_and_unknown_modes_are_refused(pair):
    source, target = pair
    assert np.array_equal(np.asarray(ground(source, PaletteTarget.of(target), mode="off")), np.asarray(source))
    with pytest.raises(ValueError, match="unknown grounding mode"):
        ground(source, PaletteTarget.of(target), mode="lut")


def test_the_std_ratio_is_clamped_so_a_flat_input_is_not_blown_up():
    rng = np.random.default_rng(5)
    flat = Image.fromarray((128 + rng.integers(-2, 3, size=(64, 128, 3))).astype(np.uint8))
    busy = Image.fromarray(photo(seed=6))
    out = ground(flat, PaletteTarget.of(busy), mode="reinhard", chroma=1.0, luma=1.0)
    ratio = stats(out)[1][0] / stats(flat)[1][0]
    assert ratio < 1.6 * 1.1          # clamp 1.6 (plus rounding), far below the unclamped ratio
    assert stats(busy)[1][0] / stats(flat)[1][0] > 10


def test_chroma_scale_shrinks_the_chroma_of_the_result(pair):
    source, target = pair
    plain = ground(source, PaletteTarget.of(target), chroma=0.6, luma=0.2)
    trimmed = ground(source, PaletteTarget.of(target), chroma=0.6, luma=0.2, chroma_scale=0.8)
    assert measure(trimmed).chroma < 0.85 * measure(plain).chroma


def test_detail_grounding_moves_sharpness_toward_the_target_both_ways():
    image = Image.fromarray(photo(seed=7))
    sharpness = measure(image).sharpness
    softer = ground_detail(image, sharpness / 2, strength=1.0)
    crisper = ground_detail(image, sharpness * 2, strength=1.0)
    assert sharpness / 2 * 0.8 < measure(softer).sharpness < sharpness * 0.9
    assert sharpness * 1.1 < measure(crisper).sharpness


def test_detail_gain_is_clamped_scaled_by_strength_and_one_when_on_target():
    assert detail_gain(100.0, 100.0, 1.0) == 1.0
    assert detail_gain(100.0, 1.0, 1.0) == 0.5          # clamp: never flattens the detail layer
    assert detail_gain(1.0, 100.0, 1.0) == 1.5
    assert detail_gain(100.0, 25.0, 0.5) == pytest.approx(0.75)
    assert detail_gain(100.0, 25.0, 0.0) == 1.0
