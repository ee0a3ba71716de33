"""The running daemon: builds the pieces, plays frames at a steady cadence, stops cleanly.

One loop, one frame per pass: controls and config edits -> next frame from the schedule
(keyframe -> encode -> slerp -> decode) -> wait for its deadline -> write frame and status.
This thread owns the VAE; the keyframe worker thread only talks to the keyframe source.
Pacing (deadlines, costs, the fps cap) lives in backend.pacing, what is on screen in
backend.screen, the pause reasons in backend.pause.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from backend.assembly import UserError, needs_vae, schedule_settings, seed_policy
from backend.config import Config, ConfigWatcher
from backend.control import ControlFile, locate_control_file
from backend.desktop.citizen import Citizen
from backend.frame_writer import FrameWriter
from backend.frames import Keyframe, KeyframeSourceError
from backend.keyframes import ComfyUISource
from backend.pacing import Clock, MonotonicClock
from backend.parts import Parts, build_parts
from backend.pause import Pause, free_comfyui, hold_work, resume_work
from backend.render.video import VideoError
from backend.screen import FrameListener, Screen, worth_logging
from backend.shutdown import Shutdown
from backend.status import StatusWriter
from backend.status_report import StatusReport

if TYPE_CHECKING:
    import numpy as np
    import torch

    from backend.comfyui.client import ComfyClient
    from backend.folder_source import FolderSource
    from backend.interpolation.hybrid_generator import HybridGenerator
    from backend.interpolation.latent_encoder import LatentEncoder

log = logging.getLogger(__name__)


class Dream(Protocol):
    """What the daemon needs of backend.dream.Dream (contract I4)."""

    def observe(self, keyframe: Keyframe, latent: np.ndarray) -> object: ...
    def status_fields(self) -> dict: ...
    def update(self, settings: object) -> None: ...


def _is_vae_numerics(exc: BaseException) -> bool:
    """A latent_encoder.VaeNumericsError? (checked without importing torch if it never was)."""
    module = sys.modules.get("backend.interpolation.latent_encoder")
    return module is not None and isinstance(exc, module.VaeNumericsError)


class Daemon:
    def __init__(self, config: Config, config_path: Path, shutdown: Shutdown, *, overrides: dict | None = None,
                 clock: Clock | None = None, dream: Dream | None = None,
                 build: Callable[[Config], Parts] = build_parts) -> None:
        self.config, self.shutdown, self.dream, self._build = config, shutdown, dream, build
        self.clock: Clock = clock or MonotonicClock()
        self.overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        # The command line's overrides stay in force across config edits (not reported as restarts).
        self.watcher = ConfigWatcher(config_path, config, overrides=self.overrides, clock=self.clock)
        control_path = locate_control_file(config.control.file)
        self.control = ControlFile(control_path) if control_path else None
        if self.control is not None:
            self.control.baseline()  # clicks made while the VAE loads are applied, not swallowed
        display = config.display
        self.status_writer = StatusWriter(display.output_dir)
        self.screen = Screen(FrameWriter(display.output_dir, png_compression=display.png_compression,
                                         ring_size=display.ring_size, history_keep=display.history_keep), self.clock)
        self.pause = Pause(self.clock, free_delay=config.pause.free_after)
        # Pause rules, ComfyUI's health and the recorder (its `wall` is a seam: a test jumps it as a PC waking does).
        self.citizen = Citizen(config, self.set_paused, shutdown.stop)
        self.add_frame_listener(self.citizen.on_frame)
        self.report = StatusReport(self)
        self.last_error = ""                        # this loop's problem of the moment (frame, VAE memory)
        self.out_of_memory = 0                      # VAE calls that found no GPU memory
        self._waking = False                        # new jobs held by the ComfyUI watch (a wake, a reconnect)
        self.source: ComfyUISource | FolderSource | None = None
        self.client: ComfyClient | None = None
        self.encoder: LatentEncoder | None = None
        self.gen: HybridGenerator | None = None

    @property
    def writer(self) -> FrameWriter:
        return self.screen.writer

    @writer.setter
    def writer(self, writer: FrameWriter) -> None:  # a seam: tests and the soak swap in a faulty disk
        self.screen.writer = writer

    def add_frame_listener(self, listener: FrameListener) -> None:
        """`listener(pixels [H, W, 3] uint8, index)` after each frame written (contract I5)."""
        self.screen.listeners.append(listener)

    def set_paused(self, reason: str, on: bool) -> None:
        """Pause (or stop pausing) for `reason`; thread-safe, applied by the loop (contract I6)."""
        self.pause.set(reason, on)

    def run(self, max_frames: int | None = None) -> int:
        """Play until stopped (or max_frames written); 0 on every normal stop, UserError otherwise."""
        self.report.write("starting")
        try:
            self.source, self.client, self.encoder = self._build(self.config)
            from backend.interpolation.hybrid_generator import HybridGenerator
            self.gen = HybridGenerator(self.source, self.encoder, schedule_settings(self.config), clock=self.clock,
                                       on_keyframe_latent=self._observe if self.dream is not None else None).start()
            self.citizen.start(self.config, self.client, self._own_work_running)
            self._play(max_frames)
        except (UserError, KeyframeSourceError, VideoError) as exc:
            self._fail(str(exc))
            raise UserError(str(exc)) from None
        except BaseException as exc:
            if _is_vae_numerics(exc):  # broken VAE weights: the user's file, not our bug
                message = f"{exc} (check vae.source and vae.family)"
                self._fail(message)
                raise UserError(message) from None
            self._fail(f"{type(exc).__name__}: {exc}")
            raise
        # "stopped" first: a closing Windows console gives the process only a few seconds, and
        # joining the keyframe thread can take up to 2 of them.
        self.report.write("stopped")
        self._close()
        log.info("stopped after %d frames written (%s)", self.screen.written, self.shutdown.reason or "done")
        return 0

    def _observe(self, keyframe: Keyframe, latent: torch.Tensor) -> None:
        try:
            self.dream.observe(keyframe, latent[0].float().cpu().numpy())  # [1, C, h, w] -> [C, h, w]
        except Exception:  # noqa: BLE001 - the quality metrics must never stop the show
            log.exception("the dream could not observe keyframe %s", keyframe.seed)

    def _fail(self, message: str) -> None:
        self.last_error = message
        self._close()
        self.report.write("error")

    def _close(self) -> None:
        if self.gen is not None and not self.gen.close(timeout=2.0):
            log.warning("the keyframe thread did not stop within 2 s")
        elif self.gen is None and self.source is not None:
            self.source.close()
        self.citizen.close()

    def _own_work_running(self) -> bool:
        """A keyframe of ours is being made (the GPU rule must not count that load as someone else's)."""
        return bool(getattr(self.client, "busy", False)) or self.gen.worker.in_flight_since is not None

    # -- the loop ------------------------------------------------------------------------------
    def _play(self, max_frames: int | None) -> None:
        from backend.interpolation.latent_encoder import VaeOutOfMemoryError  # torch is loaded by now
        from backend.interpolation.vae_runtime import OUT_OF_MEMORY

        # The runner turns OOM in the VAE itself into VaeOutOfMemoryError; a small allocation around
        # it (a slerp of N latents, a cast) can still raise torch's own error. Both are survivable.
        oom_errors = (VaeOutOfMemoryError, OUT_OF_MEMORY)
        stop, clock, pacing = self.shutdown.stop, self.clock, self.gen.pacing
        pacing.restart()
        next_status, next_report = 0.0, clock() + 30.0
        frame = None  # a frame made but not shown yet (a control or edit arrived while it waited)
        while not stop.is_set() and (max_frames is None or self.screen.written < max_frames):
            # Controls, config edits and pause reasons (cheap: a stat each, unless something changed).
            if self._poll_controls_and_config():
                pacing.restart()
                next_status = 0.0  # say "paused" (or what else changed) at once
            if self.pause.applied:
                if self.pause.free_due():
                    free_comfyui(self.client)
                if (now := clock()) >= next_status:
                    self.report.write("paused")
                    next_status = now + 1.0
                clock.wait(stop, 0.1)
                continue
            # Keyframe -> encode -> slerp -> decode: the schedule does it, one frame per call.
            if frame is None:
                try:
                    frame = self.gen.next_frame(timeout=0.1, due=pacing.deadline)
                except oom_errors as exc:  # ComfyUI holds the GPU: keep the picture, retry
                    self._vae_out_of_memory(exc)
                    continue
            if frame is None:  # the keyframe this frame needs is late: hold the picture
                if (now := clock()) >= next_status:
                    self.report.write(self.report.holding_state())
                    next_status = now + 0.25
                continue
            # Pace: show it at its deadline, after using the time until then for the next frames'
            # encode/decode. The wait is an Event wait in short slices, so a stop request cuts it
            # short and a skin command is applied within ~0.25 s even at 0.1 fps.
            try:
                self.gen.prepare(until=pacing.deadline)
            except oom_errors as exc:  # work ahead only: the frame in hand is shown anyway
                self._vae_out_of_memory(exc, wait=0.0)
            waited = self._wait_until(pacing.deadline)
            if waited == "changed":  # a control or an edit (fps, pause) arrived: new cadence from now
                pacing.restart()
            if waited != "due":
                continue  # the frame in hand waits its turn (or the loop ends on a stop)
            # Write the frame and the status; only a frame written counts (and costs write time).
            started = time.perf_counter()
            self.last_error = self.screen.show(frame)
            frame = None
            self.report.write("live")
            if not self.last_error:
                pacing.record_write(time.perf_counter() - started)
            pacing.advance()
            if clock() >= next_report:
                next_report = clock() + 30.0
                self.report.log_pacing()

    def _vae_out_of_memory(self, exc: Exception, wait: float = 1.0) -> None:
        """The VAE found no GPU memory even one frame at a time: say so, wait, try again."""
        self.out_of_memory += 1
        if worth_logging(self.out_of_memory):
            log.warning("VAE out of GPU memory (%d times so far): %s", self.out_of_memory, exc)
        self.last_error = f"VAE out of GPU memory: {str(exc).splitlines()[0][:300]}"
        self.report.write("buffering")
        if self.encoder is not None:
            self.encoder.free_cache()  # what the failed attempt left cached goes back to ComfyUI
        self.clock.wait(self.shutdown.stop, wait)

    def _wait_until(self, deadline: float, slice_s: float = 0.25) -> str:
        """Wait for the deadline: "due", or "stopped" / "changed" (a control or config edit was
        applied) when that cut the wait short."""
        stop, clock = self.shutdown.stop, self.clock
        while (remaining := deadline - clock()) > 0:
            if clock.wait(stop, min(remaining, slice_s)):
                return "stopped"
            if remaining > slice_s and self._poll_controls_and_config():
                return "changed"
            if self.screen.written and clock() - self.report.status_at > 2.0:
                self.report.write("live")  # a heartbeat at low fps: the skin tells "live" from "not responding"
        return "stopped" if stop.is_set() else "due"

    # -- controls --------------------------------------------------------------------------------
    def _poll_controls_and_config(self) -> bool:
        """Apply skin commands, config edits and pause reasons; True when the cadence must restart."""
        restart = False
        for command in self.control.poll() if self.control else []:
            log.info("command: %s", command)
            if command == "quit":
                self.shutdown.request("quit command")
            elif command in ("pause", "resume"):
                self.pause.set("skin", command == "pause")
            elif command == "toggle_pause":
                self.pause.toggle("skin")
            elif command == "next_prompt":
                self.source.next_prompt()
            elif command == "new_keyframe":
                self.source.new_keyframe()
        if self.pause.wanted != self.pause.applied and self.gen is not None:
            self._pause() if self.pause.wanted else self._resume()
            restart = True
        if self.gen is not None and not self.pause.applied and self.citizen.waking != self._waking:
            self._waking = self.citizen.waking  # after a sleep or a reconnect: no new job until it is done
            self.gen.pause() if self._waking else self.gen.resume()
        new = self.watcher.poll()
        if new is not None:
            self._apply(new)
            restart = True
        return restart

    def _pause(self) -> None:
        log.info("paused (%s)", self.pause.reason)
        self.pause.began()
        hold_work(self.gen, self.source, self.encoder)
        if self.pause.free_due():
            free_comfyui(self.client)

    def _resume(self) -> None:
        log.info("resumed")
        self.pause.ended(self.gen.worker.made)
        self.citizen.resumed(self.pause.freed)
        resume_work(self.gen, self.source, hold=self.citizen.waking)

    def _apply(self, config: Config) -> None:
        if self.encoder is None and needs_vae(config):
            log.warning("config: VAE interpolation was off at start (no VAE loaded); restart Reverie to apply")
        self.config = config
        self.pause.free_delay = config.pause.free_after
        self.citizen.update(config)
        if self.dream is not None:
            self.dream.update(config.dream)
        self.gen.update_settings(schedule_settings(config))
        self.writer.configure(png_compression=config.display.png_compression,
                              history_keep=config.display.history_keep)
        if isinstance(self.source, ComfyUISource):
            keyframes = config.keyframes
            self.source.update(prompts=keyframes.prompts, prompt_period=keyframes.prompt_period,
                               seed=seed_policy(config), denoise=config.generation.hybrid.keyframe_denoise)
