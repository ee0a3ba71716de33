"""Seed noise matches ComfyUI's draw; the walk's noise is the project's slerp between two seeds."""

from __future__ import annotations

import math

import pytest
import torch

from backend.interpolation.spherical_lerp import slerp
from backend.render.noise import latent_shape, seed_noise, walk_noise


def test_latent_shape_is_one_sample_of_channels_by_an_eighth_of_the_pixels():
    assert latent_shape(4, 512, 768) == (1, 4, 96, 64)


@pytest.mark.parametrize("seed", [0, 1, 123456789, 2 ** 63 - 1, 2 ** 64 - 1])
def test_seed_noise_is_comfyuis_global_generator_draw(seed):
    """ComfyUI: torch.randn(size, generator=torch.manual_seed(seed), device="cpu") (comfy/sample.py)."""
    saved = torch.get_rng_state()
    try:
        expected = torch.randn((1, 4, 8, 8), generator=torch.manual_seed(seed), device="cpu")
    finally:
        torch.set_rng_state(saved)
    got = seed_noise(seed, (1, 4, 8, 8))
    assert got.dtype == torch.float32
    assert torch.equal(got, expected)


def test_seed_noise_leaves_torchs_global_random_state_alone():
    torch.manual_seed(5)
    before = torch.get_rng_state()
    seed_noise(99, (1, 4, 8, 8))
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("seed", [-1, 2 ** 64])
def test_seed_outside_comfyuis_range_is_refused(seed):
    with pytest.raises(ValueError, match="seed must be in"):
        seed_noise(seed, (1, 4, 8, 8))


def test_walk_noise_ends_are_exactly_each_seeds_noise():
    shape = (1, 4, 8, 8)
    assert torch.equal(walk_noise(3, 4, 0.0, shape), seed_noise(3, shape))
    assert torch.equal(walk_noise(3, 4, 1.0, shape), seed_noise(4, shape))


def test_walk_noise_in_between_is_the_float64_slerp_and_keeps_the_norm():
    shape = (1, 4, 16, 16)
    a, b = seed_noise(1, shape).double(), seed_noise(2, shape).double()
    theta = math.acos(float((a * b).sum() / (a.norm() * b.norm())))
    expected = (math.sin(0.7 * theta) * a + math.sin(0.3 * theta) * b) / math.sin(theta)
    got = walk_noise(1, 2, 0.3, shape)
    assert torch.allclose(got.double(), expected, atol=1e-5)
    assert torch.allclose(got, slerp(a.float(), b.float(), 0.3), atol=1e-5)
    assert abs(float(got.norm()) - float(a.norm())) / float(a.norm()) < 0.02
