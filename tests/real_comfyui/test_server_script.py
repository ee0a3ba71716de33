"""The build/start script itself, without building anything (runs everywhere, no real server)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import requests

from tests.real_comfyui import build, server
from tests.real_comfyui.server import RealComfyUI


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    monkeypatch.setenv("REVERIE_COMFYUI_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_home_follows_the_environment_override(empty_home):
    assert build.home() == empty_home
    assert build.comfyui_dir() == empty_home / "comfyui"
    assert build.venv_python().parent.parent == empty_home / "venv"


def test_requirements_drop_the_torch_family_and_spandrel_and_add_requests(tmp_path):
    (tmp_path / "requirements.txt").write_text(
        "comfyui-frontend-package==1.32.9\ntorch\ntorchsde\ntorchvision\ntorchaudio\nnumpy>=1.25.0\n"
        "\n#non essential dependencies:\nkornia>=0.7.1\nspandrel\npydantic~=2.0\n")
    assert build._requirements(tmp_path) == [
        "comfyui-frontend-package==1.32.9", "torchsde", "numpy>=1.25.0", "kornia>=0.7.1", "pydantic~=2.0",
        "requests"]


def test_a_home_without_a_matching_ready_stamp_is_not_ready(empty_home):
    assert not build.is_ready()
    empty_home.mkdir(parents=True)
    (empty_home / "ready.json").write_text(json.dumps({**build._stamp(), "torch": "torch==1.0"}))
    assert not build.is_ready()


def test_start_without_setup_names_the_setup_command(empty_home):
    with pytest.raises(RuntimeError, match="run python tests/real_comfyui/server.py setup"):
        RealComfyUI().start()


def test_stop_without_a_started_server_fails_with_a_message(empty_home, capsys):
    assert server.main(["stop"]) == 1
    assert "no server started" in capsys.readouterr().err


def test_free_port_can_be_bound_on_loopback():
    port = server.free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", port))


def test_command_listens_on_loopback_only_with_throwaway_folders(empty_home, tmp_path):
    instance = RealComfyUI(base_dir=tmp_path / "base", port=8765)
    command = instance.command()
    assert command[command.index("--listen") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == "8765"
    for flag, folder in (("--input-directory", "input"), ("--output-directory", "output"),
                         ("--temp-directory", "temp"), ("--base-directory", "")):
        assert command[command.index(flag) + 1] == str(tmp_path / "base" / folder).rstrip("/\\")
    assert instance.url == "http://127.0.0.1:8765"


def test_torchvision_stub_imports_like_comfyui_needs_and_raises_on_use(tmp_path):
    (tmp_path / "torchvision").mkdir()
    (tmp_path / "torchvision" / "__init__.py").write_text(build._TORCHVISION_STUB)
    probe = (
        "import inspect, torchvision\n"
        "import torchvision.transforms as T\n"
        "from torchvision import transforms\n"
        "from torchvision.ops import nms\n"
        "assert T is transforms and torchvision.__file__.startswith(%r)\n"
        "inspect.getmodule(inspect)\n"           # walks sys.modules probing __file__: must not raise
        "try:\n    torchvision.models.efficientnet_v2_s()\nexcept RuntimeError as e:\n    print(e)\n"
    ) % str(tmp_path)
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=str(tmp_path)), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "torchvision.models.efficientnet_v2_s: torchvision is stubbed" in result.stdout


@pytest.mark.real_comfyui
def test_cli_start_prints_the_url_refuses_a_second_start_and_stop_ends_it(tmp_path):
    if not build.is_ready():
        pytest.skip("real ComfyUI not set up: run python tests/real_comfyui/server.py setup")
    if (build.home() / "running.json").exists():
        pytest.skip("a server started by `server.py start` is recorded; the test would disturb it")
    script = [sys.executable, str(Path(server.__file__))]
    started = subprocess.run(script + ["start"], capture_output=True, text=True, timeout=180)
    try:
        assert started.returncode == 0, started.stderr
        url, pid = started.stdout.split()[0], int(started.stdout.split()[2])
        assert url.startswith("http://127.0.0.1:")
        assert requests.get(url + "/system_stats", timeout=10).json()["system"]["comfyui_version"] == "0.3.75"
        again = subprocess.run(script + ["start"], capture_output=True, text=True, timeout=60)
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        stopped = subprocess.run(script + ["stop"], capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 0 and f"stopped pid {pid}" in stopped.stdout
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
