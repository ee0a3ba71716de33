"""The running daemon: builds the pieces, plays frames at a steady cadence, stops cleanly.

One loop, one frame per pass: controls and config edits -> next frame from the schedule
(keyframe -> encode -> slerp -> decode) -> wait for its deadline -> write frame and status.
This thread owns the VAE; the keyframe worker thread only talks to the keyframe source.
"""

from __future__ import annotations

import collections
import io
import logging
import sys
import time
from pathlib import Path
from typing import Any

from backend.assembly import (UserError, build_encoder, build_source, needs_vae, schedule_settings,
                               seed_policy)
from backend.config import Config, ConfigWatcher
from backend.control import ControlFile, locate_control_file
from backend.frame_writer import AtomicWriteError, FrameWriter, atomic_write_bytes
from backend.frames import KeyframeSourceError
from backend.keyframes import ComfyUISource
from backend.status import StatusWriter, new_status

log = logging.getLogger(__name__)


def _is_vae_numerics(exc: BaseException) -> bool:
    """A latent_encoder.VaeNumericsError? (checked without importing torch if it never was)."""
    module = sys.modules.get("backend.interpolation.latent_encoder")
    return module is not None and isinstance(exc, module.VaeNumericsError)


def _worth_logging(count: int) -> bool:
    """The 1st, 100th, 200th... of a repeating problem: not one log line per frame for days."""
    return count == 1 or count % 100 == 0


