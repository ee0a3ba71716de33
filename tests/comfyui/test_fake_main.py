"""`python -m tests.fake_comfyui` runs the fake standalone, as the lead uses it to try the daemon."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import requests

from tests.conftest import REPO_ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_module_entry_point_serves_system_stats():
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.fake_comfyui", "--port", str(port), "--latency", "0",
                             "--ws-lag", "0.1"],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                stats = requests.get(f"http://127.0.0.1:{port}/system_stats", timeout=1).json()
                break
            except requests.RequestException:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read()
                time.sleep(0.1)
        assert stats["system"]["comfyui_version"] == "0.3.75"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
