"""The installed skin against the real daemon (python backend/main.py) and the fake ComfyUI:
frames on screen, then pause and stop from the skin's context menu, through Control.ini.

Uses the daemon's end-to-end helpers (tests/e2e/conftest.py): a tiny random VAE, the fake server,
a 64x64 config."""

from __future__ import annotations

import io
import subprocess
import time
from pathlib import Path

import numpy as np
from PIL import Image

from rainmeter.install import set_ini_values
from tests.e2e.conftest import comfy, start_daemon, tiny_vae, write_config  # noqa: F401 (fixtures)
from tests.rainmeter.conftest import Installed


def decoded(path: Path) -> np.ndarray:
    with Image.open(io.BytesIO(path.read_bytes())) as image:
        return np.asarray(image.convert("RGB"))


def test_the_skin_follows_a_live_daemon_and_pauses_and_stops_it(tmp_path: Path, installed: Installed,
                                                               tiny_vae: Path, comfy) -> None:  # noqa: F811
    control = installed.skin_dir / "@Resources" / "Control.ini"
    set_ini_values(installed.skin_dir / "@Resources" / "Variables.inc", "Variables", {"W": "64", "H": "64"})
    write_config(tmp_path, tiny_vae, url=comfy.url, display={"output_dir": str(installed.output), "fps": 10},
                 control={"file": str(control)})
    daemon = start_daemon(tmp_path)
    try:
        sim = installed.sim()
        seen: set[int] = set()
        deadline = time.monotonic() + 90
        while len(seen) < 15 and time.monotonic() < deadline:
            sim.update()
            frame = sim.measures.get("measureframeno", (None, ""))[1]
            if frame:
                seen.add(int(frame))
            assert daemon.poll() is None, daemon.stdout.read()
            time.sleep(0.1)
        assert len(seen) >= 15, f"only frames {sorted(seen)} reached the skin"
        assert sim.log == []

        sim.click_context("Pause / resume")
        deadline = time.monotonic() + 15
        while sim.measures["measurestate"][1] != "paused" and time.monotonic() < deadline:
            time.sleep(0.1)
            sim.update()
        assert sim.measures["measurestate"][1] == "paused"
        time.sleep(0.3)
        sim.update()
        ring = installed.output / sim.measures["measureframefile"][1].replace("\\", "/")
        assert np.array_equal(sim.composite(), decoded(ring)), "the paused picture is not the named ring file"

        sim.click_context("Stop Reverie")
        assert daemon.wait(timeout=20) == 0
        sim.update()
        assert sim.measures["measurestate"][1] == "stopped"
        assert sim.log == []
    finally:
        if daemon.poll() is None:
            daemon.terminate()
            try:
                daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                daemon.kill()
