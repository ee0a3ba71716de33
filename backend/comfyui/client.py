"""ComfyClient: the one object callers build for a server. Its HTTP routes come from ComfyHTTP
(http.py); its jobs run through a JobRunner (jobs.py), one at a time.

    client = ComfyClient("http://127.0.0.1:8188", request_timeout=10, job_timeout=300)
    images = client.run(graph)        # queue -> wait -> collect
    client.reachability.ok            # did the last request get an answer?
"""

from __future__ import annotations

from PIL import Image

from backend.comfyui.discovery import discover
from backend.comfyui.errors import (ComfyError, ComfyTimeout, ComfyUnavailable, ExecutionFailed,
                                    ImagesNotReceived, Interrupted, JobLost, WorkflowRejected)
from backend.comfyui.http import ComfyHTTP
from backend.comfyui.jobs import JobResult, JobRunner

__all__ = ["ComfyClient", "ComfyError", "ComfyUnavailable", "WorkflowRejected", "ExecutionFailed",
           "Interrupted", "ComfyTimeout", "JobLost", "ImagesNotReceived", "JobResult", "discover"]


class ComfyClient(ComfyHTTP):
    """ComfyHTTP plus jobs. Thread-safe for one job at a time (run_job is serialised)."""

    def __init__(self, url: str = "http://127.0.0.1:8188", *, request_timeout: float = 10.0,
                 job_timeout: float = 300.0, poll_interval: float = 2.0, unavailable_grace: float = 60.0):
        super().__init__(url, request_timeout=request_timeout)
        self.jobs = JobRunner(self, job_timeout=job_timeout, poll_interval=poll_interval,
                              unavailable_grace=unavailable_grace)

    @property
    def client_id(self) -> str:
        return self.jobs.client_id

    def run(self, graph: dict, *, output_node: str | None = None) -> list[Image.Image]:
        """Queue `graph` (API format), wait, return its output images (RGB). See run_job."""
        return self.jobs.run_job(graph, output_node=output_node).images

    def run_job(self, graph: dict, *, output_node: str | None = None) -> JobResult:
        """run() plus the prompt id and the seconds it took (JobRunner.run_job says what it raises)."""
        return self.jobs.run_job(graph, output_node=output_node)

    @property
    def busy(self) -> bool:
        """A job of ours is in flight (run_job has not returned)."""
        return self.jobs.busy

    def reconnect(self) -> None:
        """Drop and reopen the event socket and the pooled HTTP connections; the next request (or
        the idle probe) asks the server afresh. For after a sleep or a run of failed probes."""
        self.reset_connections()
        self.jobs.reconnect()

    def interrupt_current(self) -> bool:
        """Interrupt our job in flight, never another client's; False when there is none."""
        return self.jobs.interrupt_current()

    def close(self) -> None:
        """Stop: a job in flight is interrupted (raises Interrupted in its thread); sockets closed."""
        self.jobs.close()
        super().close()
