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


# -- the dream and the long-run checks -------------------------------------------------------------

def test_check_prints_the_drift_settings_in_force_and_warns_about_a_fixed_seed_without_anchors(capsys):
    from backend.config import parse_config
    from backend.doctor import check_dream

    report = Report()
    check_dream(report, parse_config({"dream": {"anchor_every": 8}}))
    out = capsys.readouterr().out
    assert report.failed == 0 and "[ ok ] dream: histogram grounding (chroma 0.6, luma 0.2)" in out
    assert "anchor every 8 at denoise 0.6" in out and "[warn]" not in out
    check_dream(report, parse_config({"dream": {"anchor_every": 0}, "keyframes": {"seed": {"policy": "fixed"}}}))
    out = capsys.readouterr().out
    assert "[warn] keyframes.seed.policy is fixed and the anchor walk is off" in out and report.failed == 0


def test_check_fails_on_bad_reference_images_naming_each(tmp_path, capsys):
    from PIL import Image

    from backend.config import parse_config
    from backend.doctor import check_dream

    Image.new("RGB", (8, 8), "red").save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"nope")
    report = Report()
    check_dream(report, parse_config({"dream": {"references": ["good.png", "bad.png", "gone"]}}, base_dir=tmp_path))
    out = capsys.readouterr().out
    assert report.failed == 1
    fail, = [line for line in out.splitlines() if line.startswith("[FAIL]")]
    assert "bad.png: not an image Pillow can read" in fail and "gone: no such file or folder" in fail
    assert "good.png" not in fail


def test_check_warns_about_custom_nodes_in_the_workflow_and_a_crowded_input_folder(capsys):
    from types import SimpleNamespace

    from backend.comfyui.workflow import load_workflow
    from backend.doctor import check_hygiene

    generator = SimpleNamespace(img2img=load_workflow("builtin:img2img"), txt2img=load_workflow("builtin:txt2img"))
    info = {"KSampler": {"python_module": "custom_nodes.leaky_pack"},
            "LoadImage": {"input": {"required": {"image": [[f"f{i}.png" for i in range(1500)]]}}}}
    report = Report()
    check_hygiene(report, generator, info)
    out = capsys.readouterr().out
    assert "[warn] the keyframe workflow uses custom nodes: KSampler (leaky_pack)" in out
    assert "[warn] ComfyUI's input folder holds 1500 files" in out and report.failed == 0
    check_hygiene(report, generator, {"KSampler": {"python_module": "nodes"}})
    assert capsys.readouterr().out == ""


def test_check_against_a_server_with_a_spare_that_is_down_warns_about_the_spare_only(tmp_path, capsys):
    import socket

    from backend.config import parse_config
    from backend.doctor import check_comfyui
    from tests.fake_comfyui import FakeComfyUI

    with socket.socket() as probe:   # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        spare = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with FakeComfyUI(root=tmp_path / "server") as server:
        config = parse_config({"comfyui": {"url": [server.url, spare], "request_timeout": 2},
                               "generation": {"resolution": [64, 64]}}, base_dir=tmp_path)
        report = Report()
        check_comfyui(report, config)
    out = capsys.readouterr().out
    assert report.failed == 0, out
    assert f"answers at {server.url}" in out and "ComfyUI accepts the workflows" in out
    assert f"[warn] the spare ComfyUI at {spare} is not reachable now" in out


def test_check_with_the_first_server_down_checks_the_workflows_on_the_spare_that_answers(tmp_path, capsys):
    import socket

    from backend.config import parse_config
    from backend.doctor import check_comfyui
    from tests.fake_comfyui import FakeComfyUI

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with FakeComfyUI(root=tmp_path / "server") as server:
        config = parse_config({"comfyui": {"url": [down, server.url], "request_timeout": 2},
                               "generation": {"resolution": [64, 64]}}, base_dir=tmp_path)
        report = Report()
        check_comfyui(report, config)
    out = capsys.readouterr().out
    assert report.failed == 0, out
    assert f"[warn] ComfyUI is not reachable at {down}; Reverie starts on the next server" in out
    assert f"answers at {server.url}" in out and "ComfyUI accepts the workflows" in out


def test_check_reports_the_vaes_gpu_memory_and_the_free_vram_on_cuda(capsys, monkeypatch):
    import backend.assembly
    from backend.config import parse_config
    from backend.doctor import check_vae

    class OnAGpu:
        kind, family, source, device = "kl", "sd1", "sd-vae-ft-mse", "cuda:0"

        def memory(self) -> dict:
            return {"vae_weights_mib": 159.6, "vae_peak_mib": 700.0, "gpu_free_mib": 5120.4}

    monkeypatch.setattr(backend.assembly, "build_encoder", lambda config: OnAGpu())
    report = Report()
    check_vae(report, parse_config({}))
    out = capsys.readouterr().out
    assert report.failed == 0
    assert "GPU memory: the VAE's weights take 160 MiB, 5120 MiB of the GPU are free now" in out
