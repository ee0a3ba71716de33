"""LatentEncoder (kl kind) on a tiny random AutoencoderKL: conventions, batching, sources, errors.

The tiny model has two blocks, so its latents are H/2 x W/2 (a real SD VAE's are H/8 x W/8).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from backend.interpolation.latent_encoder import LatentEncoder, VaeNotFoundError, VaeNumericsError
from tests.interpolation.ldm_layout import to_ldm


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Every test here must pass without the network: the loader honours HF_HUB_OFFLINE at call time."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def pixels(n=3, height=32, width=48, seed=0):
    return torch.rand(n, 3, height, width, generator=torch.Generator().manual_seed(seed))


def direct_encode(model, x):
    with torch.no_grad():
        return model.encode(x * 2 - 1).latent_dist.mode()


def ldm_file(tiny_kl, path, extra=None, prefix=""):
    model, _ = tiny_kl
    tensors = {prefix + k: v for k, v in to_ldm(model.state_dict(), num_blocks=2).items()}
    save_file({**tensors, **(extra or {})}, str(path))
    return path


def test_kl_encoder_loads_a_save_pretrained_folder_with_sd1_conventions(tiny_kl):
    encoder = LatentEncoder.load("kl", source=str(tiny_kl[1]))
    assert (encoder.kind, encoder.family, encoder.latent_channels) == ("kl", "sd1", 4)
    assert encoder.device == torch.device("cpu") and encoder.dtype == torch.float32
    latents = encoder.encode_pixels(pixels())
    assert latents.shape == (3, 4, 16, 24) and latents.dtype == torch.float32
    assert encoder.runner.model.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


def test_encode_applies_the_scaling_factor_exactly_once(tiny_kl):
    model, folder = tiny_kl
    x = pixels()
    latents = LatentEncoder.load("kl", source=str(folder)).encode_pixels(x)
    torch.testing.assert_close(latents, direct_encode(model, x) * 0.18215, rtol=1e-5, atol=1e-6)


def test_decode_divides_the_scaling_factor_back_out_and_maps_to_unit_range(tiny_kl):
    model, folder = tiny_kl
    encoder = LatentEncoder.load("kl", source=str(folder))
    latents = torch.randn(2, 4, 8, 8) * 0.18215
    with torch.no_grad():
        expected = ((model.decode(latents / 0.18215).sample + 1) / 2).clamp(0, 1)
    frames = encoder.decode_to_uint8(latents)
    assert frames.shape == (2, 16, 16, 3) and frames.dtype == np.uint8
    ref = (expected * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.abs(frames.astype(int) - ref.astype(int)).max() <= 1


def test_an_explicit_family_sets_its_own_scaling(tiny_kl):
    model, folder = tiny_kl
    x = pixels(1)
    encoder = LatentEncoder.load("kl", source=str(folder), family="sdxl")
    assert encoder.family == "sdxl"
    torch.testing.assert_close(encoder.encode_pixels(x), direct_encode(model, x) * 0.13025, rtol=1e-5, atol=1e-6)


def test_encode_uses_the_posterior_mode_so_it_is_deterministic(tiny_kl):
    encoder = LatentEncoder.load("kl", source=str(tiny_kl[1]))
    x = pixels(2)
    torch.testing.assert_close(encoder.encode_pixels(x), encoder.encode_pixels(x), rtol=0, atol=0)


def test_batched_encode_and_decode_match_one_at_a_time(tiny_kl):
    encoder = LatentEncoder.load("kl", source=str(tiny_kl[1]), max_batch=2)
    x = pixels(5)
    batched = encoder.encode_pixels(x)
    single = torch.cat([encoder.encode_pixels(x[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6)
    frames = encoder.decode_to_uint8(batched)
    one_by_one = np.concatenate([encoder.decode_to_uint8(batched[i : i + 1]) for i in range(5)])
    assert np.abs(frames.astype(int) - one_by_one.astype(int)).max() <= 1


def test_encode_takes_pil_images_as_rgb_in_unit_range(tiny_kl):
    encoder = LatentEncoder.load("kl", source=str(tiny_kl[1]))
    array = (pixels(1)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    from_pil = encoder.encode([Image.fromarray(array)])
    from_tensor = encoder.encode_pixels(torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255)
    torch.testing.assert_close(from_pil, from_tensor)
    decoded = encoder.decode(from_pil)
    assert len(decoded) == 1 and decoded[0].size == (48, 32) and decoded[0].mode == "RGB"


@pytest.mark.parametrize("sizes", [[(30, 32)], [(32, 36)], [(32, 32), (40, 32)]])
def test_encode_rejects_sizes_that_are_not_multiples_of_eight_or_differ(tiny_kl, sizes):
    encoder = LatentEncoder.load("kl", source=str(tiny_kl[1]))
    with pytest.raises(ValueError):
        encoder.encode([Image.new("RGB", size) for size in sizes])


def test_decode_rejects_latents_with_the_wrong_channel_count(tiny_kl):
    encoder = LatentEncoder.load("kl", source=str(tiny_kl[1]))
    with pytest.raises(ValueError, match="4, h, w"):
        encoder.decode(torch.zeros(1, 16, 4, 4))


def test_decoding_above_the_tile_threshold_runs_in_tiles_of_the_set_size(tiny_kl):
    folder = tiny_kl[1]
    encoder = LatentEncoder.load("kl", source=str(folder), tile_threshold=48 * 48, tile_size=32)
    seen = []
    encoder.runner.model.decoder.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[-2:])))
    encoder.decode_to_uint8(torch.randn(1, 4, 16, 16))  # 32x32 pixels: below the threshold, one pass
    assert seen == [(16, 16)] and not encoder.runner.model.use_tiling
    seen.clear()
    frames = encoder.decode_to_uint8(torch.randn(1, 4, 32, 32))  # 64x64 pixels: tiled
    # 32-pixel tiles are 16x16 latents at this model's 2x downscale, stepping 12 with 25% overlap.
    assert frames.shape == (1, 64, 64, 3) and max(seen) == (16, 16) and len(seen) == 9


def test_a_single_file_vae_loads_offline_with_the_shipped_config(tiny_kl, tmp_path):
    model, folder = tiny_kl
    path = ldm_file(tiny_kl, tmp_path / "vae-ft-mse-tiny.safetensors")
    encoder = LatentEncoder.load("kl", source=str(path))
    assert encoder.family == "sd1"
    x = pixels(2)
    torch.testing.assert_close(encoder.encode_pixels(x), direct_encode(model, x) * 0.18215, rtol=1e-5, atol=1e-6)


def test_a_single_file_vae_named_xl_is_read_as_sdxl(tiny_kl, tmp_path):
    encoder = LatentEncoder.load("kl", source=str(ldm_file(tiny_kl, tmp_path / "sdxl_vae.safetensors")))
    assert encoder.family == "sdxl" and encoder.scale == 0.13025


def test_an_unhinted_four_channel_vae_is_assumed_sd1_with_a_warning(tiny_kl, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        encoder = LatentEncoder.load("kl", source=str(ldm_file(tiny_kl, tmp_path / "mystery.safetensors")))
    assert encoder.family == "sd1"
    assert "cannot tell the model family" in caplog.text


def test_a_full_checkpoint_yields_its_first_stage_model_and_names_its_family(tiny_kl, tmp_path):
    model, _ = tiny_kl
    unet_like = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3),
                 "conditioner.embedders.1.model.ln_final.weight": torch.zeros(8)}
    path = ldm_file(tiny_kl, tmp_path / "some_checkpoint.safetensors", extra=unet_like, prefix="first_stage_model.")
    encoder = LatentEncoder.load("kl", source=str(path))
    assert encoder.family == "sdxl"  # told apart from sd1 by the SDXL text-encoder keys
    x = pixels(1)
    torch.testing.assert_close(encoder.encode_pixels(x), direct_encode(model, x) * 0.13025, rtol=1e-5, atol=1e-6)


def test_comfyui_models_vae_folder_is_searched(tiny_kl, tmp_path):
    (tmp_path / "models" / "vae").mkdir(parents=True)
    ldm_file(tiny_kl, tmp_path / "models" / "vae" / "vae-ft-mse-840000.safetensors")
    encoder = LatentEncoder.load("kl", comfyui_dir=tmp_path)
    assert "models/vae/vae-ft-mse-840000.safetensors" in encoder.source.replace("\\", "/")


def test_comfyui_checkpoints_are_searched_when_models_vae_is_empty(tiny_kl, tmp_path):
    root = tmp_path / "ComfyUI_windows_portable"
    (root / "ComfyUI" / "models" / "vae").mkdir(parents=True)
    (root / "ComfyUI" / "models" / "checkpoints").mkdir()
    save_file({"model.diffusion_model.x": torch.zeros(2)}, str(root / "ComfyUI/models/checkpoints/a_unet_only.safetensors"))
    ldm_file(tiny_kl, root / "ComfyUI/models/checkpoints/v1-5-pruned-emaonly.safetensors", prefix="first_stage_model.",
             extra={"cond_stage_model.transformer.x": torch.zeros(2)})
    encoder = LatentEncoder.load("kl", comfyui_dir=root)
    assert encoder.source.endswith("v1-5-pruned-emaonly.safetensors") and encoder.family == "sd1"


def test_a_search_with_an_explicit_family_passes_over_files_named_for_another(tiny_kl, tmp_path):
    (tmp_path / "models" / "vae").mkdir(parents=True)
    ldm_file(tiny_kl, tmp_path / "models" / "vae" / "a_sdxl_vae.safetensors")
    ldm_file(tiny_kl, tmp_path / "models" / "vae" / "b_sd15_vae.safetensors")
    encoder = LatentEncoder.load("kl", comfyui_dir=tmp_path, family="sd1")
    assert encoder.source.endswith("b_sd15_vae.safetensors") and encoder.family == "sd1"


def test_the_default_hub_id_is_loaded_from_the_local_cache_without_the_network(tiny_kl, tmp_path, repo_root):
    # huggingface_hub reads HF_HUB_CACHE at import, so this runs in a fresh interpreter.
    repo_dir = tmp_path / "hub" / "models--stabilityai--sd-vae-ft-mse"
    revision = "0" * 40
    tiny_kl[0].save_pretrained(repo_dir / "snapshots" / revision)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(revision)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(repo_root)}
    code = "from backend.interpolation.latent_encoder import LatentEncoder as L; e = L.load('kl'); print(e.family, e.source)"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["sd1", "hub", "stabilityai/sd-vae-ft-mse"]


def test_missing_weights_raise_one_error_that_lists_every_place_tried(tmp_path):
    (tmp_path / "models" / "vae").mkdir(parents=True)
    (tmp_path / "models" / "vae" / "broken.safetensors").write_bytes(b"not a safetensors file")
    try:
        LatentEncoder.load("kl", comfyui_dir=tmp_path)
    except VaeNotFoundError as exc:
        message = str(exc)
    else:
        pytest.skip("the local Hugging Face cache already holds stabilityai/sd-vae-ft-mse")
    assert message.startswith("Set vae.source (or pass --vae PATH) to a VAE")
    for place in ("broken.safetensors", "models/checkpoints", "stabilityai/sd-vae-ft-mse"):
        assert place in message.replace("\\", "/")


def test_an_explicit_path_that_does_not_exist_is_reported_not_replaced(tmp_path):
    with pytest.raises(VaeNotFoundError, match="does not exist") as info:
        LatentEncoder.load("kl", source=str(tmp_path / "nope.safetensors"))
    assert len(info.value.tried) == 1


@pytest.mark.parametrize("kwargs", [{"kind": "vq"}, {"family": "sd2"}, {"family": "flux2"}, {"max_batch": 0},
                                    {"dtype": "int8"}])
def test_load_rejects_unknown_choices(kwargs, tiny_kl):
    with pytest.raises(ValueError):
        LatentEncoder.load(**{"kind": "kl", "source": str(tiny_kl[1]), **kwargs})


def test_half_precision_overflow_is_retried_once_in_float32(tiny_kl, tmp_path, caplog):
    folder = tmp_path / "hot"
    shutil.copytree(tiny_kl[1], folder)
    encoder = LatentEncoder.load("kl", source=str(folder), dtype="fp16")
    with torch.no_grad():  # outputs ~1e6 overflow float16 (max 65504) but are fine in float32
        encoder.runner.model.decoder.conv_out.weight.mul_(1e6)
    with caplog.at_level(logging.WARNING):
        frames = encoder.decode_to_uint8(torch.randn(1, 4, 8, 8))
    assert encoder.dtype == torch.float32 and "switching to float32" in caplog.text
    assert frames.shape == (1, 16, 16, 3)


def test_nan_in_float32_raises_a_numerics_error(tiny_kl):
    encoder = LatentEncoder.load("kl", source=str(tiny_kl[1]))
    with torch.no_grad():
        encoder.runner.model.decoder.conv_out.bias.fill_(float("nan"))
    with pytest.raises(VaeNumericsError, match="float32"):
        encoder.decode(torch.zeros(1, 4, 8, 8))


def test_release_leaves_the_encoder_usable(tiny_kl):
    encoder = LatentEncoder.load("kl", source=str(tiny_kl[1]))
    encoder.release()
    assert encoder.encode_pixels(pixels(1)).shape == (1, 4, 16, 24)


@pytest.mark.parametrize("name, family, expected, scale, shift", [
    ("ae.safetensors", "auto", "flux1", 0.3611, 0.1159),         # the FLUX.1 VAE's usual file name
    ("sd3_vae.safetensors", "auto", "sd3", 1.5305, 0.0609),
    ("mystery16.safetensors", "sd3", "sd3", 1.5305, 0.0609),
])
def test_a_sixteen_channel_single_file_vae_applies_its_family_shift_and_scale(tiny_kl16, tmp_path, name, family,
                                                                              expected, scale, shift):
    save_file(to_ldm(tiny_kl16.state_dict(), num_blocks=2), str(tmp_path / name))
    encoder = LatentEncoder.load("kl", source=str(tmp_path / name), family=family)
    assert (encoder.family, encoder.latent_channels, encoder.scale, encoder.shift) == (expected, 16, scale, shift)
    x = pixels(2)
    latents = encoder.encode_pixels(x)
    assert latents.shape == (2, 16, 16, 24)
    torch.testing.assert_close(latents, (direct_encode(tiny_kl16, x) - shift) * scale, rtol=1e-5, atol=1e-5)
    scaled = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected_pixels = ((tiny_kl16.decode(scaled / scale + shift).sample + 1) / 2).clamp(0, 1)
    ref = (expected_pixels * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.abs(encoder.decode_to_uint8(scaled).astype(int) - ref.astype(int)).max() <= 1


def test_a_sixteen_channel_diffusers_folder_is_named_by_its_config_scaling(tiny_kl16, tmp_path):
    from diffusers import AutoencoderKL

    config = {k: v for k, v in tiny_kl16.config.items() if not k.startswith("_")}
    model = AutoencoderKL(**{**config, "scaling_factor": 0.3611, "shift_factor": 0.1159})
    model.load_state_dict(tiny_kl16.state_dict())
    model.save_pretrained(tmp_path / "flux_vae")
    encoder = LatentEncoder.load("kl", source=str(tmp_path / "flux_vae"))
    assert (encoder.family, encoder.shift) == ("flux1", 0.1159)
    x = pixels(1)
    torch.testing.assert_close(encoder.encode_pixels(x), (direct_encode(tiny_kl16, x) - 0.1159) * 0.3611,
                               rtol=1e-5, atol=1e-5)


def test_missing_weights_name_the_hugging_face_cache_folder_that_was_searched(tmp_path, repo_root):
    # huggingface_hub reads HF_HUB_CACHE at import, so this runs in a fresh interpreter.
    cache = tmp_path / "empty_hub_cache"
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(repo_root)}
    code = ("from backend.interpolation.latent_encoder import LatentEncoder as L, VaeNotFoundError as E\n"
            "try:\n    L.load('kl')\nexcept E as exc:\n    print(exc)")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    hub_line = next(line for line in result.stdout.splitlines() if "stabilityai/sd-vae-ft-mse" in line)
    assert f"Hugging Face cache {cache}" in hub_line


def test_auto_kind_on_a_cpu_prefers_the_tiny_pair_in_comfyuis_vae_approx(tiny_kl, tmp_path):
    from tests.interpolation.test_taesd import save_pair

    (tmp_path / "models" / "vae").mkdir(parents=True)
    (tmp_path / "models" / "vae_approx").mkdir()
    ldm_file(tiny_kl, tmp_path / "models" / "vae" / "vae-ft-mse-840000.safetensors")
    save_pair(tmp_path / "models" / "vae_approx", "taesd", 4)
    encoder = LatentEncoder.load("auto", comfyui_dir=tmp_path, device="cpu")
    assert (encoder.kind, encoder.family) == ("tiny", "sd1")


def test_auto_kind_on_a_cpu_without_tiny_weights_falls_back_to_kl_and_says_what_it_costs(tiny_kl, tmp_path, caplog):
    (tmp_path / "models" / "vae").mkdir(parents=True)
    ldm_file(tiny_kl, tmp_path / "models" / "vae" / "vae-ft-mse-840000.safetensors")
    with caplog.at_level(logging.WARNING):
        encoder = LatentEncoder.load("auto", comfyui_dir=tmp_path, device="cpu")
    assert encoder.kind == "kl" and "models/vae_approx" in caplog.text and "several seconds a frame" in caplog.text


def test_auto_kind_with_an_explicit_kl_source_loads_it_without_a_warning(tiny_kl, caplog):
    with caplog.at_level(logging.WARNING):
        encoder = LatentEncoder.load("auto", source=str(tiny_kl[1]), device="cpu")
    assert encoder.kind == "kl" and "vae.kind auto" not in caplog.text


def test_auto_kind_with_no_weights_anywhere_lists_the_places_of_both_kinds(tmp_path):
    (tmp_path / "models" / "vae").mkdir(parents=True)
    try:
        LatentEncoder.load("auto", comfyui_dir=tmp_path, device="cpu")
    except VaeNotFoundError as exc:
        message = str(exc).replace("\\", "/")
    else:
        pytest.skip("the local Hugging Face cache already holds stabilityai/sd-vae-ft-mse")
    assert message.startswith("vae.kind auto found no VAE of either kind")
    assert "models/vae_approx" in message and "models/checkpoints" in message and "sd-vae-ft-mse" in message


@pytest.fixture
def two_checkpoints(tiny_kl, tmp_path):
    """A ComfyUI folder with two SD 1.x checkpoints whose VAEs differ: a_other sorts first."""
    from diffusers import AutoencoderKL

    from tests.interpolation.conftest import TINY_KL

    torch.manual_seed(7)
    other = AutoencoderKL(**TINY_KL).eval()
    folder = tmp_path / "models" / "checkpoints"
    folder.mkdir(parents=True)
    (tmp_path / "models" / "vae").mkdir()
    text_encoder = {"cond_stage_model.transformer.x": torch.zeros(2)}
    ldm_file((other, None), folder / "a_other.safetensors", prefix="first_stage_model.", extra=text_encoder)
    (folder / "SD15").mkdir()
    ldm_file(tiny_kl, folder / "SD15" / "b_used.safetensors", prefix="first_stage_model.", extra=text_encoder)
    return tmp_path, other


def test_the_vae_comes_from_the_checkpoint_the_workflow_uses_not_the_first_one(tiny_kl, two_checkpoints):
    root, other = two_checkpoints
    encoder = LatentEncoder.load("kl", comfyui_dir=root, checkpoint="SD15\\b_used.safetensors")
    assert "b_used.safetensors" in encoder.source and "which the workflow uses" in encoder.source
    x = pixels(1)
    torch.testing.assert_close(encoder.encode_pixels(x), direct_encode(tiny_kl[0], x) * 0.18215, rtol=1e-5, atol=1e-6)


def test_a_vaeloader_in_the_workflow_wins_over_its_checkpoint(tiny_kl, two_checkpoints):
    root, _ = two_checkpoints
    ldm_file(tiny_kl, root / "models" / "vae" / "vae-ft-mse.safetensors")
    encoder = LatentEncoder.load("kl", comfyui_dir=root, checkpoint="a_other.safetensors",
                                 vae_file="vae-ft-mse.safetensors")
    assert "vae-ft-mse.safetensors" in encoder.source and "VAELoader" in encoder.source


def test_a_used_checkpoint_missing_from_the_folder_is_not_replaced_by_another(two_checkpoints):
    root, _ = two_checkpoints
    try:
        encoder = LatentEncoder.load("kl", comfyui_dir=root, checkpoint="v1-5-pruned-emaonly.safetensors")
    except VaeNotFoundError as exc:
        message = str(exc)
    else:
        assert encoder.source.startswith("hub ")  # a VAE in the local Hugging Face cache, never a_other
        return
    assert "v1-5-pruned-emaonly.safetensors: not found" in message and "a_other" not in message


def test_no_vae_on_a_cpu_says_which_taesd_files_to_get_from_where_and_where_to_put_them(tmp_path):
    models = tmp_path / "models"
    try:
        LatentEncoder.load("auto", device="cpu", models_dir=models)
    except VaeNotFoundError as exc:
        first = str(exc).splitlines()[0]
    else:
        pytest.skip("the local Hugging Face cache already holds stabilityai/sd-vae-ft-mse")
    assert first.startswith("vae.kind auto found no VAE of either kind. Get the tiny VAE (TAESD)")
    for words in ("taesd_encoder.pth and taesd_decoder.pth", "https://github.com/madebyollin/taesd",
                  f"put both in {models}", "--vae FOLDER", "models/vae_approx"):
        assert words in first


def test_a_taesd_pair_in_reveries_models_folder_is_found_without_any_setting(tmp_path):
    from tests.interpolation.test_taesd import save_pair

    (tmp_path / "models").mkdir()
    save_pair(tmp_path / "models", "taesd", 4)
    encoder = LatentEncoder.load("auto", device="cpu", models_dir=tmp_path / "models")
    assert (encoder.kind, encoder.family) == ("tiny", "sd1") and "taesd_encoder.pth" in encoder.source
