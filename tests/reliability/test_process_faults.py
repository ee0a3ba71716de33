"""The daemon as a process: a VAE that decodes NaNs, running without a console (pythonw), a
checkpoint ComfyUI lacks, and the Windows console-close path driven through its seam."""

from __future__ import annotations

import signal
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.fake_comfyui import FakeComfyUI
from tests.reliability.conftest import (history_indices, pixels, read_status, save_tiny_vae, start_daemon,
                                        wait_until, write_config)

# pythonw: no console, so sys.stdout and sys.stderr are None; then main.py runs as a script.
PYTHONW = ("import runpy, sys\n"
           "sys.stdout = sys.stderr = sys.__stdout__ = sys.__stderr__ = None\n"
           "sys.argv = sys.argv[1:]\n"
           "runpy.run_path(sys.argv[0], run_name='__main__')\n")


def images_folder(tmp_path: Path, count: int = 2) -> dict:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    for i in range(count):
        Image.fromarray(np.full((64, 64, 3), 50 + 100 * i, np.uint8)).save(images / f"{i}.png")
    return {"source": "folder", "folder": "images"}


@pytest.fixture(scope="module")
def nan_vae(tmp_path_factory) -> Path:
    return save_tiny_vae(tmp_path_factory.mktemp("vae") / "nan-vae", nan_decoder=True)


def test_a_vae_that_decodes_nan_stops_with_a_clear_error_and_never_shows_a_black_frame(tmp_path, nan_vae):
    write_config(tmp_path, nan_vae, keyframes=images_folder(tmp_path))
    daemon = start_daemon(tmp_path, "--max-frames", "5")
    _, stderr = daemon.communicate(timeout=180)
    assert daemon.returncode in (1, 2)
    assert "NaN" in stderr
    assert not (tmp_path / "out" / "current_frame.png").exists()
    assert not list((tmp_path / "out").rglob("frame_*.png"))
    status = read_status(tmp_path)
    assert status["state"] == "error" and "NaN" in status["last_error"]


def test_a_vae_that_decodes_nan_exits_2_in_one_sentence(tmp_path, nan_vae):
    write_config(tmp_path, nan_vae, keyframes=images_folder(tmp_path), logging={"file": None, "level": "INFO"})
    daemon = start_daemon(tmp_path, "--max-frames", "5")
    _, stderr = daemon.communicate(timeout=180)
    assert daemon.returncode == 2 and "Traceback" not in stderr


def test_without_a_console_the_daemon_runs_logs_to_its_file_and_stops_cleanly(tmp_path, tiny_vae):
    write_config(tmp_path, tiny_vae, keyframes=images_folder(tmp_path), logging={"file": "out/reverie.log",
                                                                                  "level": "DEBUG"})
    daemon = start_daemon(tmp_path, "--max-frames", "6", wrapper=PYTHONW)
    stdout, stderr = daemon.communicate(timeout=180)
    assert daemon.returncode == 0, (stdout, stderr)
    assert stdout == stderr == ""
    assert read_status(tmp_path)["state"] == "stopped"
    assert history_indices(tmp_path / "out") == list(range(6))
    log = (tmp_path / "out" / "reverie.log").read_text(encoding="utf-8")
    assert "stopped after 6 frames" in log and "Traceback" not in log


def test_without_a_console_a_bad_config_still_exits_2_quietly(tmp_path, tiny_vae):
    (tmp_path / "config.yaml").write_text("display: {fps: 0}\n")
    daemon = start_daemon(tmp_path, "--max-frames", "1", wrapper=PYTHONW)
    stdout, stderr = daemon.communicate(timeout=60)
    assert (daemon.returncode, stdout, stderr) == (2, "", "")


def test_a_checkpoint_comfyui_lacks_exits_2_naming_the_available_ones_before_any_frame(tmp_path, tiny_vae):
    with FakeComfyUI() as fake:
        write_config(tmp_path, tiny_vae, fake.url, comfyui={"url": fake.url, "checkpoint": "nope.safetensors"})
        daemon = start_daemon(tmp_path, "--max-frames", "3")
        _, stderr = daemon.communicate(timeout=120)
    assert daemon.returncode == 2
    assert "nope.safetensors" in stderr and "v1-5-pruned-emaonly.safetensors" in stderr
    assert "Traceback" not in stderr
    # No frame files at all; only the status says "error" (so the skin shows why) and the log.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["reverie.log", "status.js", "status.json",
                                                                    "status.txt"]
    assert read_status(tmp_path)["state"] == "error"


