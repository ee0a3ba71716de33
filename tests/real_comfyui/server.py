"""Start and stop a real ComfyUI (built by ``build.py``) on a free loopback port, for tests.

Script::

    python tests/real_comfyui/server.py setup   # build the cached venv once (~2 min cold), prints the time
    python tests/real_comfyui/server.py start   # prints the URL and pid; the server keeps running
    python tests/real_comfyui/server.py stop    # stops the server that `start` left running

Module::

    with RealComfyUI() as server:      # ~11-15 s until /system_stats answers
        server.url, server.input_dir, server.output_dir
        server.kill(); server.restart()   # a crash (SIGKILL) and a fresh start on the same port

Each server gets a throwaway base folder (models/, input/, output/, temp/, user/, comfyui.log)
with ``models/checkpoints/placeholder.safetensors``: not a real checkpoint, so the built-in SD 1.5
templates pass validation and then fail at CheckpointLoaderSimple. It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

if __package__ in (None, ""):   # run as a script: make the `tests` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.real_comfyui import build  # noqa: E402

PLACEHOLDER_CHECKPOINT = "placeholder.safetensors"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def warm_up(url: str, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    """Run one tiny model-free prompt on the server at `url` and delete its history.

    A fresh ComfyUI spends ~1 s on its first prompt, during which WebSocket events lag behind
    HTTP answers; tests that are not about that start-up warm the server first.
    """
    graph = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
             "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
             "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
        with direct.open(request, timeout=10) as response:
            text = response.read()
        return json.loads(text) if text.strip() else {}

    prompt_id = call("/prompt", {"prompt": graph})["prompt_id"]
    deadline = time.monotonic() + timeout
    while not call(f"/history/{prompt_id}"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"ComfyUI at {url} did not finish a warm-up prompt within {timeout:.0f} s")
        if process is None:
            time.sleep(0.05)                 # polling: the server pushes nothing to a client without a socket
            continue
        try:
            process.wait(timeout=0.05)       # the same interval, but a crash ends the wait at once
            raise RuntimeError(f"ComfyUI exited during its warm-up prompt (exit {process.returncode})")
        except subprocess.TimeoutExpired:
            pass
    call("/history", {"delete": [prompt_id]})


class RealComfyUI:
    """A real ComfyUI child process with its own folders; a context manager that cleans up after itself."""

    def __init__(self, *, root: Path | None = None, base_dir: Path | None = None, port: int | None = None,
                 start_timeout: float = 120.0, websocket_node: bool = True) -> None:
        self.root = root or build.home()
        self.base_dir = Path(base_dir) if base_dir else None   # a fresh temp folder from start() on
        self._own_base_dir = base_dir is None
        self.port = port or free_port()
        self.start_timeout = start_timeout
        self.websocket_node = websocket_node   # False: an install without SaveImageWebsocket (like ComfyUI Desktop)
        self.process: subprocess.Popen | None = None
        self._warm_pid: int | None = None

    url = property(lambda self: f"http://127.0.0.1:{self.port}")
    input_dir = property(lambda self: self.base_dir / "input")
    output_dir = property(lambda self: self.base_dir / "output")
    temp_dir = property(lambda self: self.base_dir / "temp")
    log_path = property(lambda self: self.base_dir / "comfyui.log")
    pid = property(lambda self: self.process.pid if self.process else None)

    def command(self) -> list[str]:
        return [str(build.venv_python(self.root)), str(build.comfyui_dir(self.root) / "main.py"),
                "--cpu", "--listen", "127.0.0.1", "--port", str(self.port), "--disable-auto-launch",
                "--base-directory", str(self.base_dir), "--input-directory", str(self.input_dir),
                "--output-directory", str(self.output_dir), "--temp-directory", str(self.temp_dir),
                "--database-url", "sqlite:///:memory:"]

    def start(self) -> "RealComfyUI":
        """Launch and block until ``/system_stats`` answers; RuntimeError (with the log tail) otherwise,
        after which the throwaway folders are already gone."""
        if not build.is_ready(self.root):
            raise RuntimeError(f"real ComfyUI not set up in {self.root}: run python tests/real_comfyui/server.py setup")
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="reverie-comfyui-"))
        try:
            self._launch()
        except RuntimeError:
            self.close()
            raise
        return self

    def _launch(self) -> None:
        checkpoints = self.base_dir / "models" / "checkpoints"
        for folder in (checkpoints, self.base_dir / "custom_nodes", self.input_dir, self.output_dir, self.temp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        (checkpoints / PLACEHOLDER_CHECKPOINT).write_bytes(b"Reverie test placeholder, not a checkpoint\n")
        # A manual install ships custom_nodes/websocket_image_save.py (SaveImageWebsocket); --base-directory
        # moves custom_nodes into our folder, so put it there as a default install has it.
        shipped = build.comfyui_dir(self.root) / "custom_nodes" / "websocket_image_save.py"
        mirrored = self.base_dir / "custom_nodes" / shipped.name
        if self.websocket_node:
            shutil.copyfile(shipped, mirrored)
        else:
            mirrored.unlink(missing_ok=True)
        log = self.log_path.open("ab")
        flags = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if os.name == "nt" else {"start_new_session": True}
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(self.command(), cwd=self.base_dir, stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=subprocess.STDOUT, env=env, **flags)
        log.close()
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # never via an http_proxy
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode} while starting:\n{self.log_tail()}")
            try:
                with direct.open(self.url + "/system_stats", timeout=2) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            # The port opens only after every node module is imported (11-15 s): poll twice a second.
            try:
                self.process.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        raise RuntimeError(f"ComfyUI did not answer /system_stats within {self.start_timeout:.0f} s:\n{self.log_tail()}")

    def warm_up(self, timeout: float = 60.0) -> None:
        """See the module function `warm_up`; also notices the process dying meanwhile."""
        warm_up(self.url, timeout, process=self.process)
        self._warm_pid = self.pid

    @property
    def is_warm(self) -> bool:
        """True once the running process has finished a warm_up() prompt."""
        return self.process is not None and self.process.poll() is None and self._warm_pid == self.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """Die like a crash (SIGKILL / TerminateProcess): sockets drop with no goodbye."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask politely (SIGTERM), then kill; the folders stay until ``close``."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> "RealComfyUI":
        """Stop if running, then start again on the same port with the same folders (history is gone)."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop and delete the throwaway folders this object created."""
        self.stop()
        if self._own_base_dir and self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None

    def __enter__(self) -> "RealComfyUI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def _state_file() -> Path:
    return build.home() / "running.json"


