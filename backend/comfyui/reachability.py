"""Whether ComfyUI answers right now, as the last request found out, and the idle probe.

Why its own noun: an outage must show in status within seconds whether or not a job is running.
During a job the job's own polls (and a dropped WebSocket's immediate poll) report; between jobs
nothing talks to the server, so `ReachabilityWatch` probes GET /system_stats once a second when
no other request has reported for that long. Listeners hear transitions only (answering <->
not answering), on the thread that made the request.
"""

from __future__ import annotations

import logging
import threading
import time

from backend.comfyui.listeners import Listener, Listeners

log = logging.getLogger(__name__)


class Reachability:
    """Thread-safe: `ok` is None until the first request, then True/False; `error` says why not."""

    def __init__(self, clock=time.monotonic) -> None:
        self.ok: bool | None = None
        self.error = ""
        self.reported_at = float("-inf")    # monotonic time of the last report
        self._clock = clock
        self._lock = threading.Lock()
        self._listeners = Listeners()

    def subscribe(self, listener: Listener) -> None:
        """`listener(ok: bool, error: str)` on each change from now on."""
        self._listeners.subscribe(listener)

    def unsubscribe(self, listener: Listener) -> None:
        self._listeners.unsubscribe(listener)

    def report(self, ok: bool, error: str = "") -> None:
        with self._lock:
            changed = ok != self.ok
            self.ok, self.error, self.reported_at = ok, "" if ok else error, self._clock()
        if changed:
            self._listeners.tell(ok, error)

    def expire(self) -> None:
        """The last answer no longer counts (the PC slept, a reconnect): the idle watch probes at
        its next look instead of trusting it. `ok` is kept until a request says otherwise."""
        with self._lock:
            self.reported_at = float("-inf")

    def quiet_for(self) -> float:
        """Seconds since the last report."""
        return self._clock() - self.reported_at


class ReachabilityWatch:
    """A daemon thread that probes when nothing else has reported for `interval` seconds."""

    def __init__(self, http, *, interval: float = 1.0, timeout: float = 2.0) -> None:
        self.http, self.interval, self.timeout = http, interval, timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reverie-comfy-watch", daemon=True)

    def start(self) -> "ReachabilityWatch":
        self._thread.start()
        return self

    def stop(self, timeout: float = 0.0) -> None:
        """Ends after the probe in flight (at most `self.timeout` s); waits up to `timeout` s."""
        self._stop.set()
        if self._thread.is_alive() and timeout > 0:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self.interval / 4):
            if self.http.reachability.quiet_for() >= self.interval:
                try:
                    self.http.probe(self.timeout)
                except Exception:  # noqa: BLE001 - a probe must never kill the watch
                    log.debug("reachability probe failed", exc_info=True)
