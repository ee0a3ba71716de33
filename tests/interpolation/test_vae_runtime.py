"""vae_runtime: device and dtype choice.

CUDA is faked by patching torch.cuda's query functions, so these run on a CPU-only torch.
"""

from __future__ import annotations

import pytest
import torch

from backend.interpolation.vae_runtime import pick_dtype


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
