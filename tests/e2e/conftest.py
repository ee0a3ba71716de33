"""End-to-end fixtures: a tiny random SD-layout VAE on disk, the fake ComfyUI, and a runner that
starts `python backend/main.py` as a subprocess with a temp config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MAIN = REPO / "backend" / "main.py"


@pytest.fixture(scope="session")
def tiny_vae(tmp_path_factory) -> Path:
    """A random AutoencoderKL (4 latent channels, /8) saved with save_pretrained: loads in ms."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=[8, 8, 8, 8], down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1, sample_size=64)
    path = tmp_path_factory.mktemp("vae") / "tiny-vae"
    vae.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def comfy():
    from tests.fake_comfyui import FakeComfyUI

    with FakeComfyUI(latency=0.3) as fake:
        yield fake


def write_config(folder: Path, vae_dir: Path, url: str = "http://127.0.0.1:9", **sections) -> Path:
    """A config for a 64x64 run into folder/out, with every section overridable (flow YAML)."""
    base = {
        "generation": {"resolution": [64, 64], "hybrid": {"interpolation_frames": 3, "keyframe_denoise": 0.5}},
        "comfyui": {"url": url, "request_timeout": 5, "job_timeout": 30},
        "keyframes": {"seed": {"policy": "increment", "value": 100}},
        "vae": {"kind": "kl", "source": str(vae_dir), "family": "sd1", "device": "cpu", "max_batch": 4},
        "display": {"fps": 10, "output_dir": "out", "history_keep": 1000},
        "control": {"file": "out/control.ini"},
        "logging": {"file": "out/reverie.log", "level": "DEBUG"},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    path = folder / "config.yaml"
    path.write_text(json.dumps(base, indent=1))  # JSON is YAML
    return path


def start_daemon(folder: Path, *args: str) -> subprocess.Popen:
    # One torch thread: on a shared 2-core machine two spin against other processes (~10x slower).
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(MAIN), "--config", "config.yaml", *args], cwd=folder,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def read_status(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "out" / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def wait_for_status(folder: Path, predicate, timeout: float = 90.0, process: subprocess.Popen | None = None) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = read_status(folder)
        if status is not None and predicate(status):
            return status
        if process is not None and process.poll() is not None:
            raise AssertionError(f"daemon exited early ({process.returncode}): {process.stdout.read()}")
        time.sleep(0.05)
    raise AssertionError(f"status never matched; last: {read_status(folder)}")
