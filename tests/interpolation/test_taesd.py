"""Tiny kind: the TAESD-layout module, its file/family detection, and the real TAEF2 weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from backend.interpolation.latent_encoder import LatentEncoder, VaeNotFoundError
from backend.interpolation.spherical_lerp import lerp, slerp
from backend.interpolation.taesd import build_decoder, build_encoder, load_tiny

# Round-trip PSNR of the real TAEF2 weights on 128x128 Lanczos downsizes of the three photos,
# measured on this machine kind: astronaut 25.5, coffee 28.3, chelsea 29.7 dB. The thresholds sit
# 1 dB lower (room for BLAS/CPU differences). A wrongly wired pool branch fails them: without it
# 15.2-15.7 dB; with the branch fed a global average instead of the full map 24.3 / 26.5 / 27.9 dB.
PSNR_FLOOR_DB = {"astronaut": 24.5, "coffee": 27.3, "chelsea": 28.7}
SIZE = (128, 128)


def save_pair(folder, prefix, channels, pool=False, seed=0):
    torch.manual_seed(seed)
    torch.save(build_encoder(channels, pool).state_dict(), folder / f"{prefix}_encoder.pth")
    torch.save(build_decoder(channels, pool).state_dict(), folder / f"{prefix}_decoder.pth")
    return folder / f"{prefix}_encoder.pth"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


@pytest.fixture(scope="module")
def taef2(taesd_dir):
    return LatentEncoder.load("tiny", source=str(taesd_dir))


@pytest.fixture(scope="module")
def small_photos(photos):
    return {name: im.resize(SIZE, Image.LANCZOS) for name, im in photos.items()}


@pytest.mark.parametrize("prefix, channels, family", [
    ("taesd", 4, "sd1"), ("taesdxl", 4, "sdxl"), ("taesd3", 16, "sd3"), ("taef1", 16, "flux1"), ("taef2", 32, "flux2"),
])
def test_tiny_pairs_load_strictly_and_name_their_family_from_the_file_name(tmp_path, prefix, channels, family):
    enc = save_pair(tmp_path, prefix, channels, pool=family == "flux2")
    weights = load_tiny(enc, tmp_path / f"{prefix}_decoder.pth")
    assert (weights.family, weights.latent_channels, weights.family_guessed) == (family, channels, False)


def test_an_unnamed_pair_takes_the_first_family_of_its_channel_count_and_says_it_guessed(tmp_path):
    enc = save_pair(tmp_path, "custom", 16)
    weights = load_tiny(enc, tmp_path / "custom_decoder.pth")
    assert weights.family == "sd3" and weights.family_guessed


def test_pool_keys_alone_identify_a_flux2_pair(tmp_path):
    enc = save_pair(tmp_path, "renamed", 32, pool=True)
    assert load_tiny(enc, tmp_path / "renamed_decoder.pth").family == "flux2"


def test_a_family_that_does_not_fit_the_channel_count_is_rejected(tmp_path):
    enc = save_pair(tmp_path, "taesd", 4)
    with pytest.raises(ValueError, match="does not fit"):
        load_tiny(enc, tmp_path / "taesd_decoder.pth", family="flux1")


def test_diffusers_autoencoder_tiny_weights_are_rekeyed_and_compute_the_same(tmp_path):
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    reference = AutoencoderTiny(latent_channels=4).eval()
    state = reference.state_dict()
    for half in ("encoder", "decoder"):
        save_file({k: v.contiguous() for k, v in state.items() if k.startswith(half + ".")},
                  str(tmp_path / f"taesd_{half}.safetensors"))
    ours = LatentEncoder.load("tiny", source=str(tmp_path / "taesd_encoder.safetensors"))
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        expected = reference.encode(x * 2 - 1).latents  # AutoencoderTiny works in [-1, 1]
        pixels = reference.decode(expected).sample
    torch.testing.assert_close(ours.encode_pixels(x), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours._decode_pixels(expected), ((pixels + 1) / 2).clamp(0, 1), rtol=1e-4, atol=1e-5)


def test_tiny_batched_encode_and_decode_match_one_at_a_time(tmp_path):
    encoder = LatentEncoder.load("tiny", source=str(save_pair(tmp_path, "taef1", 16)), max_batch=2)
    x = torch.rand(3, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    batched = encoder.encode_pixels(x)
    assert batched.shape == (3, 16, 4, 6)
    torch.testing.assert_close(batched, torch.cat([encoder.encode_pixels(x[i : i + 1]) for i in range(3)]))
    frames = encoder.decode_to_uint8(batched)
    singles = np.concatenate([encoder.decode_to_uint8(batched[i : i + 1]) for i in range(3)])
    assert frames.shape == (3, 32, 48, 3) and np.abs(frames.astype(int) - singles.astype(int)).max() <= 1


def test_comfyui_vae_approx_search_prefers_the_requested_family(tmp_path):
    folder = tmp_path / "models" / "vae_approx"
    folder.mkdir(parents=True)
    save_pair(folder, "taesd", 4)
    save_pair(folder, "taesdxl", 4, seed=1)
    assert LatentEncoder.load("tiny", comfyui_dir=tmp_path).family == "sd1"
    assert LatentEncoder.load("tiny", comfyui_dir=tmp_path, family="sdxl").family == "sdxl"


def test_a_tiny_file_without_its_partner_is_reported(tmp_path):
    save_pair(tmp_path, "taesd", 4)
    (tmp_path / "taesd_decoder.pth").unlink()
    with pytest.raises(VaeNotFoundError, match="partner is missing"):
        LatentEncoder.load("tiny", source=str(tmp_path / "taesd_encoder.pth"))


def test_the_tiny_kind_without_any_source_says_what_to_set():
    with pytest.raises(VaeNotFoundError) as info:
        LatentEncoder.load("tiny")
    assert str(info.value).startswith("Get the tiny VAE (TAESD): taesd_encoder.pth and taesd_decoder.pth")
    assert "no comfyui_dir configured" in str(info.value)


@pytest.mark.shared_weights
def test_the_real_taef2_files_load_strictly_as_flux2(taef2):
    assert (taef2.kind, taef2.family, taef2.latent_channels) == ("tiny", "flux2", 32)
    assert (taef2.scale, taef2.shift, taef2.dtype) == (1.0, 0.0, torch.float32)


@pytest.mark.shared_weights
def test_taef2_latents_of_a_real_photo_have_the_documented_shape_and_range(taef2, small_photos):
    latents = taef2.encode([small_photos["astronaut"]])
    assert latents.shape == (1, 32, 16, 16) and latents.dtype == torch.float32
    assert latents.abs().max() < 6.0 and 0.3 < latents.std() < 2.0  # raw TAEF2 latents lie in about ±4.5


@pytest.mark.shared_weights
def test_taef2_round_trip_psnr_on_real_photos_is_above_the_measured_floor(taef2, small_photos):
    names = list(PSNR_FLOOR_DB)
    frames = taef2.decode_to_uint8(taef2.encode([small_photos[n] for n in names]))
    for name, frame in zip(names, frames):
        assert psnr(np.asarray(small_photos[name]), frame) > PSNR_FLOOR_DB[name], name


@pytest.mark.shared_weights
@pytest.mark.parametrize("first, second", [("astronaut", "coffee"), ("coffee", "chelsea")])
def test_decoded_slerp_midpoint_keeps_the_contrast_that_the_lerp_midpoint_loses(taef2, small_photos, first, second):
    # Two unrelated latents are nearly orthogonal, so their average has ~1/sqrt(2) of their norm:
    # the decoder turns that shrunken latent into a washed-out picture. Slerp keeps the norm.
    z = taef2.encode([small_photos[first], small_photos[second]])
    ends = taef2.decode_to_uint8(z).astype(np.float64)
    end_std = (ends[0].std() + ends[1].std()) / 2
    mid_slerp = taef2.decode_to_uint8(slerp(z[:1], z[1:], 0.5))[0].std()
    mid_lerp = taef2.decode_to_uint8(lerp(z[:1], z[1:], 0.5))[0].std()
    # Measured: slerp 1.02-1.10x the endpoints' std, lerp 0.76-0.82x.
    assert mid_slerp > 0.92 * end_std
    assert mid_lerp < 0.87 * end_std
    assert mid_slerp > 1.15 * mid_lerp
