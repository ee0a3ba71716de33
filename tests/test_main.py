"""The command line: parsing, exit codes, instant --help, logging without a console, and the
stop paths (signals, and the Windows console-handler logic driven through its seam)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from backend.logging_setup import setup_logging
from backend.main import parse_args
from backend.shutdown import (CTRL_BREAK_EVENT, CTRL_C_EVENT, CTRL_CLOSE_EVENT, Shutdown,
                              console_handler, install_console_handler)

REPO = Path(__file__).resolve().parent.parent
MAIN = REPO / "backend" / "main.py"


def run(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def probe(code: str, cwd: Path) -> str:
    """Run `code` in a fresh interpreter with the repo importable; returns its stdout."""
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_arguments_parse_with_defaults():
    args = parse_args([])
    assert args.max_frames is None and args.config.name == "config.yaml" and args.config.parent == REPO
    args = parse_args(["--max-frames", "30", "--fps", "5", "--source", "folder", "--config", "x.yaml"])
    assert (args.max_frames, args.fps, args.source, args.config) == (30, 5.0, "folder", Path("x.yaml"))


@pytest.mark.parametrize("bad", [["--max-frames", "0"], ["--max-frames", "x"], ["--source", "web"], ["--nope"]])
def test_bad_arguments_exit_2(bad, capsys):
    with pytest.raises(SystemExit) as stop:
        parse_args(bad)
    assert stop.value.code == 2


def test_help_imports_neither_torch_nor_diffusers(tmp_path):
    out = probe("import sys\nfrom backend.main import main\ntry:\n    main(['--help'])\nexcept SystemExit as e:\n"
                "    print(e.code, 'torch' in sys.modules, 'diffusers' in sys.modules)", tmp_path)
    assert out.splitlines()[-1] == "0 False False"


def test_script_and_module_invocations_both_work(tmp_path):
    script = run(str(MAIN), "--version", cwd=tmp_path)
    module = subprocess.run([sys.executable, "-m", "backend.main", "--version"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert script.returncode == module.returncode == 0
    assert script.stdout.startswith("Reverie ") and script.stdout == module.stdout


BAD_CONFIG = """
generation:
  resolution: [500, 512]
  hybrid: {keyframe_denoise: 3}
