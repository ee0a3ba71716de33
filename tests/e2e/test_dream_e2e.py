"""The dream end to end: `python backend/main.py` as a subprocess against the fake ComfyUI whose
sampler drifts like chained img2img (tests/fake_comfyui/drift.py), 64x64, the tiny random VAE.

The keyframe slot shows ComfyUI's own image (display.show_raw_keyframes), so the frames at
keyframe positions are exactly what the loop accepted: a blank keyframe would be on screen there.
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.dream.metrics import measure
from tests.e2e.conftest import start_daemon, wait_for_status, write_config

KEYFRAMES = 36          # per run: a few dozen, enough for a 3 %-a-pass magenta pull to show
N = 1                   # in-betweens per segment: frame i is segment i // 2, the keyframe slot when i is even


@pytest.fixture
def drifting(tmp_path):
    from tests.fake_comfyui import FakeComfyUI

    with FakeComfyUI(root=tmp_path / "server", previews=False, history_delay=0.0) as fake:
        fake.sampler = "drift"
        yield fake


def run(folder: Path, tiny_vae: Path, url: str, control: bool, during=None) -> tuple[list[dict], dict, Path]:
    """One daemon run of KEYFRAMES keyframes from the astronaut; (quality.csv rows, last status, out)."""
    from tests.dream.test_drift_sampler import astronaut

    folder.mkdir()
    Image.fromarray(astronaut()).resize((64, 64), Image.LANCZOS).save(folder / "start.png")
    write_config(folder, tiny_vae, url,
                 generation={"resolution": [64, 64], "hybrid": {"interpolation_frames": N, "keyframe_denoise": 0.5}},
                 display={"fps": 30, "output_dir": "out", "history_keep": 1000, "show_raw_keyframes": True},
                 keyframes={"start_image": "start.png", "seed": {"policy": "increment", "value": 7}},
                 dream={"control": control})
    daemon = start_daemon(folder, "--max-frames", str(KEYFRAMES * (N + 1)))
    try:
        if during is not None:
            during(folder, daemon)
    except BaseException:
        finish(daemon, 0)
        raise
    output = finish(daemon, 300)
    assert daemon.returncode == 0, output
    assert "Traceback" not in output, output
    out = folder / "out"
    with open(out / "quality.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return rows, json.loads((out / "status.json").read_text(encoding="utf-8")), out


def finish(daemon, timeout: float) -> str:
    """The daemon's output once it exits; killed when it outlives `timeout` (a run that never stops
    must not outlive the test either)."""
    try:
        return daemon.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        daemon.kill()
        return daemon.communicate()[0] + f"\n(killed after {timeout} s)"


def keyframe_slot_frames(out: Path) -> list[np.ndarray]:
    files = sorted((out / "history").glob("frame_*.png"))
    assert len(files) == KEYFRAMES * (N + 1)
    return [np.asarray(Image.open(f).convert("RGB")) for f in files[::N + 1]]


def test_control_holds_the_palette_that_the_uncontrolled_loop_loses_and_every_keyframe_is_measured(
        tmp_path, tiny_vae, drifting):
    runs = {}
    for name, control in (("off", False), ("on", True)):
        rows, status, out = run(tmp_path / name, tiny_vae, drifting.url, control)
        # every keyframe the schedule took is a row of quality.csv, and status.json carries the latest
        assert len(rows) >= KEYFRAMES - 1 and [int(r["keyframe"]) for r in rows] == list(range(len(rows)))
        quality = status["quality"]
        assert quality["control"] is control and quality["keyframes"] == len(rows)
        assert set(quality["metrics"]) >= {"magenta", "chroma", "sharpness", "l_mean"}
        # the anchor is recognised in the schedule's copy of it: every keyframe after K_0 has its novelty to it
        assert all(r["novelty_anchor"] != "" for r in rows[1:]), [r["novelty_anchor"] for r in rows]
        runs[name] = [float(r["magenta"]) for r in rows]
    start = runs["on"][0]
    assert start < 0.05 and runs["off"][0] < 0.05              # the astronaut: hardly any magenta
    late_off, late_on = np.mean(runs["off"][-8:]), np.mean(runs["on"][-8:])
    assert late_off > 0.3, runs["off"]                           # the loop walks into the attractor ...
    assert late_on < 0.15 and late_off > 2 * late_on + 0.15, (runs["on"], runs["off"])   # ... unless steered


def test_a_black_keyframe_from_comfyui_is_never_on_screen(tmp_path, tiny_vae, drifting):
    def blacken_two(folder: Path, daemon) -> None:
        wait_for_status(folder, lambda s: (s.get("quality") or {}).get("keyframes", 0) >= 3, process=daemon)
        drifting.sampler_next = ["black", "black"]       # the next two sampler runs come back black

    rows, status, out = run(tmp_path / "on", tiny_vae, drifting.url, True, during=blacken_two)
    assert status["quality"]["events"]["blank_rejected"] == 2     # both retried with the next seed
    for i, frame in enumerate(keyframe_slot_frames(out)):
        metrics = measure(Image.fromarray(frame))
        assert metrics.l_mean > 20 and metrics.l_std > 5, i       # the astronaut's palette, never black
    assert min(float(r["l_mean"]) for r in rows) > 20
    assert all(r["event"] != "blank" for r in rows)


def test_bad_reference_images_stop_the_daemon_at_start_with_exit_2_naming_each(tmp_path, tiny_vae):
    (tmp_path / "empty").mkdir()
    (tmp_path / "text.png").write_text("not a picture", encoding="utf-8")
    write_config(tmp_path, tiny_vae, dream={"references": ["gone.png", "empty", "text.png"]})
    daemon = start_daemon(tmp_path, "--max-frames", "2")
    output = finish(daemon, 120)
    assert daemon.returncode == 2, output
    assert "Traceback" not in output
    assert "gone.png: no such file or folder" in output and "empty: the folder has no images" in output
    assert "text.png: not an image Pillow can read" in output
    assert not (tmp_path / "out" / "current_frame.png").exists()


def test_a_folder_source_is_measured_into_quality_csv_without_comfyui(tmp_path, tiny_vae):
    images = tmp_path / "images"
    images.mkdir()
    for i, colour in enumerate(((200, 60, 40), (40, 90, 200), (90, 180, 60))):
        Image.new("RGB", (80, 60), colour).save(images / f"{i}.png")
    write_config(tmp_path, tiny_vae, keyframes={"source": "folder", "folder": "images"})
    daemon = start_daemon(tmp_path, "--max-frames", "12")
    output = finish(daemon, 240)
    assert daemon.returncode == 0, output
    with open(tmp_path / "out" / "quality.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 3 and {r["origin"] for r in rows} >= {"0.png", "1.png"}
    quality = json.loads((tmp_path / "out" / "status.json").read_text(encoding="utf-8"))["quality"]
    assert quality["control"] is False and quality["keyframes"] == len(rows)
