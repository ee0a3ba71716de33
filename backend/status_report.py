"""The daemon's status as the skin reads it: one `write(state)` gathers every field.

Fields and their rules (status.py has the file formats):
- `comfyui`: "starting" | "connected" | "unavailable" for a ComfyUI source, from the moment
  the daemon starts (before the source exists it is "starting"); "not_used" for a folder.
  While it is "unavailable" the state is "waiting_for_comfyui", even while frames still play.
- `last_error`: in state "paused", "paused: <reasons>" (`pause_reason` holds the reasons);
  else the source's problem, this loop's (a frame not written, the VAE out of memory), or
  "config edit ignored: <problem>" while the last edit of config.yaml could not be used (the
  others take precedence while they last).
- `stalls`: holds for a keyframe once a frame is on screen (backend.stalls).
- `quality`: the dream's fields, when a dream runs.
- "resuming" (instead of live/buffering) from the end of a pause until a keyframe made since
  arrives; the first one may have to load the models again, and the picture holds meanwhile.
- ComfyUI's memory and its growth warning (backend.desktop.health, also last in `last_error`'s
  order), and `comfyui_server`, the address in use, for a ComfyUI source.
No torch here.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from backend.frame_writer import AtomicWriteError
from backend.status import STATES, new_status

if TYPE_CHECKING:
    from backend.daemon import Daemon

log = logging.getLogger(__name__)

MEMORY_EVERY = 5.0  # seconds between two looks at the GPU memory budget
# "resuming" is said where status.py knows the state; until then the state stays buffering/live
# and the `resuming` field alone says it.
RESUMING = "resuming" if "resuming" in STATES else ""


class StatusReport:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.started = daemon.clock()
        self.status_ms = 0.0     # cost of the last status write
        self.status_at = 0.0     # clock time of the last status write
        self._memory: dict = {}   # the VAE's GPU memory fields, asked for at most every MEMORY_EVERY s
        self._memory_at: float | None = None

    def comfyui(self) -> str:
        daemon = self.daemon
        if daemon.config.keyframes.source != "comfyui":
            return "not_used"
        state = getattr(daemon.source, "state", "starting")
        return state if state in ("connected", "unavailable") else "starting"

    def holding_state(self) -> str:
        """The state while the picture holds for a late keyframe."""
        if getattr(self.daemon.source, "state", "") == "unavailable":
            return "waiting_for_comfyui"
        return "buffering" if self.daemon.screen.written else "starting"  # no picture yet: K_0 is being made

    def last_error(self, state: str) -> str:
        daemon = self.daemon
        if state == "paused":
            return f"paused: {daemon.pause.reason}"
        problem = getattr(daemon.watcher, "problem", "")
        return (getattr(daemon.source, "last_error", "") or daemon.last_error
                or (f"config edit ignored: {problem}" if problem else "") or daemon.citizen.warning())

    def write(self, state: str) -> None:
        started = time.perf_counter()
        daemon = self.daemon
        gen, source, screen = daemon.gen, daemon.source, daemon.screen
        comfyui = self.comfyui()
        resuming = gen is not None and daemon.pause.resuming(gen.worker.made)
        if comfyui == "unavailable" and state in ("live", "buffering"):
            state = "waiting_for_comfyui"  # said at once, while the frames in hand still play
        elif resuming and RESUMING and state in ("live", "buffering"):
            state = RESUMING
        fields = dict(screen.fields, state=state, fps=round(screen.fps, 3), target_fps=daemon.config.display.fps,
                      uptime=daemon.clock() - self.started, last_error=self.last_error(state), comfyui=comfyui,
                      pause_reason=daemon.pause.reason if state == "paused" else "")
        problem = getattr(daemon.watcher, "problem", "")
        if problem:
            fields["config_problem"] = problem
        if source is not None:
            # The prompt of the picture on screen; before the first frame, the one being made.
            fields["prompt"] = screen.prompt if screen.prompt is not None else source.prompt
        if gen is not None:
            fields.update(keyframes=gen.worker.made, stalls=gen.stalls.count, stall_seconds=gen.stalls.seconds,
                          keyframe_latency=gen.keyframe_latency or 0.0)
        if daemon.dream is not None:
            fields["quality"] = daemon.dream.status_fields()
        status = new_status(**fields)
        # Fields status.py does not declare yet go in as extra keys (it writes those after its own).
        status.update(daemon.citizen.fields(), **({"resuming": True} if resuming else {}))
        status.update(self.memory())
        try:
            daemon.status_writer.write(status)
        except AtomicWriteError as exc:
            log.warning("status not written: %s", exc)
        self.status_ms = (time.perf_counter() - started) * 1e3
        self.status_at = daemon.clock()

    def memory(self) -> dict:
        """On CUDA, Reverie's own VRAM and what is free: asked of the GPU every MEMORY_EVERY s, not at
        every frame's status write (it walks the VAE's parameters and queries the driver)."""
        daemon = self.daemon
        ask = getattr(daemon.encoder, "memory", None)
        now = daemon.clock()
        if ask is not None and (self._memory_at is None or now - self._memory_at >= MEMORY_EVERY):
            self._memory, self._memory_at = ask(), now
        return self._memory

    def log_pacing(self) -> None:
        """Every 30 s: the fps cap and what it comes from, the keyframe latency, the stalls."""
        gen = self.daemon.gen
        pacing, latency = gen.pacing, gen.keyframe_latency
        cap = pacing.fps_cap
        log.info("fps cap %s (decode %.1f ms + write %.1f ms per frame); keyframe latency %s; stalls %d (%.1f s)",
                 f"{cap:.1f}" if cap else "?", (pacing.decode_seconds or 0) * 1e3, (pacing.write_seconds or 0) * 1e3,
                 f"{latency:.2f} s" if latency else "?", gen.stalls.count, gen.stalls.seconds)