display: {fps: 0, output_dir: out}
logging: {file: out/reverie.log}
"""


def test_a_bad_config_exits_2_listing_every_problem_writing_nothing_and_importing_no_torch(tmp_path):
    (tmp_path / "config.yaml").write_text(BAD_CONFIG)
    done = run(str(MAIN), "--config", "config.yaml", cwd=tmp_path)
    assert done.returncode == 2
    for key in ("generation.resolution", "generation.hybrid.keyframe_denoise", "display.fps"):
        assert key in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]
    out = probe("import sys\nfrom backend.main import main\nprint(main(['--config', 'config.yaml']), "
                "'torch' in sys.modules)", tmp_path)
    assert out.splitlines()[-1] == "2 False"


def test_a_missing_config_file_exits_2_with_one_clear_message(tmp_path):
    done = run(str(MAIN), "--config", "nope.yaml", cwd=tmp_path)
    assert done.returncode == 2 and "config file not found" in done.stderr and "Traceback" not in done.stderr


def test_an_empty_image_folder_exits_2_in_one_sentence(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "config.yaml").write_text("keyframes: {source: folder, folder: imgs}\n"
                                          "display: {output_dir: out}\nlogging: {file: null}\ncontrol: {file: null}\n")
    done = run(str(MAIN), "--config", "config.yaml", "--max-frames", "1", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "No images found in" in done.stderr and "Traceback" not in done.stderr


def test_an_unreadable_start_image_exits_2_in_one_sentence(tmp_path):
    (tmp_path / "start.png").write_bytes(b"not a png")
    (tmp_path / "config.yaml").write_text("keyframes: {start_image: start.png}\ncomfyui: {url: 'http://127.0.0.1:9'}\n"
                                          "display: {output_dir: out}\nlogging: {file: null}\ncontrol: {file: null}\n")
    done = run(str(MAIN), "--config", "config.yaml", "--max-frames", "1", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "start image" in done.stderr and "Traceback" not in done.stderr


# -- stopping ---------------------------------------------------------------------------------

class FakeKernel32:
    """Stands in for ctypes.WinDLL('kernel32'): records the registered HandlerRoutine."""

    def __init__(self, result: int = 1) -> None:
        self.result, self.registered = result, []

    def SetConsoleCtrlHandler(self, routine, add):  # noqa: N802 - the Win32 name
        self.registered.append((routine, add))
        return self.result


@pytest.mark.parametrize("event", [CTRL_C_EVENT, CTRL_BREAK_EVENT])
def test_console_ctrl_c_and_ctrl_break_request_a_stop_and_are_handled(event):
    shutdown = Shutdown()
    kernel32 = FakeKernel32()
    callback = install_console_handler(shutdown, kernel32)
    assert kernel32.registered == [(callback, True)]
    assert callback(event) == 1  # called through ctypes, as Windows would
    assert shutdown.stop.is_set()


def test_console_close_waits_for_the_main_loop_to_finish_before_returning():
    shutdown = Shutdown()
    callback = install_console_handler(shutdown, FakeKernel32(), close_wait=5.0)
    returned = []
    caller = threading.Thread(target=lambda: returned.append(callback(CTRL_CLOSE_EVENT)))
    caller.start()
    assert shutdown.stop.wait(2.0)
    time.sleep(0.2)
    assert not returned  # still waiting: Windows would kill the process on return
    shutdown.finished.set()
    caller.join(2.0)
    assert returned == [1]


def test_console_close_gives_up_waiting_after_close_wait():
    handler = console_handler(Shutdown(), close_wait=0.1)
    started = time.monotonic()
    assert handler(CTRL_CLOSE_EVENT) == 1
    assert time.monotonic() - started < 1.0


def test_unknown_console_events_are_passed_on():
    shutdown = Shutdown()
    assert console_handler(shutdown)(99) == 0 and not shutdown.stop.is_set()


def test_a_failed_registration_is_reported():
    with pytest.raises(OSError, match="SetConsoleCtrlHandler"):
        install_console_handler(Shutdown(), FakeKernel32(result=0))


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is POSIX")
def test_sigterm_and_sigint_set_the_stop_event_and_uninstall_restores_handlers():
    before = signal.getsignal(signal.SIGTERM)
    shutdown = Shutdown().install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert shutdown.stop.wait(2.0) and shutdown.reason == "SIGTERM"
    finally:
        shutdown.uninstall()
    assert signal.getsignal(signal.SIGTERM) is before


def test_logging_works_without_a_console_as_under_pythonw(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stderr", None)
    monkeypatch.setattr(sys, "stdout", None)
    log_file = tmp_path / "logs" / "reverie.log"
    handlers = setup_logging("INFO", log_file)
    try:
        assert [type(h).__name__ for h in handlers] == ["RotatingFileHandler"]
        logging.getLogger("backend.test").info("hello from pythonw")
        for handler in handlers:
            handler.flush()
        assert "hello from pythonw" in log_file.read_text(encoding="utf-8")
    finally:
        for handler in handlers:
            logging.getLogger().removeHandler(handler)
            handler.close()


def save_random_taesd_pair(folder: Path) -> None:
    import torch

    from backend.interpolation.taesd import build_decoder, build_encoder

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(build_encoder(4, False).state_dict(), folder / "taesd_encoder.pth")
    torch.save(build_decoder(4, False).state_dict(), folder / "taesd_decoder.pth")


@pytest.mark.parametrize("where", ["models folder", "--vae"])
def test_a_cpu_user_with_a_taesd_pair_gets_frames_from_a_folder_with_the_default_vae_settings(tmp_path, where):
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    for name, colour in (("a.png", "red"), ("b.png", "blue")):
        Image.new("RGB", (80, 70), colour).save(tmp_path / "imgs" / name)
    save_random_taesd_pair(tmp_path / ("models" if where == "models folder" else "elsewhere"))
    (tmp_path / "config.yaml").write_text("generation: {resolution: [64, 64]}\nvae: {device: cpu}\n"
                                          "display: {output_dir: out, fps: 60}\nlogging: {file: null}\n"
                                          "control: {file: null}\n")
    extra = ["--vae", "elsewhere"] if where == "--vae" else []
    done = run(str(MAIN), "--config", "config.yaml", "--folder", "imgs", "--max-frames", "2", *extra,
               cwd=tmp_path, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out" / "current_frame.png").is_file()


def test_the_render_subcommand_runs_the_seed_walk_command_and_its_errors_exit_2_in_one_line(tmp_path):
    done = run(str(MAIN), "render", "--seeds", "7", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == "reverie render: a seed walk needs two or more seeds, got 1: pass e.g. --seeds 1 2"
    assert "--seeds SEED" in run(str(MAIN), "render", "--help", cwd=tmp_path).stdout


def test_help_names_the_autostart_flags_and_the_render_command(tmp_path):
    text = run(str(MAIN), "--help", cwd=tmp_path).stdout
    for flag in ("--install-autostart", "--remove-autostart", "--autostart-status", "backend/main.py render"):
        assert flag in text


def test_the_autostart_flags_are_exclusive(capsys):
    with pytest.raises(SystemExit) as stop:
        parse_args(["--install-autostart", "--remove-autostart"])
    assert stop.value.code == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="installs a Task Scheduler task elsewhere")
def test_autostart_install_status_remove_round_trip_through_main_into_a_private_systemd_folder(tmp_path):
    config = tmp_path / "my config.yaml"
    config.write_text("display: {fps: 5}\n")
    # A private XDG_CONFIG_HOME and no systemctl on PATH: the machine's own units are never touched.
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "PATH": str(Path(sys.executable).parent)}

    def main_with(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(MAIN), *args, "--config", str(config)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60, env=env)

    unit = tmp_path / "xdg" / "systemd" / "user" / "reverie.service"
    assert main_with("--autostart-status").stdout.strip() == "autostart is off"
    for _ in range(2):  # installing twice is the same as once
        done = main_with("--install-autostart")
        assert done.returncode == 0 and done.stdout.startswith("autostart on: systemd user unit"), done
    assert f'"--config" "{config}"' in unit.read_text(encoding="utf-8")   # the path with a space, quoted
    assert main_with("--autostart-status").stdout.strip() == f"autostart is on ({unit})"
    assert main_with("--remove-autostart").stdout.strip() == f"autostart off: removed {unit}"
    assert not unit.exists() and main_with("--autostart-status").stdout.strip() == "autostart is off"
    assert main_with("--remove-autostart").stdout.strip() == "autostart was not installed; nothing to remove"


def test_autostart_is_not_installed_for_a_config_that_does_not_load(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("display: {fps: 0}\n")
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "PATH": str(Path(sys.executable).parent)}
    done = subprocess.run([sys.executable, str(MAIN), "--install-autostart", "--config", str(config)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2 and "display.fps" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "xdg").exists()
