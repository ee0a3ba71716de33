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
