"""web/reverie.html against the real daemon (python backend/main.py) and the fake ComfyUI: the
picture keeps changing while live, and once paused (through Control.ini, as the skin does it)
the status line and the picture match what the daemon last wrote."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.e2e.conftest import comfy, start_daemon, tiny_vae, write_config  # noqa: F401 (fixtures)
from tests.test_control import TEMPLATE, Skin
from tests.web.cdp import Browser, find_browser

REPO = Path(__file__).resolve().parents[2]
BROWSER = find_browser()
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium: apt-get install -y chromium")


def screenshot(browser: Browser, path: Path) -> np.ndarray:
    with Image.open(browser.screenshot(path)) as image:
        return np.asarray(image.convert("RGB"))[:180]  # above the status bar


def test_the_page_follows_a_live_daemon_and_shows_its_paused_frame(tmp_path: Path, tiny_vae: Path,  # noqa: F811
                                                                  comfy) -> None:  # noqa: F811
    (tmp_path / "web").mkdir()
    shutil.copy(REPO / "web" / "reverie.html", tmp_path / "web" / "reverie.html")
    control = tmp_path / "Control.ini"
    shutil.copyfile(TEMPLATE, control)
    write_config(tmp_path, tiny_vae, url=comfy.url, display={"output_dir": "output", "fps": 10},
                 control={"file": str(control)})
    shots = Path(os.environ.get("REVERIE_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    daemon = start_daemon(tmp_path)
    browser = Browser(BROWSER, tmp_path / "profile")
    try:
        browser.call("Emulation.setDeviceMetricsOverride", width=320, height=240, deviceScaleFactor=1, mobile=False)
        browser.navigate((tmp_path / "web" / "reverie.html").as_uri() + "?poll=50")
        browser.wait_for("window.reverieState.shown !== null && window.reverieState.shown > 2", timeout=90)
        first = screenshot(browser, shots / "web_live_live1.png")
        browser.wait_for(f"window.reverieState.shown > {browser.evaluate('window.reverieState.shown') + 5}", timeout=30)
        assert not np.array_equal(first, screenshot(browser, shots / "web_live_live2.png")), "the picture did not change"

        time.sleep(0.3)  # the daemon takes the control file's baseline first
        Skin(control).click("pause")
        browser.wait_for("document.getElementById('status').textContent.startsWith('paused')", timeout=15)
        time.sleep(0.5)
        status = json.loads((tmp_path / "output" / "status.json").read_text("utf-8"))
        assert status["state"] == "paused"
        browser.wait_for(f"window.reverieState.shown === {status['frame']}", timeout=5)
        text = browser.evaluate("document.getElementById('status').textContent")
        assert status["pause_reason"] == "skin"
        assert text == (f"paused: skin  |  frame {status['frame']}  |  keyframes {status['keyframes']}  |  "
                        f"{status['fps']:.1f} fps")
        with Image.open(io.BytesIO((tmp_path / "output" / status["frame_file"]).read_bytes())) as ring:
            expected = np.asarray(ring.convert("RGB").resize((320, 320), Image.Resampling.BILINEAR))[40:220]
        shown = screenshot(browser, shots / "web_live_paused.png").astype(int)
        assert np.abs(shown - expected.astype(int)).mean() < 12, "the page does not show the paused frame"
    finally:
        browser.close()
        daemon.terminate()
        try:
            daemon.wait(timeout=15)
        except subprocess.TimeoutExpired:
            daemon.kill()
