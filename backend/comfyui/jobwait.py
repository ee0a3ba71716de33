"""Waiting for one queued prompt: WebSocket events first, /history + /queue polling as the truth.

Why both: a socket can stall without closing (events stop, the job still completes), drop
(ComfyUI restarted or crashed: close 1006) or never deliver (events go only to the clientId the
prompt was queued with). Polling every `poll_interval` seconds settles each case: history present
-> done; neither in history nor in /queue -> the server forgot the job -> JobLost. The socket is
reconnected with backoff under the same clientId, which resumes delivery of a running prompt.
A poll can say "done" before the socket has delivered the job's last messages (a freshly started
real ComfyUI sends them up to ~1 s behind its HTTP answers), so a job whose output travels on the
socket (SaveImageWebsocket) keeps reading until `executing null`, for at most LATE_FRAMES_GRACE.
"""

from __future__ import annotations

import time

from backend.comfyui.errors import ComfyTimeout, ComfyUnavailable, Interrupted, JobLost
from backend.comfyui.events import Disconnected, JobTracker

RECONNECT_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)   # seconds; the last one repeats
LATE_FRAMES_GRACE = 2.0                         # seconds to wait for WS frames after history says done


def wait_for_job(client, tracker: JobTracker, deadline: float) -> None:
    """Return when the job is done (tracker.done, or history says so); raise otherwise."""
    prompt_id = tracker.prompt_id
    next_poll = time.monotonic() + client.poll_interval
    reconnect_at, failures = 0.0, 0
    unreachable_since: float | None = None
    while not tracker.done:
        now = time.monotonic()
        if client._closing.is_set():
            client._discard(prompt_id, wait=1.0)
            raise Interrupted(f"stopped waiting for prompt {prompt_id}: the client is closing")
        if now >= deadline:
            client._discard(prompt_id)
            raise ComfyTimeout(f"prompt {prompt_id} did not finish within {client.job_timeout:g} s")
        if client._ws is None and now >= reconnect_at:
            try:
                client._ensure_ws()
                failures = 0
                next_poll = now               # back after a drop: did the server keep our job?
            except ComfyUnavailable:
                reconnect_at = now + RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
                failures += 1
        if client._ws is not None:
            try:
                message = client._ws.recv(min(0.25, max(deadline - now, 0.001)))
            except Disconnected:
                client._drop_ws()
                tracker.socket_dropped = True
                next_poll = now               # find out at once whether the server forgot us
                continue
            if message is not None:
                tracker.feed(message)      # no `continue`: a busy shared socket must not starve polling
                if tracker.done:
                    return
        else:
            client._closing.wait(min(0.1, max(reconnect_at - now, 0.01)))
        if time.monotonic() < next_poll:
            continue
        next_poll = time.monotonic() + client.poll_interval
        try:
            state, entry = _poll(client, prompt_id)
        except ComfyUnavailable:
            unreachable_since = unreachable_since or time.monotonic()
            if time.monotonic() - unreachable_since > client.unavailable_grace:
                client._abandon(prompt_id)        # or, when it comes back, it still runs our old job
                raise
            continue
        unreachable_since = None
        if state == "done":
            if tracker.ws_output_nodes and not tracker.ws_images and not _failed(entry):
                _read_late_messages(client, tracker, time.monotonic() + LATE_FRAMES_GRACE)
            return
        if state == "lost":
            raise JobLost(f"ComfyUI no longer knows prompt {prompt_id} (restarted?): resubmit")


def _read_late_messages(client, tracker: JobTracker, until: float) -> None:
    """History says done; read what is still on its way until `executing null` for our prompt,
    the socket breaks, the client closes or `until` (monotonic seconds) passes."""
    while not tracker.done and client._ws is not None and not client._closing.is_set():
        left = until - time.monotonic()
        if left <= 0:
            return
        try:
            message = client._ws.recv(min(0.25, left))
        except Disconnected:
            client._drop_ws()          # frames not yet received are gone: the caller reports JobLost
            tracker.socket_dropped = True
            return
        if message is not None:
            tracker.feed(message)


def _failed(entry: dict | None) -> bool:
    """History reports an error or interrupt: no image is coming, so nothing is worth waiting for."""
    status = entry.get("status") if isinstance(entry, dict) else None
    return isinstance(status, dict) and status.get("status_str") == "error"


def _poll(client, prompt_id: str) -> tuple[str, dict | None]:
    """('done', history entry), ('active', None) when queued or running, or ('lost', None)."""
    entry = client._history(prompt_id)
    if entry is not None:
        return "done", entry
    running, pending = client.queue_ids()
    if prompt_id in running or prompt_id in pending:
        return "active", None
    # it may have finished between the two requests
    entry = client._history(prompt_id)
    return ("done", entry) if entry is not None else ("lost", None)
