"""Waiting for one queued prompt: WebSocket events first, /history + /queue polling as the truth.

Why both: a socket can stall without closing (events stop, the job still completes), drop
(ComfyUI restarted or crashed: close 1006) or never deliver (events go only to the clientId the
prompt was queued with). Polling every `poll_interval` seconds settles each case: history present
-> done; neither in history nor in /queue -> the server forgot the job -> JobLost. The socket is
reconnected with backoff under the same clientId, which resumes delivery of a running prompt.
A poll can say "done" before the socket has delivered the job's last messages (a freshly started
real ComfyUI sends them up to ~1 s behind its HTTP answers), so a job whose output travels on the
socket (SaveImageWebsocket) keeps reading until `executing null`, for at most LATE_FRAMES_GRACE.

A poll that meets no server does not end the wait: the server may come back with the job still
queued (a network blip) or without it (a restart: JobLost, resubmit). Either way the failed
request has already told the client's `reachability`, so status shows the outage at once; the
wait gives up only after `unavailable_grace` seconds of it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from backend.comfyui.errors import ComfyTimeout, ComfyUnavailable, Interrupted, JobLost
from backend.comfyui.events import Disconnected, EventStream, JobTracker

RECONNECT_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)   # seconds; the last one repeats
LATE_FRAMES_GRACE = 2.0                         # seconds to wait for WS frames after history says done


@dataclass(frozen=True)
class WaitSettings:
    deadline: float              # monotonic time the job must be done by
    job_timeout: float           # seconds (for the message)
    poll_interval: float         # seconds between /history + /queue checks
    unavailable_grace: float     # seconds of no answer before giving up on the job


def wait_for_job(http, events: EventStream, tracker: JobTracker, settings: WaitSettings,
                 closing: threading.Event) -> None:
    """Return when the job is done (tracker.done, or history says so). Raises Interrupted (closing),
    ComfyTimeout, JobLost or ComfyUnavailable; the caller discards the prompt where that matters."""
    prompt_id, deadline = tracker.prompt_id, settings.deadline
    next_poll = time.monotonic() + settings.poll_interval
    reconnect_at, failures = 0.0, 0
    unreachable_since: float | None = None
    while not tracker.done:
        now = time.monotonic()
        if closing.is_set():
            raise Interrupted(f"stopped waiting for prompt {prompt_id}: the client is closing")
        if now >= deadline:
            raise ComfyTimeout(f"prompt {prompt_id} did not finish within {settings.job_timeout:g} s")
        if not events.connected and now >= reconnect_at:
            try:
                events.ensure()
                failures = 0
                next_poll = now               # back after a drop: did the server keep our job?
            except ComfyUnavailable:
                reconnect_at = now + RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
                failures += 1
        if events.connected:
            try:
                message = events.recv(min(0.25, max(deadline - now, 0.001)))
            except Disconnected:
                tracker.socket_dropped = True
                next_poll = now               # find out at once whether the server is there and knows us
                continue
            if message is not None:
                tracker.feed(message)      # no `continue`: a busy shared socket must not starve polling
                if tracker.done:
                    return
        else:
            closing.wait(min(0.1, max(reconnect_at - now, 0.01)))
        if time.monotonic() < next_poll:
            continue
        next_poll = time.monotonic() + settings.poll_interval
        try:
            state, entry = _poll(http, prompt_id)
        except ComfyUnavailable:
            unreachable_since = unreachable_since or time.monotonic()
            if time.monotonic() - unreachable_since > settings.unavailable_grace:
                raise
            continue
        unreachable_since = None
        if state == "done":
            if tracker.ws_output_nodes and not tracker.ws_images and not _failed(entry):
                _read_late_messages(events, tracker, time.monotonic() + LATE_FRAMES_GRACE, closing)
            return
        if state == "lost":
            raise JobLost(f"ComfyUI no longer knows prompt {prompt_id} (restarted?): resubmit")


def _read_late_messages(events: EventStream, tracker: JobTracker, until: float, closing: threading.Event) -> None:
    """History says done; read what is still on its way until `executing null` for our prompt,
    the socket breaks, the client closes or `until` (monotonic seconds) passes."""
    while not tracker.done and events.connected and not closing.is_set():
        left = until - time.monotonic()
        if left <= 0:
            return
        try:
            message = events.recv(min(0.25, left))
        except Disconnected:
            tracker.socket_dropped = True     # frames not yet received are gone: the caller reports JobLost
            return
        if message is not None:
            tracker.feed(message)


def _failed(entry: dict | None) -> bool:
    """History reports an error or interrupt: no image is coming, so nothing is worth waiting for."""
    status = entry.get("status") if isinstance(entry, dict) else None
    return isinstance(status, dict) and status.get("status_str") == "error"


def _poll(http, prompt_id: str) -> tuple[str, dict | None]:
    """('done', history entry), ('active', None) when queued or running, or ('lost', None)."""
    entry = http.history(prompt_id)
    if entry is not None:
        return "done", entry
    running, pending = http.queue_ids()
    if prompt_id in running or prompt_id in pending:
        return "active", None
    # it may have finished between the two requests
    entry = http.history(prompt_id)
    return ("done", entry) if entry is not None else ("lost", None)
