"""backend/doctor.py's torch line: the advice fits the torch that is installed."""

from __future__ import annotations

import logging

import pytest
import torch

from backend.doctor import Report, check_torch


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("shutil.which", lambda name: "C:/Windows/System32/nvidia-smi.exe")


def test_a_cpu_only_torch_on_a_machine_with_an_nvidia_gpu_fails_with_the_reinstall_line(no_gpu, monkeypatch, capsys):
    monkeypatch.setattr(torch.version, "cuda", None)
    report = Report()
    check_torch(report)
    out = capsys.readouterr().out
    assert report.failed == 1 and "CPU-only build" in out
    # A plain `pip install torch` does nothing while a CPU torch is installed: it must force the reinstall.
    assert "pip install --force-reinstall torch --index-url https://download.pytorch.org/whl/cu" in out


def test_a_cuda_torch_that_finds_no_gpu_points_at_the_driver_not_at_a_reinstall(no_gpu, monkeypatch, capsys):
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    report = Report()
    check_torch(report)
    out = capsys.readouterr().out
    assert report.failed == 1 and "NVIDIA driver" in out and "--index-url" not in out


def write_checkpoint(path, seed: int) -> None:
    """A tiny SD-layout checkpoint: a random VAE under first_stage_model.* plus a text-encoder key."""
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    from tests.interpolation.conftest import TINY_KL
    from tests.interpolation.ldm_layout import to_ldm

    torch.manual_seed(seed)
    vae = AutoencoderKL(**TINY_KL).eval()
    tensors = {"first_stage_model." + k: v for k, v in to_ldm(vae.state_dict(), num_blocks=2).items()}
    save_file({**tensors, "cond_stage_model.transformer.x": torch.zeros(2)}, str(path))


@pytest.mark.parametrize("configured", ["b_used.safetensors", None])
def test_check_names_the_checkpoint_the_workflow_uses_as_the_vae_source(configured, tmp_path, capsys, monkeypatch):
    from backend.config import parse_config
    from backend.doctor import check_vae

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "ComfyUI" / "models" / "checkpoints"
    folder.mkdir(parents=True)
    write_checkpoint(folder / "a_first.safetensors", 1)
    used = configured or "v1-5-pruned-emaonly.safetensors"  # the built-in workflow's own ckpt_name
    write_checkpoint(folder / used, 2)
    config = parse_config({"vae": {"kind": "kl", "device": "cpu", "comfyui_dir": "ComfyUI"},
                           "comfyui": {"checkpoint": configured}}, base_dir=tmp_path)
    report = Report()
    check_vae(report, config)
    out = capsys.readouterr().out
    assert report.failed == 0 and f"checkpoints/{used} (the VAE of checkpoint {used}" in out.replace("\\", "/")
    assert "a_first" not in out


def test_check_fails_on_an_output_folder_it_cannot_write(tmp_path, capsys, monkeypatch):
    from PIL import Image

    from backend.config import parse_config
    from backend.doctor import run_checks

    monkeypatch.setattr("shutil.which", lambda name: None)  # no NVIDIA GPU: the torch line only warns
    (tmp_path / "taken").write_text("a file")
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "a.png")
    config = parse_config({"display": {"output_dir": "taken/out"}, "logging": {"file": None},
                           "generation": {"hybrid": {"use_vae_interpolation": False}},
                           "keyframes": {"source": "folder", "folder": "imgs"}}, base_dir=tmp_path)
    level = logging.getLogger("backend").level
    assert run_checks(config, tmp_path / "config.yaml") == 1
    assert "[FAIL] display.output_dir: cannot write to" in capsys.readouterr().out
    assert logging.getLogger("backend").level == level  # quiet for the report only, not for what runs next
