"""The daemon's watch on ComfyUI over days: backend.desktop.health on a probe of its own, and
what each health event makes the daemon do.

- The probe (GET /system_stats, short timeout) runs on the health thread through an HTTP client
  of its own, so a probe waiting on a dead server holds neither a frame nor a keyframe job. It
  follows the server in use (`current_url` of a failover client).
- "reconnect" (probes failing) and "resumed" (the PC slept): the job client drops its event
  socket and pooled connections (`client.reconnect()`), once our job in flight (`client.busy`)
  is over: that job's result is read from /history, the source of truth while a socket is
  silent, and dropping the socket under it would lose images that come only over the socket
  (SaveImageWebsocket), so the job would be sent again.
- No new keyframe job starts (`waking`) while a reconnect waits for the job in flight, nor
  after "resumed" until a probe has answered, that at most `wake_hold` seconds: a probe client
  that cannot get through must not hold the dream for ever (the job client reports an outage).
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
        self._reconnect_due = False
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The ComfyUI address in use."""
        return str(getattr(self.client, "current_url", self._url))

    @property
    def waking(self) -> bool:
        """Start no new job yet: a reconnect is due, or the PC has just woken and no probe answered."""
        woke = self._woke_at
        return self._reconnect_due or (woke is not None and self._clock() - woke < self.wake_hold
                                       and not self.health.ready)

    def start(self, stop: threading.Event, tick: float = 1.0) -> threading.Thread:
        thread = threading.Thread(target=self._run, args=(stop, tick), name="comfyui-health", daemon=True)
        thread.start()
        return thread

    def _run(self, stop: threading.Event, tick: float) -> None:
        while not stop.wait(tick):
            for event in self.health.poll():
                self._on_event(event)
            self._reconnect_when_idle()

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
            self._reconnect_due = True
            self._reconnect_when_idle()

    def _reconnect_when_idle(self) -> None:
        if not self._reconnect_due or getattr(self.client, "busy", False):
            return
        self._reconnect_due = False
        reconnect = getattr(self.client, "reconnect", None)
        if not callable(reconnect):
            log.info("this ComfyUI client cannot reconnect; its next request finds out")
            return
        try:
            reconnect()
            self.reconnects += 1
        except Exception:  # noqa: BLE001 - the watch must outlive a client's bad moment
            log.exception("reconnecting to ComfyUI failed")
