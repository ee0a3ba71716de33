"""Fixtures: the real ComfyUI 0.3.75 (session-wide) and `comfy_server`, one test against fake AND real.

The real server is used when ``REVERIE_REAL_COMFYUI_URL`` names a running one, or when the
cached venv exists (``python tests/real_comfyui/server.py setup``), in which case one server is
started for the whole session (11-15 s). Otherwise every real-server test is skipped with a reason.
Tests parametrized by ``comfy_server`` run against ``tests.fake_comfyui.FakeComfyUI`` and the real
server alike, so the fake cannot drift from reality unnoticed.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.real_comfyui import build
from tests.real_comfyui.raw import invert_graph
from tests.real_comfyui.server import PLACEHOLDER_CHECKPOINT, RealComfyUI, warm_up

NOT_SET_UP = "real ComfyUI not set up: run python tests/real_comfyui/server.py setup"


@dataclass(frozen=True)
class ServerUnderTest:
    """One server a test talks to: the fake, the real one we started, or an external real one."""

    kind: str                          # "fake" | "real"
    url: str                           # http://127.0.0.1:<port>
    input_dir: Path | None             # None for an external server (its folders are not ours to read)
    output_dir: Path | None
    checkpoint: str | None             # a checkpoint name the server lists (the placeholder on real)
    handle: object | None              # FakeComfyUI | RealComfyUI | None (external)

    def require_handle(self) -> object:
        """The controllable server; skips the test for an external server we may not kill."""
        if self.handle is None:
            pytest.skip("REVERIE_REAL_COMFYUI_URL names a server this test may not kill or restart")
        return self.handle

    def slow_graph(self, image_ref: str, seconds: float = 4.0, blurs: int = 3) -> dict:
        """A model-free job that stays running for a while: the fake is told to take `seconds`;
        the real server gets `blurs` 768x768 blurs (~1 s each on an idle core, interruptible between them),
        of a fresh colour each call: an identical graph would be served from ComfyUI's cache at once."""
        if self.kind == "fake":
            self.handle.latency = seconds
            return invert_graph(image_ref, prefix="reverie/slow")
        graph = {"1": {"class_type": "EmptyImage", "inputs": {"width": 768, "height": 768, "batch_size": 1,
                                                              "color": uuid.uuid4().int % (1 << 24)}}}
        for node in range(2, blurs + 2):
            graph[str(node)] = {"class_type": "ImageBlur",
                                "inputs": {"image": [str(node - 1), 0], "blur_radius": 31, "sigma": 5.0}}
        graph[str(blurs + 2)] = {"class_type": "PreviewImage", "inputs": {"images": [str(blurs + 1), 0]}}
        return graph

    def require_dirs(self) -> tuple[Path, Path]:
        if self.input_dir is None or self.output_dir is None:
            pytest.skip("the folders of the server at REVERIE_REAL_COMFYUI_URL are unknown to the tests")
        return self.input_dir, self.output_dir


def _external(url: str) -> ServerUnderTest:
    try:
        names = requests.get(url.rstrip("/") + "/models/checkpoints", timeout=10).json()
    except (requests.RequestException, ValueError) as error:
        pytest.fail(f"REVERIE_REAL_COMFYUI_URL={url} does not answer: {error}")
    checkpoint = PLACEHOLDER_CHECKPOINT if PLACEHOLDER_CHECKPOINT in names else None
    return ServerUnderTest("real", url.rstrip("/"), None, None, checkpoint, None)


@pytest.fixture(scope="session")
def real_server():
    """The real ComfyUI for this session, or a skip saying how to get one."""
    url = os.environ.get("REVERIE_REAL_COMFYUI_URL")
    if url:
        external = _external(url)
        warm_up(external.url)
        yield external
        return
    if not build.is_ready():
        pytest.skip(NOT_SET_UP)
    with RealComfyUI() as server:
        yield ServerUnderTest("real", server.url, server.input_dir, server.output_dir,
                              PLACEHOLDER_CHECKPOINT, server)


@pytest.fixture
def running_real_server(real_server):
    """The session's real server: restarted if an earlier test left it dead, and warmed up (one tiny
    prompt) after each start, so a test sees a settled server unless it restarts one itself."""
    handle = real_server.handle
    if handle is not None:
        if handle.process is None or handle.process.poll() is not None:
            handle.start()
        if not handle.is_warm:
            handle.warm_up()
    return real_server


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.real_comfyui)])
def comfy_server(request):
    """The same test against the fake and the real ComfyUI ("real" skips with a reason when absent)."""
    if request.param == "real":
        yield request.getfixturevalue("running_real_server")
        return
    from tests.fake_comfyui import FakeComfyUI

    with FakeComfyUI() as fake:
        yield ServerUnderTest("fake", fake.url, fake.root / "input", fake.root / "output",
                              fake.checkpoints[0], fake)

