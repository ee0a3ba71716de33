"""web/reverie.html in a real headless Chromium, from file://, fed by the real FrameWriter and
StatusWriter: the picture changes, fades or cuts, and the status line says what status.js says.

Set REVERIE_SCREENSHOTS=<folder> to keep the screenshots for a look."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.frame_writer import FrameWriter
from backend.status import StatusWriter, new_status
from tests.web.cdp import Browser, find_browser

REPO = Path(__file__).resolve().parents[2]
BROWSER = find_browser()
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium: apt-get install -y chromium")
COLORS = [(220, 40, 40), (40, 80, 220), (40, 200, 60), (230, 200, 40)]


class Site:
    """A copy of the page in <tmp>/web/ and the daemon's output in <tmp>/output/."""

    def __init__(self, root: Path) -> None:
        (root / "web").mkdir()
        shutil.copy(REPO / "web" / "reverie.html", root / "web" / "reverie.html")
        self.page = (root / "web" / "reverie.html").as_uri()
        self.output = root / "output"
        self.frames, self.status = FrameWriter(self.output), StatusWriter(self.output)
        self.shots = Path(os.environ.get("REVERIE_SCREENSHOTS", root))
        self.shots.mkdir(parents=True, exist_ok=True)

    def show(self, index: int, *, fps: float, state: str = "live", prompt: str = "a quiet lake at dawn",
             pause_reason: str = "") -> None:
        frame = np.zeros((64, 64, 3), np.uint8) + np.array(COLORS[index % len(COLORS)], np.uint8)
        ring = self.frames.write(frame, index)
        self.status.write(new_status(state=state, frame=index, frame_file=ring, fps=fps, target_fps=fps,
                                     keyframes=index // 2, prompt=prompt, comfyui="connected",
                                     pause_reason=pause_reason))


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Browser:
    chromium = Browser(BROWSER, tmp_path_factory.mktemp("profile"))
    chromium.call("Emulation.setDeviceMetricsOverride", width=320, height=240, deviceScaleFactor=1, mobile=False)
    yield chromium
    chromium.close()


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


