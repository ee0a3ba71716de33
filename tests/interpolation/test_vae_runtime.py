"""vae_runtime: device and dtype choice, out-of-memory recovery, the float32 retry's weights.

CUDA is faked by patching torch.cuda's query functions, so these run on a CPU-only torch.
"""

from __future__ import annotations

import pytest
import torch

from backend.interpolation.vae_runtime import pick_device, pick_dtype


@pytest.mark.parametrize("capability, expected", [((6, 1), torch.float16), ((7, 5), torch.float16),
                                                  ((8, 6), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_auto_dtype_is_bf16_only_on_gpus_with_native_bf16(monkeypatch, capability, expected):
    # torch's is_bf16_supported() also says True where bf16 is only emulated (pre-Ampere GPUs).
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert pick_dtype("auto", torch.device("cuda")) == expected


def test_auto_dtype_asks_the_capability_of_the_selected_device(monkeypatch):
    asked = []
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability",
                        lambda device=None: asked.append(device) or ((7, 5) if device.index == 1 else (8, 9)))
    assert pick_dtype("auto", torch.device("cuda:1")) == torch.float16
    assert asked == [torch.device("cuda:1")]


def test_auto_dtype_is_fp16_when_torch_reports_no_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert pick_dtype("auto", torch.device("cuda")) == torch.float16


def test_auto_dtype_is_float32_on_the_cpu():
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32


@pytest.mark.skipif(torch.version.cuda is not None, reason="needs a torch built without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_on_a_cpu_only_torch_is_a_value_error_that_says_what_to_install(device):
    with pytest.raises(ValueError, match="built without CUDA") as info:
        pick_device(device)
    message = str(info.value)
    assert "pytorch.org" in message and "vae.device: auto" in message and "\n" not in message


def test_cuda_without_a_usable_gpu_is_a_value_error(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no usable CUDA GPU"):
        pick_device("cuda")


def test_a_cuda_index_beyond_the_gpus_present_is_a_value_error(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="only 1 CUDA device"):
        pick_device("cuda:1")
    assert pick_device("cuda:0") == torch.device("cuda:0")


def test_an_unknown_device_name_is_a_value_error():
    with pytest.raises(ValueError, match="unknown vae.device 'gpu'"):
        pick_device("gpu")


def test_cpu_and_auto_pass_through_on_a_cpu_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("cpu") == torch.device("cpu") and pick_device("auto") == torch.device("cpu")


@pytest.mark.skipif(torch.version.cuda is not None, reason="needs a torch built without CUDA")
def test_loading_a_vae_on_cuda_with_a_cpu_only_torch_fails_before_reading_weights(tmp_path):
    from backend.interpolation.latent_encoder import LatentEncoder

    with pytest.raises(ValueError, match="built without CUDA"):
        LatentEncoder.load("kl", source=str(tmp_path / "not_read.safetensors"), device="cuda")


def fail_batches_over(module, limit, failures):
    """Make ``module`` raise CUDA's out-of-memory error for batches above ``limit`` (``failures`` times)."""
    seen = []

    def hook(_module, args):
        seen.append(tuple(args[0].shape))
        if args[0].shape[0] > limit and failures[0] > 0:
            failures[0] -= 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (fake)")

    module.register_forward_pre_hook(hook)
    return seen


def test_out_of_memory_in_a_tiny_decode_is_retried_at_half_the_batch(taesd_dir, monkeypatch, caplog):
    from backend.interpolation.latent_encoder import LatentEncoder

    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    encoder = LatentEncoder.load("tiny", source=str(taesd_dir), max_batch=4)
    latents = torch.randn(3, 32, 4, 4, generator=torch.Generator().manual_seed(0))
    expected = encoder.decode_to_uint8(latents)
    seen = fail_batches_over(encoder.runner.model.decoder, limit=1, failures=[1])
    with caplog.at_level("WARNING"):
        frames = encoder.decode_to_uint8(latents)
    assert (frames == expected).all() and emptied
    assert [s[0] for s in seen] == [3, 2, 1] and "halving the batch" in caplog.text
    seen.clear()
    encoder.decode_to_uint8(latents)  # memory may be back: the next call tries the whole batch again
    assert [s[0] for s in seen] == [3]


def test_the_batch_is_halved_until_it_fits_and_stays_halved_for_the_rest_of_the_call(taesd_dir):
    from backend.interpolation.latent_encoder import LatentEncoder

    encoder = LatentEncoder.load("tiny", source=str(taesd_dir), max_batch=8)
    latents = torch.randn(5, 32, 4, 4, generator=torch.Generator().manual_seed(3))
    expected = encoder.decode_to_uint8(latents)
    seen = fail_batches_over(encoder.runner.model.decoder, limit=2, failures=[1])
    frames = encoder.decode_to_uint8(latents)
    assert (frames == expected).all()
    assert [s[0] for s in seen] == [5, 3, 2]  # 5 fails; halves of 3 then 2 fit (no failures left)
    seen.clear()
    fail_batches_over(encoder.runner.model.decoder, limit=1, failures=[2])
    encoder.decode_to_uint8(latents)
    assert [s[0] for s in seen] == [5, 3, 2, 2, 1]  # 5 and 3 fail: parts of 2 fit, kept for the rest


def test_out_of_memory_in_a_tiny_encode_is_retried_one_frame_at_a_time(taesd_dir):
    from backend.interpolation.latent_encoder import LatentEncoder

    encoder = LatentEncoder.load("tiny", source=str(taesd_dir))
    pixels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    expected = encoder.encode_pixels(pixels)
    fail_batches_over(encoder.runner.model.encoder, limit=1, failures=[1])
    torch.testing.assert_close(encoder.encode_pixels(pixels), expected)


def test_a_kl_frame_that_does_not_fit_alone_is_decoded_in_smaller_tiles(tiny_kl):
    from backend.interpolation.latent_encoder import LatentEncoder

    encoder = LatentEncoder.load("kl", source=str(tiny_kl[1]), tile_size=32)
    tiled = LatentEncoder.load("kl", source=str(tiny_kl[1]), tile_threshold=0, tile_size=16, max_batch=1)
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(2))  # 32x32 pixels: untiled
    whole = encoder.decode_to_uint8(latents)
    seen = fail_batches_over(encoder.runner.model.decoder, limit=0, failures=[2])
    frames = encoder.decode_to_uint8(latents)
    # The batch of 2 fails, then frame 0 alone: it is decoded in 16-pixel tiles (8x8 latents at this
    # model's 2x downscale, 3x3 overlapping tiles); frame 1 then fits whole (no failures left).
    assert seen[:2] == [(2, 4, 16, 16), (1, 4, 16, 16)] and len(seen) == 2 + 9 + 1
    assert all(s[0] == 1 and max(s[-2:]) <= 8 for s in seen[2:11]) and seen[-1] == (1, 4, 16, 16)
    assert abs(frames[0].astype(int) - tiled.decode_to_uint8(latents)[0].astype(int)).max() <= 1
    assert abs(frames[1].astype(int) - whole[1].astype(int)).max() <= 1  # whole, not tiled (batch numerics)
    assert not encoder.runner.model.use_tiling  # back to whole frames below the threshold


def test_out_of_memory_that_persists_is_a_named_error_to_hold_the_frame(taesd_dir):
    from backend.interpolation.latent_encoder import LatentEncoder, VaeOutOfMemoryError

    encoder = LatentEncoder.load("tiny", source=str(taesd_dir))
    fail_batches_over(encoder.runner.model.decoder, limit=0, failures=[99])
    with pytest.raises(VaeOutOfMemoryError, match="hold the frame and retry"):
        encoder.decode_to_uint8(torch.zeros(2, 32, 4, 4))


def test_out_of_memory_moving_the_weights_back_after_a_release_is_the_same_named_error(taesd_dir, monkeypatch):
    from backend.interpolation.latent_encoder import LatentEncoder, VaeOutOfMemoryError

    encoder = LatentEncoder.load("tiny", source=str(taesd_dir))
    encoder.runner._placed = False  # as after release() on CUDA

    def no_room():
        raise torch.OutOfMemoryError("CUDA out of memory (fake)")

    monkeypatch.setattr(encoder.runner, "_place", no_room)
    with pytest.raises(VaeOutOfMemoryError, match="moving the VAE weights onto it"):
        encoder.decode_to_uint8(torch.zeros(1, 32, 4, 4))


def test_the_float32_retry_runs_on_the_original_weights_not_upcast_half_ones(tiny_kl, caplog):
    from backend.interpolation.latent_encoder import LatentEncoder

    model, folder = tiny_kl
    encoder = LatentEncoder.load("kl", source=str(folder), dtype="fp16")
    assert encoder.runner.model.decoder.conv_out.weight.dtype == torch.float16
    with caplog.at_level("WARNING"):  # 1e5 is past float16's 65504: inf in half, fine in float32
        encoder.decode_to_uint8(torch.full((1, 4, 8, 8), 1e5))
    assert encoder.dtype == torch.float32 and "switching to float32" in caplog.text
    original = model.state_dict()
    retried = encoder.runner.model.state_dict()
    assert retried.keys() == original.keys()
    assert all(torch.equal(retried[k], original[k]) for k in original)


def test_the_original_weights_are_kept_only_while_running_in_half_precision(tiny_kl):
    from backend.interpolation.latent_encoder import LatentEncoder

    assert LatentEncoder.load("kl", source=str(tiny_kl[1])).runner._fp32_weights is None
    assert LatentEncoder.load("kl", source=str(tiny_kl[1]), dtype="bf16").runner._fp32_weights is not None


def test_out_of_memory_halfway_through_the_float32_cast_of_the_nan_retry_is_recovered(tiny_kl, monkeypatch):
    from backend.interpolation.latent_encoder import LatentEncoder

    model, folder = tiny_kl
    encoder = LatentEncoder.load("kl", source=str(folder), dtype="fp16")
    vae = encoder.runner.model
    real_to, failed = vae.to, []

    def to(*args, **kwargs):
        if kwargs.get("dtype") == torch.float32 and not failed:
            failed.append(1)
            vae.encoder.to(dtype=torch.float32)  # the encoder made it, the decoder did not
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        return real_to(*args, **kwargs)

    monkeypatch.setattr(vae, "to", to)
    frames = encoder.decode_to_uint8(torch.full((1, 4, 8, 8), 1e5))  # inf in float16: the NaN retry
    assert failed and encoder.dtype == torch.float32 and frames.shape == (1, 16, 16, 3)
    assert all(p.dtype == torch.float32 for p in vae.parameters())
    assert torch.equal(vae.decoder.conv_out.weight, model.decoder.conv_out.weight)  # the original weights


def test_the_gpu_memory_budget_is_reported_on_cuda_and_nothing_on_a_cpu(taesd_dir, monkeypatch):
    from backend.interpolation.latent_encoder import LatentEncoder

    encoder = LatentEncoder.load("tiny", source=str(taesd_dir))
    assert encoder.memory() == {}  # a CPU has no budget to report
    weights = sum(p.numel() * p.element_size() for p in encoder.runner.model.parameters())
    monkeypatch.setattr(encoder.runner, "device", torch.device("cuda", 0))  # as if it ran on a GPU
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 * 2**30, 8 * 2**30))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 600 * 2**20)
    assert encoder.memory() == {"vae_weights_mib": round(weights / 2**20, 1), "vae_peak_mib": 600.0,
                                "gpu_free_mib": 3072.0}
    encoder.runner._placed = False  # released for a pause: its weights are on the CPU, not the GPU
    assert encoder.memory()["vae_weights_mib"] == 0
