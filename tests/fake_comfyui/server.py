"""FakeComfyUI: a real aiohttp server on 127.0.0.1, in a background thread, that speaks the
recorded ComfyUI 0.3.75 protocol (see ../../shared/comfyui/PROTOCOL.md) with switchable faults.

Faults are plain attributes, settable at any time from the test thread:
  latency / jitter (seconds per job), fail_next_execution (next k jobs end in execution_error),
  fail_next_validation (next k POST /prompt answer 400), kill_mid_run (next job: sockets dropped
  without a close frame, history and queue forgotten, the port closed for `restart_delay` s),
  silent_socket (no WebSocket events, history still written), output_fault ("huge" | "corrupt"
  output image), refuse_connections (stop listening / listen again on the same port), ws_lag
  (seconds every WebSocket message of a job arrives after it was produced, i.e. after the
  /history write it follows: a freshly started real ComfyUI lags like that, up to ~1 s),
  truncate_next_view (next k GET /view send half the image, then the connection drops, as when
  the server dies mid-download), models_status (HTTP status of GET /models/checkpoints: 404 like
  servers older than the /models routes, 500 for a broken answer).
The sampler is `sampler`: "exact" (default: nodes.fake_sample, recomputable by tests), "drift"
(drift.drift_sample with `drift_rates`: chained img2img's drift toward magenta, saturation,
contrast, sharpening and a fixed point), "collapse" (near-copies) or "black"; see drift.py.
`sampler_next` (a list of those modes) overrides it for the next sampler runs, one mode each.
Records: `free_calls` (the JSON body of every accepted POST /free, in order; a body that is not
JSON is answered 500 like the real server) and `peak_queue`. Its input/output/temp folders live under `root` (a temp dir by default):
see `file_counts()`.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import string
import tempfile
import threading
from pathlib import Path

import numpy as np
from aiohttp import web

from tests.fake_comfyui import drift, nodes, schemas
from tests.fake_comfyui.executor import Executor, Job
from tests.fake_comfyui.outbox import Outbox
from tests.fake_comfyui.routes import build_app


class FakeComfyUI:
    def __init__(self, *, root: Path | None = None, port: int = 0, latency: float = 0.0, jitter: float = 0.0,
                 checkpoints: list[str] | None = None, websocket_node: bool = True, previews: bool = True,
                 history_delay: float = 0.05, restart_delay: float = 0.3, ws_lag: float = 0.0,
                 version: str = "0.3.75"):
        self._tmp = None if root is not None else tempfile.TemporaryDirectory(prefix="fake_comfyui_")
        self.root = Path(root) if root is not None else Path(self._tmp.name)
        self.port, self.version = port, version
        self.latency, self.jitter = latency, jitter
        self.checkpoints = list(schemas.CHECKPOINTS if checkpoints is None else checkpoints)
        self.websocket_node, self.previews = websocket_node, previews
        self.history_delay, self.restart_delay = history_delay, restart_delay
        self.fail_next_execution = 0
        self.fail_next_validation = 0
        self.kill_mid_run = False
        self.silent_socket = False
        self.ws_lag = ws_lag
        self.output_fault: str | None = None
        self.truncate_next_view = 0
        self.models_status = 200
        # IP-Adapter (ComfyUI_IPAdapter_plus): off like a stock server; model_files answers
        # GET /models/<folder> for folders beyond the core ones (clip_vision is core: listed empty)
        self.ipadapter_nodes = False
        self.model_files: dict[str, list[str]] = {"clip_vision": []}
        self.model_routes = True                # False: /models/<those folders> 404, like servers before the routes
        self.sampler = "exact"                  # exact | drift | collapse | black (drift.MODES)
        self.drift_rates = drift.DriftRates()
        self.sampler_next: list[str] = []       # modes for the next sampler runs, one each, before `sampler`
        self._refusing = False
        self.history: dict[str, dict] = {}
        self.pending: list[Job] = []
        self.running: Job | None = None
        self.cache: dict = {}
        self.sockets: dict[str, tuple] = {}
        self.last_node_id: str | None = None
        self.interrupt_requested = False
        self._number = 0
        self.peak_queue = 0            # most prompts queued + running at once (one-job-in-flight tests)
        self.free_calls: list[dict] = []   # body of each POST /free, in order (e.g. pausing frees VRAM)
        self._temp_tag = "".join(random.choices(string.ascii_lowercase, k=5))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # -- lifecycle (test thread) ----------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FakeComfyUI":
        for sub in ("input", "output", "temp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-comfyui", daemon=True)
        self._thread.start()
        self._call(self._start_async())
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        self._call(self._stop_async())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
        self._loop = None
        if self._tmp is not None:
            self._tmp.cleanup()

    def restart(self) -> None:
        """A server restart: sockets dropped, history/queue/cache forgotten, files kept."""
        self._call(self._restart_async(0.0))

    def __enter__(self) -> "FakeComfyUI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def refuse_connections(self) -> bool:
        return self._refusing

    @refuse_connections.setter
    def refuse_connections(self, value: bool) -> None:
        if bool(value) != self._refusing:
            self._refusing = bool(value)
            self._call(self._unlisten() if value else self._listen())

    def drop_sockets(self) -> None:
        """Break every WebSocket without a close frame; the server itself stays up."""
        self._call(self._abort_sockets())

    def file_counts(self) -> dict[str, int]:
        """Number of files under input/, output/ and temp/ (for disk-bound tests)."""
        return {sub: sum(1 for p in (self.root / sub).rglob("*") if p.is_file())
                for sub in ("input", "output", "temp")}

    def _call(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- lifecycle (loop thread) ----------------------------------------------------------------
    async def _start_async(self) -> None:
        self._wake = asyncio.Event()
        self._worker = asyncio.ensure_future(self._work())
        self._outbox = Outbox()
        await self._listen()

    async def _stop_async(self) -> None:
        self._worker.cancel()
        self._outbox.close()
        await self._unlisten()

    async def _listen(self) -> None:
        self._runner = web.AppRunner(build_app(self), handle_signals=False, shutdown_timeout=0.5,
                                     access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)   # asyncio sets SO_REUSEADDR on POSIX
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _abort_sockets(self) -> None:
        for sock, request, _ in list(self.sockets.values()):
            if request.transport is not None:
                request.transport.abort()        # no close frame: the client sees an abnormal close (1006)
        self.sockets.clear()

    async def _unlisten(self) -> None:
        await self._abort_sockets()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _restart_async(self, down_for: float) -> None:
        await self._unlisten()
        self._outbox.clear()
        self.history.clear()
        self.pending.clear()
        self.running, self.last_node_id, self.cache = None, None, {}
        await asyncio.sleep(down_for)
        if not self._refusing:
            await self._listen()

    async def kill_now(self) -> None:
        await self._restart_async(self.restart_delay)

    async def _work(self) -> None:
        executor = Executor(self)
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.pending:
                job = self.pending.pop(0)
                self.running = job
                await self.broadcast_status()
                await executor.run(job)
                self.running = None

    # -- used by routes and executor (loop thread) ----------------------------------------------
    async def enqueue(self, job: Job) -> None:
        self.pending.append(job)
        self.peak_queue = max(self.peak_queue, len(self.pending) + (self.running is not None))
        await self.broadcast_status()
        self._wake.set()

    def next_number(self) -> int:
        self._number += 1
        return self._number - 1

    def take_execution_fault(self) -> bool:
        if self.fail_next_execution > 0:
            self.fail_next_execution -= 1
            return True
        return False

    def take_validation_fault(self) -> bool:
        if self.fail_next_validation > 0:
            self.fail_next_validation -= 1
            return True
        return False

    def take_view_truncation(self) -> bool:
        if self.truncate_next_view > 0:
            self.truncate_next_view -= 1
            return True
        return False

    def take_kill(self) -> bool:
        if self.kill_mid_run:
            self.kill_mid_run = False
            return True
        return False

    def exec_info(self) -> dict:
        return {"exec_info": {"queue_remaining": len(self.pending) + (self.running is not None)}}

    def features(self) -> dict:
        return {"supports_preview_metadata": True, "max_upload_size": 104857600}

    def system_stats(self) -> dict:
        return {"system": {"os": "posix", "ram_total": 8 << 30, "ram_free": 4 << 30, "comfyui_version": self.version,
                           "python_version": "3.11", "pytorch_version": "fake", "embedded_python": False,
                           "argv": ["main.py", "--fake"]},
                "devices": [{"name": "cpu", "type": "cpu", "index": None, "vram_total": 0, "vram_free": 0,
                             "torch_vram_total": 0, "torch_vram_free": 0}]}

    def object_info_all(self) -> dict:
        files = [p.name for p in (self.root / "input").iterdir() if p.is_file()]   # top level, like LoadImage
        info = schemas.object_info(files, self.checkpoints, websocket_node=self.websocket_node)
        if self.ipadapter_nodes:
            info.update(schemas.ipadapter_nodes(self.model_files))
        return info

    async def send(self, kind: str, data: dict, sid: str | None, *, force: bool = False,
                   broadcast_if_none: bool = False) -> None:
        """A JSON event to client `sid` (None: to everyone if broadcast_if_none); `force` bypasses
        silent_socket and ws_lag (the greeting and feature_flags answer of a new socket)."""
        if self.silent_socket and not force:
            return
        if sid is None and not broadcast_if_none:
            return
        message = {"type": kind, "data": data}
        await self._deliver(sid, lambda flags: message, lagged=not force)

    async def send_bytes(self, legacy: bytes, with_meta: bytes, sid: str | None) -> None:
        """Binary image frames go to the prompt's client, or to everyone when it has none."""
        if self.silent_socket:
            return
        await self._deliver(sid, lambda flags: with_meta if flags.get("supports_preview_metadata") else legacy)

    async def _deliver(self, sid: str | None, payload, *, lagged: bool = True) -> None:
        """Send payload(flags) -> dict (JSON) | bytes now, or ws_lag seconds later (in order).
        Sockets are looked up at delivery time, like the real server's publish loop does."""
        async def deliver() -> None:
            targets = list(self.sockets.values()) if sid is None else [self.sockets[sid]] if sid in self.sockets else []
            for sock, _, flags in targets:
                data = payload(flags)
                try:
                    await (sock.send_bytes(data) if isinstance(data, bytes) else sock.send_json(data))
                except (ConnectionError, RuntimeError):
                    pass
        if lagged and (self.ws_lag > 0 or self._outbox.busy):
            self._outbox.put(self.ws_lag, deliver)
        else:
            await deliver()

    async def broadcast_status(self) -> None:
        await self.send("status", {"status": self.exec_info()}, None, broadcast_if_none=True)

    def resolve(self, kind: str, subfolder: str, filename: str) -> Path | None:
        """A path inside the `kind` folder, or None when subfolder/filename would escape it."""
        if kind not in ("input", "output", "temp"):
            return None
        base = (self.root / kind).resolve()
        path = (base / subfolder / filename).resolve()
        return path if path == base or base in path.parents else None

    def input_path(self, name: str) -> Path:
        path = self.resolve("input", "", name)
        if path is None:
            raise FileNotFoundError(name)
        return path

    def input_exists(self, name: str) -> bool:
        path = self.resolve("input", "", name)
        return path is not None and path.is_file()

    def input_digest(self, name: str) -> str:
        """LoadImage's IS_CHANGED hashes the file, so an overwritten upload is not served from cache."""
        return hashlib.sha256(self.input_path(name).read_bytes()).hexdigest() if self.input_exists(name) else ""

    def save_output(self, arr: np.ndarray, cls: str, prefix: str) -> dict:
        if cls == "PreviewImage":
            kind, subfolder, base = "temp", "", f"ComfyUI_temp_{self._temp_tag}"
        else:
            kind = "output"
            subfolder, _, base = (prefix or "ComfyUI").rpartition("/")
        folder = self.resolve(kind, subfolder, "")
        if folder is None:
            raise ValueError("Saving image outside the output folder is not allowed.")
        folder.mkdir(parents=True, exist_ok=True)
        name = nodes.next_save_name(folder, base)
        (folder / name).write_bytes(nodes.encode_png(arr, self.output_fault))
        return {"filename": name, "subfolder": subfolder, "type": kind}

    def write_history(self, job: Job, ui: dict, status_str: str, completed: bool) -> None:
        self.history[job.prompt_id] = {
            "prompt": job.queue_entry(), "outputs": dict(ui),
            "status": {"status_str": status_str, "completed": completed, "messages": list(job.messages)},
            "meta": {n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n} for n in ui}}