def _cmd_setup() -> int:
    began = time.monotonic()
    try:
        built = build.setup()
    except build.SetupError as error:
        print(error, file=sys.stderr)
        return 1
    what = "built" if built else "already built"
    print(f"real ComfyUI {build.COMFYUI_VERSION} {what} in {time.monotonic() - began:.1f} s at {build.home()}")
    return 0


def _recorded() -> tuple[dict | None, object | None]:
    """The server `start` recorded, and its live psutil.Process (None when gone or when the pid now
    belongs to another program: never signal a stranger)."""
    import psutil   # only start/stop need it; `setup` must run before the dev requirements are installed

    try:
        state = json.loads(_state_file().read_text())
        process = psutil.Process(state["pid"])
        if str(build.comfyui_dir() / "main.py") in process.cmdline():
            return state, process
        return state, None
    except (OSError, ValueError, KeyError, psutil.Error):
        return None, None


def _cmd_start() -> int:
    state, process = _recorded()
    if process is not None:
        print(f"already running: {state['url']} pid {state['pid']} (run `server.py stop` first)", file=sys.stderr)
        return 1
    began = time.monotonic()
    server = RealComfyUI()
    try:
        server.start()
    except RuntimeError as error:
        print(error, file=sys.stderr)
        server.close()
        return 1
    _state_file().write_text(json.dumps({"pid": server.pid, "url": server.url, "base_dir": str(server.base_dir)}))
    print(f"{server.url} pid {server.pid} (ready in {time.monotonic() - began:.1f} s; folders in {server.base_dir})")
    return 0


def _cmd_stop() -> int:
    import psutil

    state, process = _recorded()
    if state is None:
        print("no server started by `server.py start` is recorded", file=sys.stderr)
        return 1
    if process is not None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except psutil.TimeoutExpired:
            process.kill()
    shutil.rmtree(state["base_dir"], ignore_errors=True)
    _state_file().unlink(missing_ok=True)
    print(f"stopped pid {state['pid']} ({state['url']})" if process else f"pid {state['pid']} was already gone")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["setup", "start", "stop"])
    args = parser.parse_args(argv)
    return {"setup": _cmd_setup, "start": _cmd_start, "stop": _cmd_stop}[args.command]()


if __name__ == "__main__":
    sys.exit(main())
