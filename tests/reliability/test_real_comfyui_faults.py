"""Faults a real ComfyUI 0.3.75 can produce (built by tests/real_comfyui/server.py; skipped with a
reason when it is not set up): down at start and then started, SIGKILLed and restarted mid-run,
execution errors (the placeholder checkpoint fails to load), and a checkpoint it does not have.

The real server has no trained weights, so the dream runs on a model-free img2img workflow
(LoadImage -> ImageInvert -> SaveImageWebsocket): K_s = 255 - K_{s-1}, which proves on the saved
keyframes that no segment was skipped (a skip repeats K_{s-1}) or repeated.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.real_comfyui import build
from tests.real_comfyui.conftest import NOT_SET_UP
from tests.real_comfyui.server import PLACEHOLDER_CHECKPOINT, RealComfyUI
from tests.reliability.conftest import (N, DaemonRun, history_indices, keyframe_images, log_text, read_status,
                                        start_daemon, wait_until, write_config)

pytestmark = pytest.mark.real_comfyui

INVERT = {"10": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}},
          "11": {"class_type": "ImageInvert", "inputs": {"image": ["10", 0]}},
          "12": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["11", 0]}}}


@pytest.fixture(scope="module")
def real():
    """A real ComfyUI on a reserved port, NOT started: the first test needs it down at first."""
    if not build.is_ready():
        pytest.skip(NOT_SET_UP)
    server = RealComfyUI(start_timeout=180)
    yield server
    server.close()


def running(server: RealComfyUI) -> RealComfyUI:
    if server.process is None or server.process.poll() is not None:
        server.start()
    return server


def start_image(folder: Path) -> Path:
    ramp = np.linspace(0, 255, 64 * 64).reshape(64, 64)
    path = folder / "start.png"
    Image.fromarray(np.stack([ramp, ramp.T, 255 - ramp], -1).astype(np.uint8)).save(path)
    return path


def invert_config(folder: Path, vae: Path, url: str) -> Path:
    workflow = folder / "invert.json"
    workflow.write_text(json.dumps(INVERT))
    return write_config(folder, vae, url, display={"fps": 10, "history_keep": 1000},
                        comfyui={"url": url, "workflow": str(workflow), "txt2img_workflow": str(workflow),
                                 "request_timeout": 5, "job_timeout": 60},
                        keyframes={"start_image": str(start_image(folder))})


def test_real_comfyui_down_at_start_then_killed_and_restarted_mid_run_loses_no_segment(tmp_path, tiny_vae, real,
                                                                                       no_discovery):
    if real.process is not None and real.process.poll() is None:
        pytest.skip("the real server is already running (this test must run first in its module)")
    run = DaemonRun(invert_config(tmp_path, tiny_vae, real.url)).start()
    try:
        wait_until(lambda: (read_status(tmp_path) or {}).get("state") == "waiting_for_comfyui", timeout=60,
                   what="waiting_for_comfyui", check=run.check)
        real.start()
        wait_until(lambda: (read_status(tmp_path) or {}).get("keyframes", 0) >= 3, timeout=120,
                   what="keyframes from the real server", check=run.check)
        real.kill()
        down = wait_until(lambda: (s := read_status(tmp_path) or {}).get("state") == "waiting_for_comfyui" and s,
                          timeout=60, what="waiting after the kill", check=run.check)
        assert down["comfyui"] == "unavailable"
        real.start()
        wait_until(lambda: (read_status(tmp_path) or {}).get("segment", 0) >= down["segment"] + 3, timeout=180,
                   what="three more segments after the restart", check=run.check)
    finally:
        assert run.stop() == 0
    frames = history_indices(tmp_path / "out")
    assert frames == list(range(len(frames)))
    keys = [k.astype(int) for k in keyframe_images(tmp_path / "out")]
    assert len(keys) >= down["segment"] + 3
    for s in range(1, len(keys)):
        assert np.abs(keys[s] + keys[s - 1] - 255).max() <= 1, f"keyframe {s} is not the inversion of {s - 1}"


def test_real_comfyui_execution_errors_are_retried_then_skipped_never_fatal(tmp_path, tiny_vae, real, log_records):
    server = running(real)
    config = write_config(tmp_path, tiny_vae, server.url,
                          comfyui={"url": server.url, "checkpoint": PLACEHOLDER_CHECKPOINT, "job_timeout": 60},
                          keyframes={"start_image": str(start_image(tmp_path))})
    assert DaemonRun(config, max_frames=2 * (N + 1) + 1).start().join(240) == 0
    text = log_text(log_records)
    assert "retrying with a new seed" in text and "skipping it" in text
    keys = keyframe_images(tmp_path / "out")
    assert len(keys) == 3 and all(np.array_equal(k, keys[0]) for k in keys)  # held, never a crash
    assert read_status(tmp_path)["state"] == "stopped"


def test_real_comfyui_missing_checkpoint_exits_2_naming_what_it_has(tmp_path, tiny_vae, real):
    server = running(real)
    write_config(tmp_path, tiny_vae, server.url, comfyui={"url": server.url, "checkpoint": "nope.safetensors"})
    daemon = start_daemon(tmp_path, "--max-frames", "3")
    _, stderr = daemon.communicate(timeout=120)
    assert daemon.returncode == 2
    assert "nope.safetensors" in stderr and PLACEHOLDER_CHECKPOINT in stderr and "Traceback" not in stderr
    assert not (tmp_path / "out" / "current_frame.png").exists()


def kill_during_a_job(server: RealComfyUI, within: float = 30.0) -> bool:
    """SIGKILL the server the moment /queue shows a job running (True), or at `within` s (False)."""
    import requests

    deadline = time.monotonic() + within
    with requests.Session() as http:
        http.trust_env = False
        while time.monotonic() < deadline:
            try:
                if http.get(server.url + "/queue", timeout=2).json().get("queue_running"):
                    server.kill()
                    return True
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.005)
    server.kill()
    return False


def test_real_comfyui_killed_mid_job_for_20_s_is_shown_at_once_and_the_job_made_again_with_its_seed(
        tmp_path, tiny_vae, real, log_records):
    """Issue 11's scenario on the real server: down ~20 s (kill, wait, then the 11-15 s start)."""
    server = running(real)
    run = DaemonRun(invert_config(tmp_path, tiny_vae, server.url)).start()
    seeds: list[int] = []
    try:
        wait_until(lambda: run.daemon.source is not None, timeout=60, what="the source", check=run.check)
        generator = run.daemon.source.generator
        make = generator.generate_keyframe

        def recording(*args, **kwargs):
            keyframe = make(*args, **kwargs)
            seeds.append(keyframe.seed)
            return keyframe

        generator.generate_keyframe = recording
        wait_until(lambda: (read_status(tmp_path) or {}).get("keyframes", 0) >= 3, timeout=120,
                   what="keyframes from the real server", check=run.check)
        mid_job = kill_during_a_job(server)
        killed_at = time.monotonic()
        down = wait_until(lambda: (s := read_status(tmp_path) or {}).get("comfyui") == "unavailable" and s,
                          timeout=8, what="unavailable while the server is dead", check=run.check)
        print(f"killed {'mid-job' if mid_job else 'between jobs'}; status said unavailable "
              f"{time.monotonic() - killed_at:.2f} s later")
        time.sleep(max(0.0, killed_at + 12 - time.monotonic()))  # + the real server's start: ~20 s down
        server.start()
        print(f"the server answered again {time.monotonic() - killed_at:.1f} s after the kill")
        back = wait_until(lambda: (s := read_status(tmp_path) or {}).get("segment", 0) >= down["segment"] + 3
                          and s.get("comfyui") == "connected" and s, timeout=180,
                          what="three more segments after the restart", check=run.check)
        assert back["last_error"] == ""
    finally:
        assert run.stop() == 0
    text = log_text(log_records)
    assert "retrying with a new seed" not in text and "skipping it" not in text
    assert len(seeds) >= 3 and seeds == list(range(seeds[0], seeds[0] + len(seeds))), seeds
    keys = [k.astype(int) for k in keyframe_images(tmp_path / "out")]
    for s in range(1, len(keys)):
        assert np.abs(keys[s] + keys[s - 1] - 255).max() <= 1, f"keyframe {s} is not the inversion of {s - 1}"
