"""ComfyUI client: HTTP (one requests.Session) + WebSocket (websocket-client), one job at a time.

`run(graph)` queues with our persistent clientId, waits for `executing node:null` for our
prompt_id (see events.py for why), fetches /history (briefly retried), takes the images from
SaveImageWebsocket frames or /view, and deletes our history entry (the server keeps 10,000 in
RAM). A silent or broken socket is covered by polling /history and /queue as the truth; a server
that restarted under us forgot the job (history {} and not queued): JobLost, resubmit.
Default URL uses 127.0.0.1, not localhost: on Windows localhost tries IPv6 first (~2 s each).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from urllib.parse import quote

import requests
from PIL import Image

from backend.comfyui.errors import (ComfyError, ComfyTimeout, ComfyUnavailable, ExecutionFailed,
                                    ImagesNotReceived, Interrupted, JobLost, UnexpectedAnswer,
                                    WorkflowRejected, raise_for_history_status, rejection_from_body)
from backend.comfyui.events import Disconnected, EventSocket, JobTracker
from backend.comfyui.discovery import discover
from backend.comfyui.images import MAX_IMAGE_BYTES, decode_image, encode_png
from backend.comfyui.jobwait import wait_for_job

__all__ = ["ComfyClient", "ComfyError", "ComfyUnavailable", "WorkflowRejected", "ExecutionFailed",
           "Interrupted", "ComfyTimeout", "JobLost", "ImagesNotReceived", "JobResult", "discover"]

OUTPUT_CLASSES = ("SaveImageWebsocket", "SaveImage", "PreviewImage")


@dataclass(frozen=True)
class JobResult:
    images: list          # list[PIL.Image.Image], RGB
    prompt_id: str
    seconds: float        # queue -> images decoded


class ComfyClient:
    """Talks to one ComfyUI server. Thread-safe for one job at a time (a lock serialises run())."""

    def __init__(self, url: str = "http://127.0.0.1:8188", *, request_timeout: float = 10.0,
                 job_timeout: float = 300.0, poll_interval: float = 2.0, unavailable_grace: float = 60.0):
        self.url = url.rstrip("/")
        self.request_timeout = request_timeout      # seconds per HTTP request / WS connect
        self.job_timeout = job_timeout              # seconds from queueing to result
        self.poll_interval = poll_interval          # seconds between /history + /queue checks while waiting
        self.unavailable_grace = unavailable_grace  # seconds of refused connections mid-job before giving up
        self.client_id = uuid.uuid4().hex           # persistent: reconnects resume our prompt's events
        self._http = requests.Session()
        self._http.trust_env = False                # a system proxy must not intercept loopback traffic
        self._ws: EventSocket | None = None
        self._job_lock = threading.Lock()
        self._closing = threading.Event()
        self._abandoned: set[str] = set()           # our prompts given up on while the server was away

    # -- plain HTTP ------------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", self.request_timeout)
        try:
            return self._http.request(method, self.url + path, **kwargs)
        except requests.RequestException as exc:
            raise ComfyUnavailable(f"ComfyUI at {self.url} did not answer {method} {path}: {exc}") from exc

    def _get_json(self, path: str, expect: type = dict, **kwargs):
        """GET and parse; UnexpectedAnswer unless the answer is 200 with JSON of type `expect`."""
        resp = self._request("GET", path, **kwargs)
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

    def _post(self, path: str, body: dict) -> None:
        resp = self._request("POST", path, json=body)
        if resp.status_code != 200:
            raise ComfyError(f"POST {path} answered HTTP {resp.status_code}")

    def system_stats(self) -> dict:
        """GET /system_stats: the health check (answers 11-15 s after ComfyUI starts)."""
        return self._get_json("/system_stats")

    def version(self) -> str:
        """ComfyUI's version string, e.g. "0.3.75" ("" when the server does not say)."""
        system = self.system_stats().get("system")
        return str(system.get("comfyui_version", "")) if isinstance(system, dict) else ""

    def checkpoints(self) -> list[str]:
        """Names in ComfyUI's models/checkpoints, as ckpt_name accepts them."""
        try:
            return [str(n) for n in self._get_json("/models/checkpoints", expect=list)]
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
        return self._get_json("/object_info" if node_class is None else f"/object_info/{quote(node_class, safe='')}")

    def upload_image(self, image: Image.Image, name: str, subfolder: str = "reverie") -> str:
        """Upload as PNG, overwriting `subfolder/name`; returns the LoadImage reference to use.

        The server may rename ("name (1).png"), so the returned name is the truth. Callers keep
        ComfyUI's input folder bounded by reusing a small rotating set of names.
        """
        if not name or any(c in name for c in "/\\") or ".." in name:
            raise ValueError(f"upload name must be a plain file name, got {name!r}")
        files = {"image": (name, encode_png(image), "image/png")}
        data = {"overwrite": "true", "type": "input", "subfolder": subfolder}
        resp = self._request("POST", "/upload/image", files=files, data=data)
        if resp.status_code != 200:
            raise ComfyError(f"upload of {name!r} answered HTTP {resp.status_code}")
        try:
            body = resp.json()
            stored, folder = str(body["name"]), str(body.get("subfolder") or "")
        except (ValueError, KeyError, TypeError) as exc:
            raise ComfyError(f"upload of {name!r} answered an unexpected body") from exc
        return f"{folder}/{stored}" if folder else stored

    def free(self) -> None:
        """Ask ComfyUI to unload models and free memory (e.g. while Reverie is paused)."""
        self._post("/free", {"unload_models": True, "free_memory": True})

    def interrupt(self, prompt_id: str) -> None:
        """Stop our prompt only: interrupt it if running, drop it if pending, else nothing.

        Older servers ignore the prompt_id in /interrupt and stop whatever runs, so /queue is
        checked first: we never interrupt somebody else's job.
        """
        running, pending = self.queue_ids()
        if prompt_id in running:
            self._post("/interrupt", {"prompt_id": prompt_id})
        elif prompt_id in pending:
            self._post("/queue", {"delete": [prompt_id]})

    def queue_ids(self) -> tuple[list[str], list[str]]:
        """Prompt ids (running, pending) from GET /queue; entries are [number, id, graph, extra, outputs]."""
        queue = self._get_json("/queue")

        def ids(key: str) -> list[str]:
            entries = queue.get(key)
            return [str(e[1]) for e in entries if isinstance(e, list) and len(e) > 1] if isinstance(entries, list) else []
        return ids("queue_running"), ids("queue_pending")

    def close(self) -> None:
        """Stop: a job in flight is interrupted (raises Interrupted in its thread); sockets closed."""
        self._closing.set()
        if self._job_lock.acquire(timeout=self.request_timeout + 2.0):
            self._job_lock.release()
        self._drop_ws()
        self._http.close()

    # -- jobs ------------------------------------------------------------------------------------
    def run(self, graph: dict, *, output_node: str | None = None) -> list[Image.Image]:
        """Queue `graph` (API format), wait, return its output images (RGB). See run_job."""
        return self.run_job(graph, output_node=output_node).images

    def run_job(self, graph: dict, *, output_node: str | None = None) -> JobResult:
        """run() plus the prompt id and the seconds it took.

        Raises WorkflowRejected, ExecutionFailed, Interrupted, ComfyTimeout, JobLost (its subclass
        ImagesNotReceived: done, but the SaveImageWebsocket frames never came) or
        ComfyUnavailable (see errors.py for what a caller does with each).
        """
        with self._job_lock:
            if self._closing.is_set():
                raise Interrupted("the ComfyUI client is closed")
            start = time.monotonic()
            ws_nodes = {n for n, node in graph.items() if isinstance(node, dict)
                        and node.get("class_type") == "SaveImageWebsocket" and (output_node in (None, n))}
            self._fresh_ws()
            self._discard_abandoned()
            prompt_id = self._queue(graph)
            try:
                tracker = JobTracker(prompt_id, ws_nodes)
                wait_for_job(self, tracker, start + self.job_timeout)
                images = self._collect(tracker, output_node)
            finally:
                self._forget(prompt_id)
            return JobResult(images, prompt_id, time.monotonic() - start)

    def _queue(self, graph: dict) -> str:
        body = {"prompt": graph, "client_id": self.client_id, "prompt_id": str(uuid.uuid4())}
        resp = self._request("POST", "/prompt", json=body)
        try:
            data = resp.json()
        except ValueError:
            data = None
        if resp.status_code != 200 or not isinstance(data, dict) or "prompt_id" not in data:
            raise rejection_from_body(resp.status_code, data, resp.text)
        prompt_id = str(data["prompt_id"])           # the server's id is the truth, not ours
        if data.get("node_errors"):
            # 200 with node_errors: only the valid outputs would run; treat the graph as broken
            self._discard(prompt_id)
            raise rejection_from_body(400, {"error": {"message": "part of the workflow is invalid"},
                                            "node_errors": data["node_errors"]}, "")
        return prompt_id

    def _collect(self, tracker: JobTracker, output_node: str | None) -> list[Image.Image]:
        entry = self._history(tracker.prompt_id, attempts=10)
        if tracker.error is not None:
            raise tracker.error
        if entry is not None:
            raise_for_history_status(entry, tracker.prompt_id)
        if tracker.ws_output_nodes:
            if tracker.ws_images:
                return [decode_image(b) for b in tracker.ws_images]
            if entry is None:
                raise JobLost(f"prompt {tracker.prompt_id} finished but ComfyUI has no history for it: resubmit")
            how = "dropped during the job" if tracker.socket_dropped else "stayed silent"
            raise ImagesNotReceived(f"prompt {tracker.prompt_id} succeeded but its SaveImageWebsocket images "
                                    f"were not received (the WebSocket {how})",
                                    socket_dropped=tracker.socket_dropped)
        outputs = dict(tracker.executed)
        if entry is not None and isinstance(entry.get("outputs"), dict):
            outputs.update({str(k): v.get("images", []) for k, v in entry["outputs"].items() if isinstance(v, dict)})
        outputs = {k: [r for r in v if isinstance(r, dict)] if isinstance(v, list) else [] for k, v in outputs.items()}
        refs = outputs.get(output_node, []) if output_node else next((v for v in outputs.values() if v), [])
        if not refs:
            if entry is None:
                raise JobLost(f"prompt {tracker.prompt_id} finished but ComfyUI has no history for it: resubmit")
            raise ExecutionFailed(f"prompt {tracker.prompt_id} produced no images"
                                  + (f" at node {output_node}" if output_node else ""))
        return [self._view(ref) for ref in refs]

    def _view(self, ref: dict) -> Image.Image:
        """GET /view for one output; the server's filename is a query value, never a local path."""
        params = {"filename": str(ref.get("filename", "")), "subfolder": str(ref.get("subfolder", "")),
                  "type": str(ref.get("type", "output"))}
        resp = self._request("GET", "/view", params=params, stream=True)
        with resp:
            if resp.status_code != 200:
                raise ExecutionFailed(f"GET /view for {params['filename']!r} answered HTTP {resp.status_code}")
            chunks, size = [], 0
            try:
                for chunk in resp.iter_content(1 << 16):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > MAX_IMAGE_BYTES:
                        raise ExecutionFailed(f"output image {params['filename']!r} exceeds {MAX_IMAGE_BYTES} bytes")
            except requests.RequestException as exc:   # the body is read here, outside _request's try
                raise ComfyUnavailable(f"ComfyUI at {self.url} broke off sending {params['filename']!r}: "
                                       f"{exc}") from exc
        return decode_image(b"".join(chunks))

    def _history(self, prompt_id: str, attempts: int = 1) -> dict | None:
        """Our history entry, retried briefly (history is written just before `executing null`)."""
        for attempt in range(attempts):
            data = self._get_json(f"/history/{quote(prompt_id, safe='')}")
            if isinstance(data.get(prompt_id), dict):
                return data[prompt_id]
            if attempt + 1 < attempts:
                time.sleep(0.05 * (attempt + 1))
        return None

    def _discard(self, prompt_id: str, wait: float | None = None) -> bool:
        """Cancel a prompt we will not use and delete its history once it has left the queue
        (waiting at most `wait` seconds, default request_timeout). False: the server was not reached."""
        deadline = time.monotonic() + (self.request_timeout if wait is None else wait)
        try:
            self.interrupt(prompt_id)
            while time.monotonic() < deadline:
                if self._history(prompt_id) is not None:
                    break
                running, pending = self.queue_ids()
                if prompt_id not in running + pending:
                    break
                time.sleep(0.05)
        except ComfyError:
            return False
        self._forget(prompt_id)
        return True

    def _abandon(self, prompt_id: str) -> None:
        """Give up on a prompt while the server does not answer: discard it now if it can be
        reached, else before the next job, so a server that comes back does not run it beside the
        resubmitted one."""
        if not self._discard(prompt_id):
            self._abandoned.add(prompt_id)

    def _discard_abandoned(self) -> None:
        for prompt_id in sorted(self._abandoned):
            if self._discard(prompt_id):
                self._abandoned.discard(prompt_id)

    def _forget(self, prompt_id: str) -> None:
        """Delete our history entry (best effort: the server may be gone)."""
        try:
            self._post("/history", {"delete": [prompt_id]})
        except ComfyError:
            pass

    def _fresh_ws(self) -> None:
        """Drain what arrived while idle (stale events) and notice a socket that died meanwhile
        (ComfyUI restarted between jobs), so this job's events and images are not missed."""
        if self._ws is not None:
            try:
                for _ in range(100000):
                    if self._ws.recv(0.001) is None:
                        break
            except Disconnected:
                self._drop_ws()
        self._ensure_ws()

    def _ensure_ws(self) -> None:
        if self._ws is None:
            self._ws = EventSocket(self.url, self.client_id, self.request_timeout)

    def _drop_ws(self) -> None:
        if self._ws is not None:
            self._ws.close()
            self._ws = None
