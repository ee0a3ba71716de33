"""The .latent file LoadLatent reads, and the start-latent formula."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load, save

from backend.render.families import FAMILIES
from backend.render.latent_file import LATENT_KEY, VERSION_MARKER, latent_bytes, read_latent, start_latent


def test_latent_file_holds_the_tensor_and_the_version_marker():
    latent = torch.randn(1, 4, 8, 8)
    tensors = load(latent_bytes(latent))
    assert set(tensors) == {LATENT_KEY, VERSION_MARKER}
    assert torch.equal(tensors[LATENT_KEY], latent)
    assert tensors[VERSION_MARKER].numel() == 0


def test_read_latent_is_the_inverse_and_applies_the_old_files_rule_without_the_marker():
    latent = torch.randn(1, 4, 8, 8)
    assert torch.equal(read_latent(latent_bytes(latent)), latent)
    old = save({LATENT_KEY: latent})
    assert torch.allclose(read_latent(old), latent / 0.18215)


def test_latent_bytes_refuses_a_tensor_that_is_not_a_latent_batch():
    with pytest.raises(ValueError, match=r"\[B, C, h, w\]"):
        latent_bytes(torch.zeros(4, 8, 8))


def test_start_latent_scaled_in_by_the_family_is_noise_times_sqrt_one_plus_sigma_max_squared():
    """What KSamplerAdvanced samples from after process_latent_in (x scaling_factor)."""
    sd1 = FAMILIES["sd1"]
    noise = torch.randn(1, 4, 8, 8)
    stored = start_latent(noise, sigma_max=sd1.sigma_max, scaling_factor=sd1.scaling_factor)
    assert torch.allclose(stored * sd1.scaling_factor, noise * math.sqrt(1 + sd1.sigma_max ** 2), rtol=1e-6)


def test_sd_sigma_max_is_the_scaled_linear_schedules_last_sigma():
    assert FAMILIES["sd1"].sigma_max == pytest.approx(14.6146, abs=1e-4)
    assert FAMILIES["sdxl"].sigma_max == FAMILIES["sd1"].sigma_max
