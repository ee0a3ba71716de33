"""Fixtures for the fault matrix: a tiny random VAE on disk, configs for 64x64 runs, and the daemon
run either in-process (a `DaemonRun` thread, where a test needs a seam or the fake's switches) or as
`python backend/main.py` in a subprocess (exit codes, stderr, pythonw, sockets).

Everything is small on purpose: 64x64 frames, a 4-block AutoencoderKL with 8 channels (decodes a
frame in a few ms on one core), so the whole folder runs in a few minutes on a shared 2-core box.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
MAIN = REPO / "backend" / "main.py"
N = 3  # in-betweens per segment in most runs: frame i is segment i // 4, position i % 4


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Two CPU cores are shared by many test runs: keep torch to one thread in this process."""
    import torch

    torch.set_num_threads(1)


def save_tiny_vae(folder: Path, *, nan_decoder: bool = False) -> Path:
    """A random AutoencoderKL (4 latent channels, /8) saved with save_pretrained; optionally with a
    decoder whose output bias is NaN (every decoded pixel NaN, the encoder still finite)."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=[8, 8, 8, 8], down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1, sample_size=64)
    if nan_decoder:
        with torch.no_grad():
            vae.decoder.conv_out.bias.fill_(float("nan"))
    vae.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_vae(tmp_path_factory) -> Path:
    return save_tiny_vae(tmp_path_factory.mktemp("vae") / "tiny-vae")


def write_config(folder: Path, vae: Path, url: str = "http://127.0.0.1:9", **sections) -> Path:
    """A 64x64 config writing into folder/out; each section's keys can be overridden."""
    base = {
        "generation": {"resolution": [64, 64], "hybrid": {"interpolation_frames": N, "keyframe_denoise": 0.5}},
        "comfyui": {"url": url, "request_timeout": 5, "job_timeout": 30},
        "keyframes": {"seed": {"policy": "increment", "value": 100}},
        "vae": {"kind": "kl", "source": str(vae), "family": "sd1", "device": "cpu", "max_batch": 4},
        "display": {"fps": 20, "output_dir": "out", "history_keep": 1000},
        "control": {"file": "out/control.ini"},
        "logging": {"file": "out/reverie.log", "level": "DEBUG"},
    }
    for name, values in sections.items():
        if isinstance(values, dict) and isinstance(base.get(name), dict):
            base[name] = {**base[name], **values}
        else:
            base[name] = values
    path = folder / "config.yaml"
    path.write_text(json.dumps(base, indent=1))  # JSON is YAML
    return path


def read_status(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "out" / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def wait_until(predicate, timeout: float = 60.0, what: str = "condition", check=None):
    """Poll `predicate()` until truthy (returns its value); `check()` may raise to fail early."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if check is not None:
            check()
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def history_indices(out: Path) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in (out / "history").glob("frame_*.png"))


def keyframe_images(out: Path) -> list[np.ndarray]:
    files = sorted((out / "keyframes").glob("keyframe_*.png"))
    assert [int(f.stem.split("_")[1]) for f in files] == list(range(len(files))), "a segment is missing"
    return [pixels(f) for f in files]


def is_fake_img2img_of(after: np.ndarray, before: np.ndarray, denoise: float = 0.5) -> bool:
    """True when `after` is FakeComfyUI's sampler applied to `before` for SOME seed: the fake rolls
    the image by (dy, dx) and adds a per-channel offset mod 256, blended by denoise. Recovers them.
    An unchanged image (a skipped keyframe) is not counted as one."""
    if np.array_equal(after, before):
        return False
    src = before.astype(np.float64)
    moved = (after.astype(np.float64) - (1.0 - denoise) * src) / denoise  # ~ the rolled+offset image
    for dy in range(src.shape[0]):
        for dx in range(src.shape[1]):
            rolled = np.roll(before, (dy, dx), axis=(0, 1)).astype(np.float64)
            offset = np.mod(moved[0, 0] - rolled[0, 0], 256.0)
            if np.abs(np.mod(moved - rolled - offset + 128, 256) - 128).max() <= 3.0:
                return True
    return False


class DaemonRun:
    """backend.daemon.Daemon in a background thread with its own Shutdown (no signal handlers).

    `prepare(daemon)` runs after construction and before `run()`: the place to swap in a seam.
    """

    def __init__(self, config_path: Path, max_frames: int | None = None, prepare=None):
        from backend.config import load_config
        from backend.daemon import Daemon
        from backend.shutdown import Shutdown

        self.shutdown = Shutdown()
        self.daemon = Daemon(load_config(config_path), config_path, self.shutdown)
        if prepare is not None:
            prepare(self.daemon)
        self.max_frames = max_frames
        self.result: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="daemon-under-test", daemon=True)

    def _run(self) -> None:
        try:
            self.result = self.daemon.run(self.max_frames)
        except BaseException as exc:  # noqa: BLE001 - reported by check()/join()
            self.error = exc
        finally:
            self.shutdown.finished.set()

    def start(self) -> "DaemonRun":
        self.thread.start()
        return self

    def check(self) -> None:
        if self.error is not None:
            raise AssertionError(f"the daemon failed: {self.error!r}") from self.error
        if not self.thread.is_alive() and self.max_frames is None:
            raise AssertionError(f"the daemon stopped on its own (result {self.result})")

    def stop(self, timeout: float = 30.0) -> int | None:
        self.shutdown.request("test")
        return self.join(timeout)

    def join(self, timeout: float = 120.0) -> int | None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the daemon did not stop"
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture
def no_discovery(monkeypatch):
    """With the configured ComfyUI down at start the daemon probes 127.0.0.1:8188 and 8000-9000 and
    adopts whatever ComfyUI answers there; on a shared test machine that is somebody else's server."""
    import backend.comfyui.client

    monkeypatch.setattr(backend.comfyui.client, "discover", lambda *args, **kwargs: None)


@pytest.fixture
def log_records():
    """Every log record of the run (the daemon logs through the root logger)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler, root = Keep(logging.DEBUG), logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for noisy in ("urllib3", "PIL", "websocket", "diffusers", "asyncio", "aiohttp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    yield records
    root.removeHandler(handler)
    root.setLevel(old_level)


def log_text(records: list[logging.LogRecord]) -> str:
    return "\n".join(r.getMessage() for r in records)


def start_daemon(folder: Path, *args: str, wrapper: str | None = None, **popen) -> subprocess.Popen:
    """`python backend/main.py --config config.yaml ARGS` in `folder` (or `python -c wrapper ...`)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    head = [sys.executable, str(MAIN)] if wrapper is None else [sys.executable, "-c", wrapper, str(MAIN)]
    return subprocess.Popen([*head, "--config", "config.yaml", *args], cwd=folder, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **popen)


def run_cli(folder: Path, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(MAIN), *args], cwd=folder, capture_output=True, text=True,
                          timeout=timeout, env=env)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