class Daemon:
    def __init__(self, config: Config, config_path: Path, shutdown: Any, *, overrides: dict | None = None):
        self.config, self.shutdown = config, shutdown
        self.overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        # The command line's overrides stay in force across config edits (not reported as restarts).
        self.watcher = ConfigWatcher(config_path, config, overrides=self.overrides)
        control_path = locate_control_file(config.control.file)
        self.control = ControlFile(control_path) if control_path else None
        if self.control is not None:
            self.control.poll()  # the baseline: clicks made while the VAE loads are applied, not swallowed
        display = config.display
        self.writer = FrameWriter(display.output_dir, png_compression=display.png_compression,
                                  ring_size=display.ring_size, history_keep=display.history_keep)
        self.status_writer = StatusWriter(display.output_dir)
        self.started = time.monotonic()
        self.paused = False
        self.shown: dict[str, Any] = {}            # status fields of the frame on screen
        self.shown_prompt: str | None = None        # the prompt of the keyframe that opened this segment
        self.write_times: collections.deque[float] = collections.deque(maxlen=30)
        self.last_error = ""
        self.unwritten = 0                          # frames in a row that could not be written
        self.out_of_memory = 0                      # VAE calls that found no GPU memory
        self.status_ms = 0.0                        # cost of the last status write
        self.status_at = 0.0                        # monotonic time of the last status write
        self.source: Any = None
        self.client: Any = None
        self.encoder: Any = None
        self.gen: Any = None

    def run(self, max_frames: int | None = None) -> int:
        """Play until stopped (or max_frames written); 0 on every normal stop, UserError otherwise."""
        self._status("starting")
        try:
            self.source, self.client = build_source(self.config)
            self.encoder = build_encoder(self.config)
            from backend.interpolation.hybrid_generator import HybridGenerator
            self.gen = HybridGenerator(self.source, self.encoder, schedule_settings(self.config)).start()
            self._play(max_frames)
        except (UserError, KeyframeSourceError) as exc:
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
        self._status("stopped")
        self._close()
        log.info("stopped after %d frames (%s)", self.shown.get("frame", -1) + 1,
                 self.shutdown.reason or "done")
        return 0

    def _fail(self, message: str) -> None:
        self.last_error = message
        self._close()
        self._status("error")

    def _close(self) -> None:
        if self.gen is not None and not self.gen.close(timeout=2.0):
            log.warning("the keyframe thread did not stop within 2 s")
        elif self.gen is None and self.source is not None:
            self.source.close()

    # -- the loop ------------------------------------------------------------------------------
    def _play(self, max_frames: int | None) -> None:
        from backend.interpolation.latent_encoder import VaeOutOfMemoryError  # torch is loaded by now
        from backend.interpolation.vae_runtime import OUT_OF_MEMORY

        # The runner turns OOM in the VAE itself into VaeOutOfMemoryError; a small allocation around
        # it (a slerp of N latents, a cast) can still raise torch's own error. Both are survivable.
        oom_errors = (VaeOutOfMemoryError, OUT_OF_MEMORY)

        stop = self.shutdown.stop
        period = self._period()
        deadline = time.monotonic()
        written, next_waiting_status, next_report = 0, 0.0, time.monotonic() + 30.0
        frame = None  # a frame made but not shown yet (a control or edit arrived while it waited)
        while not stop.is_set() and (max_frames is None or written < max_frames):
            # Controls and config edits (cheap: a stat each, unless something changed).
            if self._poll_controls_and_config():
                period, deadline = self._period(), time.monotonic()
            if self.paused:
                if time.monotonic() >= next_waiting_status:
                    self._status("paused")
                    next_waiting_status = time.monotonic() + 1.0
                stop.wait(0.1)
                continue
            # Keyframe -> encode -> slerp -> decode: the schedule does it, one frame per call.
            if frame is None:
                try:
                    frame = self.gen.next_frame(timeout=0.1, due=deadline)
                except oom_errors as exc:  # ComfyUI holds the GPU: keep the picture, retry
                    self._vae_out_of_memory(exc)
                    continue
            if frame is None:  # the keyframe this frame needs is late: hold the picture
                if time.monotonic() >= next_waiting_status:
                    waiting = "waiting_for_comfyui" if self.source.state == "unavailable" else "buffering"
                    self._status(waiting)
                    next_waiting_status = time.monotonic() + 0.25
                continue
            # Pace: show it at its deadline, after using the time until then for the next frames'
            # encode/decode. The wait is an Event wait in short slices, so a stop request cuts it
            # short and a skin command is applied within ~0.25 s even at 0.1 fps.
            try:
                self.gen.prepare(until=deadline)
            except oom_errors as exc:  # work ahead only: the frame in hand is shown anyway
                self._vae_out_of_memory(exc, wait=0.0)
            waited = self._wait_until(deadline)
            if waited == "changed":  # a control or an edit (fps, pause) arrived: new cadence from now
                period, deadline = self._period(), time.monotonic()
            if waited != "due":
                continue  # the frame in hand waits its turn (or the loop ends on a stop)
            # Write the frame and the status.
            self._show(frame)
            frame = None
            written += 1
            deadline += period
            if deadline < time.monotonic():  # late: restart the cadence instead of bursting
                deadline = time.monotonic() + period
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + 30.0
                self._report()
                period = self._period()

    def _vae_out_of_memory(self, exc: Exception, wait: float = 1.0) -> None:
        """The VAE found no GPU memory even one frame at a time: say so, wait, try again."""
        self.out_of_memory += 1
        if _worth_logging(self.out_of_memory):
            log.warning("VAE out of GPU memory (%d times so far): %s", self.out_of_memory, exc)
        self.last_error = f"VAE out of GPU memory: {str(exc).splitlines()[0][:300]}"
        self._status("buffering")
        if self.encoder is not None:
            self.encoder.free_cache()  # what the failed attempt left cached goes back to ComfyUI
        self.shutdown.stop.wait(wait)

    def _wait_until(self, deadline: float, slice_s: float = 0.25) -> str:
        """Wait for the deadline: "due", or "stopped" / "changed" (a control or config edit was
        applied) when that cut the wait short."""
        while (remaining := deadline - time.monotonic()) > 0:
            if self.shutdown.stop.wait(min(remaining, slice_s)):
                return "stopped"
            if remaining > slice_s and self._poll_controls_and_config():
                return "changed"
            if self.shown and time.monotonic() - self.status_at > 2.0:
                self._status("live")  # a heartbeat at low fps: the skin tells "live" from "not responding"
        return "stopped" if self.shutdown.stop.is_set() else "due"

    def _period(self) -> float:
        """Seconds per frame: the configured fps, capped at what decode + write sustain here."""
        return 1.0 / self.gen.effective_fps(self.config.display.fps)

    def _show(self, frame: Any) -> None:
        started = time.perf_counter()
        try:
            ring = self.writer.write(frame.pixels, frame.index)
        except AtomicWriteError as exc:  # the previous frame stays up; say why in the status
            self.unwritten += 1
            if _worth_logging(self.unwritten):
                log.warning("frame %d not written (%d in a row): %s", frame.index, self.unwritten, exc)
            self.last_error = f"frame not written: {exc}"
            self._status("live")
            return
        if self.unwritten:
            log.info("frames are written again after %d that could not be", self.unwritten)
        self.unwritten = 0
        self.last_error = ""
        if frame.keyframe_image is not None and self.config.display.history_keep > 0:
            try:
                self._keep_keyframe(frame)
            except OSError as exc:  # disk full, a viewer holding the old file: the show goes on
                log.warning("keyframe %d not kept in history: %s", frame.segment, exc)
        if frame.keyframe is not None:
            self.shown_prompt = getattr(frame.keyframe, "prompt", "") or self.shown_prompt
        self.write_times.append(time.monotonic())
        self.shown = dict(frame=frame.index, frame_kind=frame.kind, segment=frame.segment,
                          position=frame.position, segment_frames=frame.segment_frames,
                          frame_file=ring.relative_to(self.writer.output_dir).as_posix())
        self._status("live")
        self.gen.record_write(time.perf_counter() - started)

    def _keep_keyframe(self, frame: Any) -> None:
        """With frame history on, K_s as it went into the VAE: output/keyframes/keyframe_<s>.png."""
        folder = self.writer.output_dir / "keyframes"  # atomic_write_bytes (re)creates it
        buffer = io.BytesIO()
        frame.keyframe_image.save(buffer, format="PNG", compress_level=1)
        atomic_write_bytes(folder / f"keyframe_{frame.segment:06d}.png", buffer.getvalue())
        old = folder / f"keyframe_{frame.segment - self.config.display.history_keep:06d}.png"
        old.unlink(missing_ok=True)

    def _status(self, state: str) -> None:
        started = time.perf_counter()
        gen, source = self.gen, self.source
        times = self.write_times
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        fields = dict(self.shown, state=state, fps=round(fps, 3), target_fps=self.config.display.fps,
                      uptime=time.monotonic() - self.started,
                      last_error=(getattr(source, "last_error", "") or self.last_error))
        if source is not None:
            # The prompt of the picture on screen; before the first frame, the one being made.
            prompt = self.shown_prompt if self.shown_prompt is not None else source.prompt
            fields.update(prompt=prompt, comfyui="unavailable" if source.state == "unavailable"
                          else "not_used" if source.state == "not_used" else "connected")
        if gen is not None:
            fields.update(keyframes=gen.worker.made, stalls=gen.stalls, stall_seconds=gen.stall_seconds,
                          keyframe_latency=gen.keyframe_latency or 0.0)
        try:
            self.status_writer.write(new_status(**fields))
        except AtomicWriteError as exc:
            log.warning("status not written: %s", exc)
        self.status_ms = (time.perf_counter() - started) * 1e3
        self.status_at = time.monotonic()

    def _report(self) -> None:
        gen = self.gen
        cap = gen.fps_cap
        log.info("fps cap %s (decode %.1f ms + write %.1f ms per frame); keyframe latency %s; stalls %d (%.1f s)",
                 f"{cap:.1f}" if cap else "?", (gen.decode_seconds or 0) * 1e3, (gen.write_seconds or 0) * 1e3,
                 f"{gen.keyframe_latency:.2f} s" if gen.keyframe_latency else "?", gen.stalls, gen.stall_seconds)

    # -- controls --------------------------------------------------------------------------------
    def _poll_controls_and_config(self) -> bool:
        """Apply skin commands and config edits; True when the cadence must restart."""
        restart = False
        for command in self.control.poll() if self.control else []:
            log.info("command: %s", command)
            if command == "quit":
                self.shutdown.request("quit command")
            elif command in ("pause", "resume", "toggle_pause"):
                want = not self.paused if command == "toggle_pause" else command == "pause"
                if want != self.paused:
                    self._pause() if want else self._resume()
                    restart = True
            elif command == "next_prompt":
                self.source.next_prompt()
            elif command == "new_keyframe":
                self.source.new_keyframe()
        new = self.watcher.poll()
        if new is not None:
            self._apply(new)
            restart = True
        return restart

    def _pause(self) -> None:
        """Stop ComfyUI requests and VAE work and give their memory back; the picture stays."""
        self.paused = True
        self.gen.pause()
        if self.encoder is not None:
            self.encoder.release()
        if self.client is not None:
            try:
                self.client.free()
            except Exception as exc:  # noqa: BLE001 - freeing is a courtesy; ComfyUI may be down
                log.info("ComfyUI did not free memory: %s", exc)

    def _resume(self) -> None:
        self.paused = False
        self.gen.resume()

    def _apply(self, config: Config) -> None:
        if self.encoder is None and needs_vae(config):
            log.warning("config: VAE interpolation was off at start (no VAE loaded); restart Reverie to apply")
        self.config = config
        self.gen.update_settings(schedule_settings(config))
        self.writer.configure(png_compression=config.display.png_compression,
                              history_keep=config.display.history_keep)
        if isinstance(self.source, ComfyUISource):
            keyframes = config.keyframes
            self.source.update(prompts=keyframes.prompts, prompt_period=keyframes.prompt_period,
                               seed=seed_policy(config), denoise=config.generation.hybrid.keyframe_denoise)
