"""The daemon's watch on ComfyUI over days: backend.desktop.health on a probe of its own, and
what each health event makes the daemon do.

- The probe (GET /system_stats, short timeout) runs on the health thread through an HTTP client
  of its own, so a probe waiting on a dead server holds neither a frame nor a keyframe job. It
  follows the server in use (`current_url` of a failover client).
- "reconnect" (probes failing) and "resumed" (the PC slept): the job client drops its event
  socket and pooled connections (`client.reconnect()`). A job in flight is not sent again: its
  result is read from /history, which stays the source of truth while a socket is silent.
- After "resumed", no new keyframe job starts until a probe has answered (`waking`), at most
  `wake_hold` seconds: a probe client that cannot get through must not hold the dream for ever
  (the job client reports an outage by itself).
- "memory_growth": health.warning says so (status, log).
Liveness between jobs is backend.comfyui.reachability's job; this watch does not repeat it.
No torch here.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from backend.desktop.health import ComfyHealth, HealthSettings

log = logging.getLogger(__name__)


class ComfyWatch:
    def __init__(self, client: Any, url: str, settings: HealthSettings, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, wake_hold: float = 30.0, probe_timeout: float = 5.0):
        self.client, self._url, self._timeout, self.wake_hold = client, url, probe_timeout, wake_hold
        self._clock = clock
        self.health = ComfyHealth(self._stats, settings, clock=clock, wall=wall)
        self.reconnects = 0                        # client.reconnect() calls so far
        self._woke_at: float | None = None         # when the last "resumed" came, until its first answer
        self._probe: Any = None
        self._probe_url = ""
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The ComfyUI address in use."""
        return str(getattr(self.client, "current_url", self._url))

    @property
    def waking(self) -> bool:
        """The PC has just woken and no probe has answered since: start no new job yet."""
        woke = self._woke_at
        return woke is not None and self._clock() - woke < self.wake_hold and not self.health.ready

    def start(self, stop: threading.Event) -> threading.Thread:
        return self.health.start(stop, self._on_event)

    def fields(self) -> dict:
        """Status fields: ComfyUI's memory, the growth warning, the server in use."""
        return {**self.health.fields(), "comfyui_server": self.url}

    def close(self) -> None:
        with self._lock:
            if self._probe is not None:
                self._probe.close()
                self._probe = None

    def _stats(self) -> dict:
        from backend.comfyui.http import ComfyHTTP  # requests loads with the ComfyUI side anyway

        url = self.url
        with self._lock:
            if self._probe is None or self._probe_url != url:  # a failover moved to another server
                if self._probe is not None:
                    self._probe.close()
                self._probe, self._probe_url = ComfyHTTP(url, request_timeout=self._timeout), url
            probe = self._probe
        return probe.system_stats()

    def _on_event(self, event: str) -> None:
        if event == "resumed":
            self._woke_at = self._clock()
        elif event == "ready":
            self._woke_at = None
        if event in ("reconnect", "resumed"):
            reconnect = getattr(self.client, "reconnect", None)
            if callable(reconnect):
                reconnect()
                self.reconnects += 1
            else:
                log.info("this ComfyUI client cannot reconnect; its next request finds out")