def center(browser: Browser, path: Path) -> tuple[int, int, int]:
    """Colour in the middle of the picture area (above the status bar) of a fresh screenshot."""
    with Image.open(browser.screenshot(path)) as image:
        return image.convert("RGB").getpixel((image.width // 2, image.height // 3))


def bar_is_on_top(browser: Browser, path: Path) -> bool:
    """The status bar (dark, bottom rows) covers the picture: it must not be hidden behind it."""
    with Image.open(path) as image:
        r, g, b = image.convert("RGB").getpixel((image.width - 3, image.height - 3))
    return max(r, g, b) < 90


def close_to(color: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 6) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(color, expected))


def test_frames_and_status_show_from_file_urls_without_any_relaxed_flag(browser: Browser, site: Site) -> None:
    site.show(0, fps=10.0)
    browser.navigate(site.page + "?poll=50")
    browser.wait_for("window.reverieState.shown === 0")
    assert close_to(center(browser, site.shots / "web_frame0.png"), COLORS[0])
    assert browser.evaluate("document.getElementById('status').textContent") == \
        "live  |  frame 0  |  keyframes 0  |  10.0 fps"
    assert browser.evaluate("document.getElementById('prompt').textContent") == "a quiet lake at dawn"
    site.show(1, fps=10.0, prompt="a forest of glass")
    browser.wait_for("window.reverieState.shown === 1")
    assert close_to(center(browser, site.shots / "web_frame1.png"), COLORS[1])
    assert bar_is_on_top(browser, site.shots / "web_frame1.png")
    assert browser.evaluate("document.getElementById('status').textContent") == \
        "live  |  frame 1  |  keyframes 0  |  10.0 fps"
    assert browser.evaluate("document.getElementById('prompt').textContent") == "a forest of glass"
    assert browser.evaluate("window.reverieState.cuts") >= 1 and browser.evaluate("window.reverieState.errors") == 0


def test_slow_frames_crossfade_and_fast_ones_cut(browser: Browser, site: Site) -> None:
    site.show(0, fps=0.1)
    browser.navigate(site.page + "?poll=50&fade=3000")
    browser.wait_for("window.reverieState.shown === 0")
    browser.wait_for("getComputedStyle(document.querySelector('img.front')).opacity === '1'", timeout=8)
    site.show(1, fps=0.1)
    browser.wait_for("window.reverieState.shown === 1")
    browser.wait_for("(o => o > 0.3 && o < 0.7)(+getComputedStyle(document.getElementById("
                     "window.reverieState.front)).opacity)", timeout=5)
    middle = center(browser, site.shots / "web_midfade.png")
    assert not close_to(middle, COLORS[0]) and not close_to(middle, COLORS[1]), f"no blend: {middle}"
    browser.wait_for("window.reverieState.fades >= 2")
    browser.wait_for("(() => { const s = getComputedStyle(document.querySelectorAll('img.front')[0]); "
                     "return document.querySelectorAll('img.front').length === 1 && s.opacity === '1'; })()", timeout=8)
    assert close_to(center(browser, site.shots / "web_afterfade.png"), COLORS[1])
    fades = browser.evaluate("window.reverieState.fades")
    site.show(2, fps=10.0)
    browser.wait_for("window.reverieState.shown === 2")
    assert browser.evaluate("window.reverieState.fades") == fades
    assert close_to(center(browser, site.shots / "web_cut.png"), COLORS[2])


def test_states_read_as_words(browser: Browser, site: Site) -> None:
    site.show(5, fps=0.0, state="waiting_for_comfyui")
    browser.navigate(site.page + "?poll=50")
    text = browser.wait_for("(t => t.startsWith('waiting') && t)(document.getElementById('status').textContent)")
    assert text == "waiting for ComfyUI  |  frame 5  |  keyframes 2  |  0.0 fps"


def test_a_pause_with_a_reason_reads_paused_colon_reason(browser: Browser, site: Site) -> None:
    site.show(6, fps=10.0, state="paused", pause_reason="full screen </b> game")
    browser.navigate(site.page + "?poll=50")
    text = browser.wait_for("(t => t.startsWith('paused') && t)(document.getElementById('status').textContent)")
    assert text == "paused: full screen </b> game  |  frame 6  |  keyframes 3  |  10.0 fps"
    site.show(7, fps=10.0, state="paused")  # no reason: the plain word
    browser.wait_for("window.reverieState.shown === 7")
    assert browser.evaluate("document.getElementById('status').textContent").startswith("paused  |  frame 7")


def test_without_status_js_the_page_says_the_daemon_is_not_running(browser: Browser, site: Site) -> None:
    browser.navigate(site.page + "?poll=50")
    text = browser.wait_for("(t => t.includes('not running') && t)(document.getElementById('status').textContent)")
    assert text == "Reverie is not running (no status.js yet)"
    site.show(0, fps=10.0)  # the daemon starts: the page picks it up without a reload
    browser.wait_for("window.reverieState.shown === 0")


def test_output_query_parameter_points_anywhere(browser: Browser, tmp_path: Path) -> None:
    site = Site(tmp_path)
    elsewhere = tmp_path / "somewhere else" / "out"
    site.frames, site.status = FrameWriter(elsewhere), StatusWriter(elsewhere)
    site.show(3, fps=10.0)
    browser.navigate(site.page + "?poll=50&output=" + elsewhere.as_uri() + "/")
    browser.wait_for("window.reverieState.shown === 3")
    assert close_to(center(browser, site.shots / "web_override.png"), COLORS[3])


FPS_CASES = [9.876, 9.35, 9.25, 0.05, 0.0, 59.95, 12.345, 0.1]


def rainmeter_fps_text(fps: float) -> str:
    """The skin's text: MathParser's Round(x, 1) = floor(x * 10 + 0.5) / 10, printed with '%.1f'."""
    return f"{math.floor(fps * 10 + 0.5) / 10:.1f}"


def test_fps_is_rounded_to_one_decimal_like_the_skin(browser: Browser, site: Site) -> None:
    """9.876 -> 9.9 (the skin's old RegExp cut it to 9.8), 9.35 -> 9.4 (toFixed alone gives 9.3)."""
    site.show(0, fps=FPS_CASES[0])
    browser.navigate(site.page + "?poll=30")
    for index, fps in enumerate(FPS_CASES):
        if index:
            site.show(index, fps=fps)
        browser.wait_for(f"window.reverieState.shown === {index}")
        text = browser.evaluate("document.getElementById('status').textContent")
        assert text.endswith(f"  |  {rainmeter_fps_text(fps)} fps"), (fps, text)
    assert rainmeter_fps_text(9.876) == "9.9" and rainmeter_fps_text(9.35) == "9.4"
