"""ComfyUI's HTTP API, one public method per route (one requests.Session), and the WebSocket factory.

Every request tells `reachability` whether the server answered, so the daemon learns of an
outage from whichever request meets it first (a job's poll, an upload, the idle probe).
Default URL uses 127.0.0.1, not localhost: on Windows localhost tries IPv6 first (~2 s each).
"""

from __future__ import annotations

import threading
import time
import uuid
from urllib.parse import quote

import requests
from PIL import Image

from backend.comfyui.errors import ComfyError, ComfyUnavailable, ExecutionFailed, UnexpectedAnswer, rejection_from_body
from backend.comfyui.events import EventStream
from backend.comfyui.images import MAX_IMAGE_BYTES, decode_image, encode_png
from backend.comfyui.reachability import Reachability
from backend.comfyui.text import safe_line


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False       # a system proxy must not intercept loopback traffic
    return session


class ComfyHTTP:
    """Talks HTTP to one ComfyUI server. Each method is one request (or a short retry of one)."""

    def __init__(self, url: str = "http://127.0.0.1:8188", *, request_timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.request_timeout = request_timeout      # seconds per HTTP request / WS connect
        self.reachability = Reachability()
        self._http = _session()
        self._probe_http = _session()               # probe() runs on another thread: its own session
        self._probe_lock = threading.Lock()

    # -- plumbing --------------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        """One request; ComfyUnavailable when nothing answers (refused, reset, timeout)."""
        kwargs.setdefault("timeout", self.request_timeout)
        try:
            resp = self._http.request(method, self.url + path, **kwargs)
        except requests.RequestException as exc:
            error = ComfyUnavailable(f"ComfyUI at {self.url} did not answer {method} {path}: {safe_line(exc)}")
            self.reachability.report(False, str(error))
            raise error from exc
        self.reachability.report(True)
        return resp

    def get_json(self, path: str, expect: type = dict, **kwargs):
        """GET and parse; UnexpectedAnswer unless the answer is 200 with JSON of type `expect`."""
        resp = self.request("GET", path, **kwargs)
        if resp.status_code != 200:
            raise UnexpectedAnswer(f"GET {path} answered HTTP {resp.status_code}", resp.status_code)
        try:
            data = resp.json()
        except ValueError as exc:
            raise UnexpectedAnswer(f"GET {path} did not answer JSON", resp.status_code) from exc
        if not isinstance(data, expect):
            raise UnexpectedAnswer(f"GET {path} answered {type(data).__name__}, expected {expect.__name__}",
                                   resp.status_code)
        return data

    def post(self, path: str, body: dict) -> None:
        resp = self.request("POST", path, json=body)
        if resp.status_code != 200:
            raise ComfyError(f"POST {path} answered HTTP {resp.status_code}")

    def probe(self, timeout: float) -> bool:
        """GET /system_stats within `timeout` s on a session of its own (safe beside a running job);
        the answer goes to `reachability` like any other request's."""
        with self._probe_lock:
            try:
                ok = self._probe_http.get(self.url + "/system_stats", timeout=timeout).status_code == 200
                error = "" if ok else "GET /system_stats did not answer 200"
            except requests.RequestException as exc:
                ok, error = False, f"ComfyUI at {self.url} did not answer GET /system_stats: {safe_line(exc)}"
        self.reachability.report(ok, error)
        return ok

    def open_events(self, client_id: str) -> EventStream:
        """The WebSocket for `client_id`, not yet connected (EventStream.ensure() connects)."""
        return EventStream(self.url, client_id, self.request_timeout)

    def reset_connections(self) -> None:
        """Forget pooled keep-alive connections (after a sleep they may be dead without knowing it)
        and let the next request or idle probe find out afresh whether the server answers. A
        request in flight finishes on the connection it has."""
        old, self._http = self._http, _session()
        old.close()
        with self._probe_lock:
            self._probe_http.close()
            self._probe_http = _session()
        self.reachability.expire()

    def close(self) -> None:
        self._http.close()
        with self._probe_lock:
            self._probe_http.close()

    def __enter__(self) -> "ComfyHTTP":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- routes ----------------------------------------------------------------------------------
    def system_stats(self) -> dict:
        """GET /system_stats: the health check (answers 11-15 s after ComfyUI starts)."""
        return self.get_json("/system_stats")

    def version(self) -> str:
        """ComfyUI's version string, e.g. "0.3.75" ("" when the server does not say)."""
        system = self.system_stats().get("system")
        return safe_line(system.get("comfyui_version", "")) if isinstance(system, dict) else ""

    def checkpoints(self) -> list[str]:
        """Names in ComfyUI's models/checkpoints, as ckpt_name accepts them."""
        try:
            return [str(n) for n in self.get_json("/models/checkpoints", expect=list)]
        except UnexpectedAnswer as exc:
            if exc.status != 404:
                raise
        return self._checkpoints_from_object_info()     # servers older than the /models routes

    def _checkpoints_from_object_info(self) -> list[str]:
        """CheckpointLoaderSimple's ckpt_name choices in /object_info."""
        info = self.object_info("CheckpointLoaderSimple").get("CheckpointLoaderSimple")
        spec = info.get("input", {}).get("required", {}).get("ckpt_name") if isinstance(info, dict) else None
        choices = spec[0] if isinstance(spec, list) and spec else None
        if choices == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
            choices = spec[1].get("options")        # the newer combo format: ["COMBO", {"options": [...]}]
        if not isinstance(choices, list):
            raise UnexpectedAnswer("ComfyUI lists its checkpoints neither at /models/checkpoints nor in "
                                   "CheckpointLoaderSimple's /object_info", 404)
        return [str(n) for n in choices]

    def object_info(self, node_class: str | None = None) -> dict:
        """Node schemas: all (~0.5 MB) or one class ({} when the server lacks it)."""
        return self.get_json("/object_info" if node_class is None else f"/object_info/{quote(node_class, safe='')}")

    def upload_image(self, image: Image.Image, name: str, subfolder: str = "reverie") -> str:
        """Upload as PNG, overwriting `subfolder/name`; returns the LoadImage reference to use.

        Callers keep ComfyUI's input folder bounded by reusing a small rotating set of names.
        """
        return self.upload_bytes(encode_png(image), name, subfolder, content_type="image/png")

    def upload_bytes(self, data: bytes, name: str, subfolder: str = "reverie", *, overwrite: bool = True,
                     content_type: str = "application/octet-stream") -> str:
        """POST /upload/image: store `data` as input/`subfolder`/`name`; returns the reference a
        loader node takes ("subfolder/stored name").

        /upload/image stores any file under the name given (LoadLatent lists `*.latent`), not
        only images. The server may rename ("name (1).png"), so the returned name is the truth.
        """
        if not name or any(c in name for c in "/\\") or ".." in name:
            raise ValueError(f"upload name must be a plain file name, got {name!r}")
        files = {"image": (name, data, content_type)}
        form = {"overwrite": "true" if overwrite else "false", "type": "input", "subfolder": subfolder}
        resp = self.request("POST", "/upload/image", files=files, data=form)
        if resp.status_code != 200:
            raise ComfyError(f"upload of {name!r} to {self.url} answered HTTP {resp.status_code}")
        try:
            body = resp.json()
            stored, folder = str(body["name"]), str(body.get("subfolder") or "")
        except (ValueError, KeyError, TypeError) as exc:
            raise ComfyError(f"upload of {name!r} to {self.url} answered an unexpected body") from exc
        return f"{folder}/{stored}" if folder else stored

    def free(self) -> None:
        """Ask ComfyUI to unload models and free memory (e.g. while Reverie is paused)."""
        self.post("/free", {"unload_models": True, "free_memory": True})

    def interrupt(self, prompt_id: str) -> bool:
        """Stop one prompt: interrupt it if running, drop it if pending; False when it is neither.

        Older servers ignore the prompt_id in /interrupt and stop whatever runs, so /queue is
        checked first: we never interrupt somebody else's job.
        """
        running, pending = self.queue_ids()
        if prompt_id in running:
            self.post("/interrupt", {"prompt_id": prompt_id})
        elif prompt_id in pending:
            self.post("/queue", {"delete": [prompt_id]})
        else:
            return False
        return True

    def queue_ids(self) -> tuple[list[str], list[str]]:
        """Prompt ids (running, pending) from GET /queue; entries are [number, id, graph, extra, outputs]."""
        queue = self.get_json("/queue")

        def ids(key: str) -> list[str]:
            entries = queue.get(key)
            return [str(e[1]) for e in entries if isinstance(e, list) and len(e) > 1] if isinstance(entries, list) else []
        return ids("queue_running"), ids("queue_pending")

    def queue_prompt(self, graph: dict, client_id: str) -> tuple[str, dict]:
        """POST /prompt -> (the server's prompt id, its node_errors: {} unless part of the graph is
        invalid). WorkflowRejected when the server refuses the graph."""
        body = {"prompt": graph, "client_id": client_id, "prompt_id": str(uuid.uuid4())}
        resp = self.request("POST", "/prompt", json=body)
        try:
            data = resp.json()
        except ValueError:
            data = None
        if resp.status_code != 200 or not isinstance(data, dict) or "prompt_id" not in data:
            raise rejection_from_body(resp.status_code, data, resp.text)
        errors = data.get("node_errors")
        return str(data["prompt_id"]), errors if isinstance(errors, dict) else {}   # the server's id is the truth

    def history(self, prompt_id: str, attempts: int = 1) -> dict | None:
        """The prompt's history entry, retried briefly (history is written just before `executing null`)."""
        for attempt in range(attempts):
            data = self.get_json(f"/history/{quote(prompt_id, safe='')}")
            if isinstance(data.get(prompt_id), dict):
                return data[prompt_id]
            if attempt + 1 < attempts:
                time.sleep(0.05 * (attempt + 1))
        return None

    def forget(self, prompt_id: str) -> None:
        """Delete the prompt's history entry (best effort: the server may be gone); the server
        keeps 10,000 entries in RAM otherwise."""
        try:
            self.post("/history", {"delete": [prompt_id]})
        except ComfyError:
            pass

    def view(self, ref: dict) -> Image.Image:
        """GET /view for one output; the server's filename is a query value, never a local path."""
        params = {"filename": str(ref.get("filename", "")), "subfolder": str(ref.get("subfolder", "")),
                  "type": str(ref.get("type", "output"))}
        name = safe_line(repr(params["filename"]))
        resp = self.request("GET", "/view", params=params, stream=True)
        with resp:
            if resp.status_code != 200:
                raise ExecutionFailed(f"GET /view for {name} answered HTTP {resp.status_code}")
            chunks, size = [], 0
            try:
                for chunk in resp.iter_content(1 << 16):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > MAX_IMAGE_BYTES:
                        raise ExecutionFailed(f"output image {name} exceeds {MAX_IMAGE_BYTES} bytes")
            except requests.RequestException as exc:   # the body is read here, outside request()'s try
                error = ComfyUnavailable(f"ComfyUI at {self.url} broke off sending {name}: {safe_line(exc)}")
                self.reachability.report(False, str(error))
                raise error from exc
        return decode_image(b"".join(chunks))
