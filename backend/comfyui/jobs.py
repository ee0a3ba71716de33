"""The job runner: queue one graph -> wait (jobwait.py) -> collect its images, one job at a time.

It queues with a persistent clientId, waits for `executing node:null` for our prompt_id (see
events.py for why), fetches /history (briefly retried), takes the images from
SaveImageWebsocket frames or /view, and deletes our history entry (the server keeps 10,000 in
RAM). A server that restarted under us forgot the job (history {} and not queued): JobLost,
resubmit. It talks to the server only through ComfyHTTP's public methods.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass

from PIL import Image

from backend.comfyui.errors import (ComfyError, ComfyTimeout, ComfyUnavailable, ExecutionFailed,
                                    ImagesNotReceived, Interrupted, JobLost, raise_for_history_status,
                                    rejection_from_body)
from backend.comfyui.events import JobTracker
from backend.comfyui.images import decode_image
from backend.comfyui.jobwait import WaitSettings, wait_for_job


@dataclass(frozen=True)
class JobResult:
    images: list          # list[PIL.Image.Image], RGB
    prompt_id: str
    seconds: float        # queue -> images decoded


class JobRunner:
    """Runs jobs on one server through `http` (a ComfyHTTP). A lock serialises run_job()."""

    def __init__(self, http, *, job_timeout: float = 300.0, poll_interval: float = 2.0,
                 unavailable_grace: float = 60.0):
        self.http = http
        self.job_timeout = job_timeout              # seconds from queueing to result
        self.poll_interval = poll_interval          # seconds between /history + /queue checks while waiting
        self.unavailable_grace = unavailable_grace  # seconds without an answer mid-job before giving up on it
        self.client_id = uuid.uuid4().hex           # persistent: reconnects resume our prompt's events
        self.events = http.open_events(self.client_id)
        self._job_lock = threading.Lock()
        self._closing = threading.Event()
        self._current: str | None = None            # the prompt id in flight
        self._stopped_by_us: str | None = None      # the prompt interrupt_current() interrupted or unqueued
        self._abandoned: set[str] = set()           # our prompts given up on while the server was away

    def run_job(self, graph: dict, *, output_node: str | None = None) -> JobResult:
        """Queue `graph` (API format), wait, return its output images (RGB), the prompt id and
        the seconds it took. Raises WorkflowRejected, ExecutionFailed, Interrupted, ComfyTimeout,
        JobLost (its subclass ImagesNotReceived: done, but the SaveImageWebsocket frames never
        came) or ComfyUnavailable (see errors.py for what a caller does with each)."""
        with self._job_lock:
            if self._closing.is_set():
                raise Interrupted("the ComfyUI client is closed")
            start = time.monotonic()
            ws_nodes = {n for n, node in graph.items() if isinstance(node, dict)
                        and node.get("class_type") == "SaveImageWebsocket" and (output_node in (None, n))}
            self.events.drain()
            self.events.ensure()
            self._discard_abandoned()
            prompt_id = self._queue(graph)
            self._current = prompt_id
            try:
                tracker = JobTracker(prompt_id, ws_nodes)
                self._wait(tracker, start + self.job_timeout)
                images = self._collect(tracker, output_node)
            finally:
                self._current = None
                self.http.forget(prompt_id)
            return JobResult(images, prompt_id, time.monotonic() - start)

    @property
    def busy(self) -> bool:
        """A run_job() is under way (uploaded graph queued, running, or being collected)."""
        return self._job_lock.locked()

    def reconnect(self) -> None:
        """Drop and reopen the event socket, from any thread: a job in flight reconnects at once
        (under the same clientId) and polls the server; otherwise the next job does before it
        queues. The job's /history poll stays the truth either way, so no job is sent twice."""
        self.events.request_reconnect()

    def interrupt_current(self) -> bool:
        """Interrupt (or unqueue) OUR prompt in flight; False when none is, or the server is away.
        The job then ends in Interrupted in its own thread."""
        prompt_id = self._current
        if prompt_id is None:
            return False
        self._stopped_by_us = prompt_id     # set first: an unqueued prompt's wait may end at once
        try:
            return self.http.interrupt(prompt_id)
        except ComfyError:
            return False

    def close(self) -> None:
        """Stop: a job in flight is interrupted (raises Interrupted in its thread); socket closed."""
        self._closing.set()
        if self._job_lock.acquire(timeout=self.http.request_timeout + 2.0):
            self._job_lock.release()
        self.events.drop()

    def _wait(self, tracker: JobTracker, deadline: float) -> None:
        settings = WaitSettings(deadline, self.job_timeout, self.poll_interval, self.unavailable_grace)
        try:
            wait_for_job(self.http, self.events, tracker, settings, self._closing)
        except Interrupted:
            self._discard(tracker.prompt_id, wait=1.0)
            raise
        except ComfyTimeout:
            self._discard(tracker.prompt_id)
            raise
        except JobLost:
            if self._stopped_by_us != tracker.prompt_id:
                raise
            # we took it out of the queue before it ran: an interrupt, not a server that forgot it
            raise Interrupted(f"prompt {tracker.prompt_id} was taken out of ComfyUI's queue before it ran") from None
        except ComfyUnavailable:
            self._abandon(tracker.prompt_id)   # or, when it comes back, it still runs our old job
            raise

    def _queue(self, graph: dict) -> str:
        prompt_id, node_errors = self.http.queue_prompt(graph, self.client_id)
        if node_errors:
            # 200 with node_errors: only the valid outputs would run; treat the graph as broken
            self._discard(prompt_id)
            raise rejection_from_body(400, {"error": {"message": "part of the workflow is invalid"},
                                            "node_errors": node_errors}, "")
        return prompt_id

    def _collect(self, tracker: JobTracker, output_node: str | None) -> list[Image.Image]:
        entry = self.http.history(tracker.prompt_id, attempts=10)
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
        return [self.http.view(ref) for ref in refs]

    def _discard(self, prompt_id: str, wait: float | None = None) -> bool:
        """Cancel a prompt we will not use and delete its history once it has left the queue
        (waiting at most `wait` seconds, default request_timeout). False: the server was not reached."""
        deadline = time.monotonic() + (self.http.request_timeout if wait is None else wait)
        try:
            self.http.interrupt(prompt_id)
            while time.monotonic() < deadline:
                if self.http.history(prompt_id) is not None:
                    break
                running, pending = self.http.queue_ids()
                if prompt_id not in running + pending:
                    break
                time.sleep(0.05)
        except ComfyError:
            return False
        self.http.forget(prompt_id)
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
