"""FailoverClient: several ComfyUI servers behind ComfyClient's surface, one in use at a time.

The live daemon makes one keyframe at a time, so it needs no work queue (that is the render's
ServerPool): it needs to carry on when the server in use goes away. Every request goes to the
current server. When a request meets no answer there, the other servers are probed in list order
after it (GET /system_stats, a short timeout) and the first that answers becomes current; the
upload or job that failed raises JobLost (ComfyUnavailable when no server answers), so its
caller makes the keyframe again, with the same seed, on the new server (ComfyUISource does
exactly that, without showing an outage). The KeyframeGenerator sees `current_url` change and
runs its preflight again there (checkpoint, samplers, output node); a server that cannot run the
workflow is passed over with `pass_over()`.

Once moved, it stays on the server that works and does not go back to the first when that one
returns: going back would cost a model load on every flap, and any server in the list is one the
user chose. The job a dead server was running is abandoned there (discarded if that server is
used again). A job whose input image was uploaded to one server is never queued on another
(JobLost, so it is made again with its seed): a switch can happen between the two requests.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Callable, Sequence

from PIL import Image

from backend.comfyui.client import ComfyClient
from backend.comfyui.errors import ComfyError, ComfyUnavailable, JobLost
from backend.comfyui.jobs import JobResult
from backend.comfyui.listeners import Listener, Listeners

log = logging.getLogger(__name__)

FAILOVER_GRACE = 5.0     # seconds a job waits for a silent server before giving up and moving on
PROBE_TIMEOUT = 2.0      # seconds for each other server's /system_stats when looking for one that answers
UPLOADS_REMEMBERED = 16  # upload refs kept to tell which server holds an input image


class CurrentReachability:
    """The reachability of whichever server is current: what ComfyUISource and its idle watch read.

    `ok`, `error` and `quiet_for()` are the current server's; listeners hear a change of answer,
    including the one a switch to an answering server makes (down -> up)."""

    def __init__(self, failover: "FailoverClient") -> None:
        self._failover = failover
        self._lock = threading.Lock()
        self._listeners = Listeners()
        self._last: bool | None = None

    @property
    def ok(self) -> bool | None:
        return self._failover.current.reachability.ok

    @property
    def error(self) -> str:
        return self._failover.current.reachability.error

    def quiet_for(self) -> float:
        return self._failover.current.reachability.quiet_for()

    def subscribe(self, listener: Listener) -> None:
        self._listeners.subscribe(listener)

    def unsubscribe(self, listener: Listener) -> None:
        self._listeners.unsubscribe(listener)

    def heard(self, ok: bool, error: str) -> None:
        with self._lock:
            changed, self._last = ok != self._last, ok
        if changed:
            self._listeners.tell(ok, error)


class FailoverClient:
    """``FailoverClient(urls, **ComfyClient keyword arguments)``; the first URL is used first."""

    def __init__(self, urls: Sequence[str], *, failover_grace: float = FAILOVER_GRACE, **client_kwargs) -> None:
        if not urls:
            raise ValueError("FailoverClient needs at least one ComfyUI URL")
        if len(urls) > 1:
            # a job on a dead server must not wait out the single-server grace while another answers
            grace = client_kwargs.get("unavailable_grace", 60.0)
            client_kwargs["unavailable_grace"] = min(grace, failover_grace)
        self.clients = [ComfyClient(url, **client_kwargs) for url in urls]
        self.request_timeout = self.clients[0].request_timeout
        self.reachability = CurrentReachability(self)
        self._index = 0
        self._lock = threading.RLock()
        self._passed_over: set[int] = set()     # servers that cannot run the workflow (preflight)
        self._running: ComfyClient | None = None
        self._uploads: OrderedDict[str, ComfyClient] = OrderedDict()
        for client in self.clients:
            client.reachability.subscribe(lambda ok, error, c=client: self._heard(c, ok, error))

    # -- which server --------------------------------------------------------------------------
    @property
    def current(self) -> ComfyClient:
        return self.clients[self._index]

    @property
    def current_url(self) -> str:
        return self.current.url

    @property
    def url(self) -> str:
        return self.current.url

    @property
    def urls(self) -> list[str]:
        return [c.url for c in self.clients]

    @property
    def client_id(self) -> str:
        return self.current.client_id

    def pass_over(self, reason: str) -> bool:
        """The current server cannot be used (its preflight failed: `reason`); move to the next
        one that answers and is not passed over. False (and stay) when there is none."""
        with self._lock:
            bad = self.current
            self._passed_over.add(self._index)
            moved = self._move(skip_passed_over=True)
        if moved:
            log.warning("ComfyUI at %s cannot run Reverie's workflows (%s); carrying on with %s",
                        bad.url, reason, self.current_url)
        return moved

    def _heard(self, client: ComfyClient, ok: bool, error: str) -> None:
        """A server's answer changed (on the thread of the request that found out)."""
        if client is not self.current:
            return
        if not ok and self._fail_over(client, error):
            return
        self.reachability.heard(ok, error)

    def _fail_over(self, dead: ComfyClient, error: str) -> bool:
        with self._lock:
            if dead is not self.current:        # another thread already moved on
                return True
            moved = self._move(skip_passed_over=True) or self._move(skip_passed_over=False)
        if moved:
            log.warning("ComfyUI at %s stopped answering (%s); carrying on with %s", dead.url, error,
                        self.current_url)
            self.reachability.heard(True, "")
        return moved

    def _move(self, *, skip_passed_over: bool) -> bool:
        """Make the next server (after the current, in list order) that answers current."""
        count = len(self.clients)
        for step in range(1, count):
            index = (self._index + step) % count
            if skip_passed_over and index in self._passed_over:
                continue
            candidate = self.clients[index]
            if candidate.probe(min(PROBE_TIMEOUT, candidate.request_timeout)):
                self._index = index
                return True
        return False

    # -- jobs ----------------------------------------------------------------------------------
    def run_job(self, graph: dict, *, output_node: str | None = None) -> JobResult:
        """ComfyClient.run_job on the current server. JobLost when the graph's input image was
        uploaded to another server (the current one changed in between): made again from the upload."""
        client = self.current
        for ref in _strings(graph):
            holder = self._uploads.get(ref)
            if holder is not None and holder is not client:
                raise JobLost(f"the input image {ref!r} is on {holder.url}, but ComfyUI at {client.url} is now "
                              f"in use: upload it again there")
        self._running = client
        try:
            return client.run_job(graph, output_node=output_node)
        except ComfyUnavailable as exc:
            raise self._moved_on(client, exc) from exc
        finally:
            self._running = None

    def run(self, graph: dict, *, output_node: str | None = None) -> list[Image.Image]:
        return self.run_job(graph, output_node=output_node).images

    def upload_image(self, image: Image.Image, name: str, subfolder: str = "reverie") -> str:
        return self._upload(lambda client: client.upload_image(image, name, subfolder))

    def upload_bytes(self, data: bytes, name: str, subfolder: str = "reverie", **options) -> str:
        return self._upload(lambda client: client.upload_bytes(data, name, subfolder, **options))

    def _upload(self, send: Callable[[ComfyClient], str]) -> str:
        """`send(current client)`, remembering which server now holds the file (see queue_prompt)."""
        client = self.current
        try:
            ref = send(client)
        except ComfyUnavailable as exc:
            raise self._moved_on(client, exc) from exc
        self._uploads[ref] = client
        self._uploads.move_to_end(ref)
        while len(self._uploads) > UPLOADS_REMEMBERED:
            self._uploads.popitem(last=False)
        return ref

    def _moved_on(self, client: ComfyClient, exc: ComfyUnavailable) -> ComfyError:
        """The error to raise for a request `client` could not answer: JobLost when another server
        has taken over meanwhile (nothing is down: make the keyframe again there, with its seed),
        else the ComfyUnavailable itself."""
        if self.current is client:
            return exc
        return JobLost(f"ComfyUI at {client.url} stopped answering; making the job again on {self.current_url}")

    @property
    def busy(self) -> bool:
        return any(c.busy for c in self.clients)

    def interrupt_current(self) -> bool:
        """Interrupt our job in flight, on whichever server runs it; never another client's."""
        client = self._running
        return client.interrupt_current() if client is not None else False

    def reconnect(self) -> None:
        for client in self.clients:
            client.reconnect()

    def close(self) -> None:
        for client in self.clients:
            client.close()

    # -- one request on the current server -----------------------------------------------------
    def probe(self, timeout: float) -> bool:
        """The current server's /system_stats; when it does not answer, the others are tried
        (the idle watch calls this once a second while unavailable, so a server that comes back
        is found whichever it is). True when the server now current answered."""
        client = self.current
        if client.probe(timeout):
            return True
        return self._fail_over(client, client.reachability.error)

    def system_stats(self) -> dict:
        return self.current.system_stats()

    def version(self) -> str:
        return self.current.version()

    def checkpoints(self) -> list[str]:
        return self.current.checkpoints()

    def object_info(self, node_class: str | None = None) -> dict:
        return self.current.object_info(node_class)

    def free(self) -> None:
        """/free on the current server (the one whose models our jobs loaded last)."""
        self.current.free()

    def interrupt(self, prompt_id: str) -> bool:
        return self.current.interrupt(prompt_id)

    def queue_ids(self) -> tuple[list[str], list[str]]:
        return self.current.queue_ids()

    def queue_prompt(self, graph: dict, client_id: str) -> tuple[str, dict]:
        return self.current.queue_prompt(graph, client_id)

    def history(self, prompt_id: str, attempts: int = 1) -> dict | None:
        return self.current.history(prompt_id, attempts)

    def forget(self, prompt_id: str) -> None:
        self.current.forget(prompt_id)

    def view(self, ref: dict) -> Image.Image:
        return self.current.view(ref)

    def get_json(self, path: str, expect: type = dict, **kwargs):
        return self.current.get_json(path, expect, **kwargs)

    def post(self, path: str, body: dict) -> None:
        self.current.post(path, body)

    def request(self, method: str, path: str, **kwargs):
        return self.current.request(method, path, **kwargs)

    def open_events(self, client_id: str):
        return self.current.open_events(client_id)

    def reset_connections(self) -> None:
        for client in self.clients:
            client.reset_connections()


def _strings(graph: dict):
    """Every string input value in an API-format graph (upload refs are among them)."""
    for node in graph.values():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if isinstance(inputs, dict):
            yield from (v for v in inputs.values() if isinstance(v, str))