class FakeKernel32:
    """Stands in for ctypes.WinDLL('kernel32'): keeps the HandlerRoutine that main registers."""

    def __init__(self) -> None:
        self.routines: list = []

    def SetConsoleCtrlHandler(self, routine, add):  # noqa: N802 - the Win32 name
        self.routines.append(routine)
        return 1


def test_console_close_through_the_seam_stops_main_with_a_stopped_status_before_the_handler_returns(
        tmp_path, tiny_vae, monkeypatch):
    """main() as on Windows: its Shutdown registers the console handler (with a fake kernel32); a
    close event arrives on another thread, as Windows sends it; the handler must not return before
    the last status is written, because Windows ends the process the moment it returns."""
    import logging

    import backend.shutdown as shutdown_module
    from backend.main import main
    from backend.shutdown import CTRL_CLOSE_EVENT

    kernel32 = FakeKernel32()
    real_install = shutdown_module.install_console_handler
    monkeypatch.setattr(shutdown_module, "sys", types.SimpleNamespace(platform="win32"))
    monkeypatch.setattr(shutdown_module, "install_console_handler",
                        lambda shutdown, *a, **k: real_install(shutdown, kernel32, close_wait=10.0))
    config = write_config(tmp_path, tiny_vae, keyframes=images_folder(tmp_path), display={"history_keep": 0},
                          logging={"file": None, "level": "INFO"})
    seen: dict = {}

    def windows() -> None:
        wait_until(lambda: (read_status(tmp_path) or {}).get("frame", -1) >= 3, timeout=120, what="frames")
        sent = time.monotonic()
        seen["returned"] = kernel32.routines[0](CTRL_CLOSE_EVENT)
        seen["seconds"] = time.monotonic() - sent
        seen["state_on_return"] = read_status(tmp_path)["state"]

    closer = threading.Thread(target=windows, daemon=True)
    closer.start()
    try:
        code = main(["--config", str(config)])
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if getattr(h, "_reverie_handler", False)]:
            root.removeHandler(handler)
            handler.close()
    closer.join(15)
    assert code == 0
    assert seen["returned"] == 1 and seen["state_on_return"] == "stopped"
    assert seen["seconds"] < 5.0
    assert pixels(tmp_path / "out" / "current_frame.png").shape == (64, 64, 3)


def test_a_second_daemon_on_the_same_output_folder_exits_2_naming_the_first_ones_pid(tmp_path, tiny_vae):
    write_config(tmp_path, tiny_vae, keyframes=images_folder(tmp_path), display={"history_keep": 0})
    first = start_daemon(tmp_path)
    try:
        wait_until(lambda: (read_status(tmp_path) or {}).get("frame", -1) >= 2, timeout=120, what="the first's frames",
                   check=lambda: first.poll() is None or pytest.fail(f"the first daemon ended: {first.communicate()}"))
        second = start_daemon(tmp_path, "--max-frames", "1")
        stdout, stderr = second.communicate(timeout=120)
        assert second.returncode == 2
        assert f"PID {first.pid}" in stderr and "already running" in stderr
        assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
        assert first.poll() is None                           # the first one carries on, its lock kept
        assert f'"pid": {first.pid}' in (tmp_path / "out" / "reverie.lock").read_text(encoding="utf-8")
        # the lock is taken before logging starts: the second wrote nothing into the first's log
        assert "already running" not in (tmp_path / "out" / "reverie.log").read_text(encoding="utf-8")
    finally:
        if sys.platform == "win32":
            first.kill()
        else:
            first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    if sys.platform != "win32":                                # a clean stop gives the folder back
        assert first.returncode == 0
        assert not (tmp_path / "out" / "reverie.lock").exists()
        third = start_daemon(tmp_path, "--max-frames", "2")
        _, stderr = third.communicate(timeout=120)
        assert third.returncode == 0, stderr
