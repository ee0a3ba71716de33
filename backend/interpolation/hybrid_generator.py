"""The frame schedule: keyframes from a source, slerped latents between them, decoded frames.

Segment s plays positions j = 0..N_s (N_s chosen when the segment starts, so it may change
from one segment to the next):

- j == 0 -> decode(z_s), the VAE reconstruction of K_s (or K_s itself with `show_raw_keyframes`);
- j > 0  -> decode(slerp(z_s, z_{s+1}, t)), t = ease(j / (N_s + 1)), linear by default.

Continuity: segment s+1 opens on decode(z_{s+1}), the very latent segment s was heading to.
With `interpolation_frames: auto` and a paced caller, a segment may also grow while it plays:
when the keyframe in flight (K_{s+2}) has already taken longer than planned, the positions not
yet shown are spread again from the last one shown to t = 1 (see `_respread`), so the segment
still ends on z_{s+1} and the display slows down instead of holding; once K_{s+2} is in, the
rest is spread again at the segment's planned pace.
K_{s+1} is taken from the keyframe worker only when first needed, so the worker (one keyframe
ahead) has a whole segment of display time to make the next one. This object is a pull-based
iterator; the caller paces the frames. Only the thread that calls `next_frame` touches torch.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from backend.frames import Frame
from backend.images import fit_cover
from backend.interpolation.keyframe_worker import KeyframeSource, KeyframeWorker
from backend.interpolation.spherical_lerp import ease, lerp, slerp


@dataclass(frozen=True)
class ScheduleSettings:
    resolution: tuple[int, int] = (512, 512)  # (width, height) of every frame, multiples of 8
    mode: str = "hybrid"                      # "hybrid" | "img2img" (every frame a keyframe)
    interpolation_frames: int | str = 8       # in-betweens per segment (>= 0) or "auto"
    use_vae_interpolation: bool = True        # False: pixel crossfade, no VAE at all
    interpolation_method: str = "spherical"   # "spherical" | "linear" (latent blend)
    easing: str = "linear"                    # curve applied to t inside each segment
    show_raw_keyframes: bool = False          # j == 0 shows K_s itself instead of decode(z_s)
    fps: float = 12.0                         # target frames per second (auto N uses it)
    auto_margin: float = 1.25                 # auto: segment time >= latency * margin
    auto_max_frames: int = 240                # auto: upper bound on N
    auto_min_frames: int = 3                  # auto: lower bound on N, so fast or loaded keyframes still morph
    max_batch: int = 8                        # most latents decoded in one call


@dataclass
class _Key:
    keyframe: Any                       # what the source returned
    image: Any                          # PIL RGB at the configured resolution
    latent: torch.Tensor | None = None  # [1, C, H/8, W/8] scaled latent, made on first need
    pixels: np.ndarray | None = None    # decode(latent) [H, W, 3] uint8, made on first need


class HybridGenerator:
    """Pull frames with `next_frame()`; `encoder` may be None for crossfade / img2img modes."""

    def __init__(self, source: KeyframeSource, encoder: Any, settings: ScheduleSettings,
                 *, clock=time.monotonic) -> None:
        self.settings = settings
        self.worker = KeyframeWorker(source, clock=clock)
        self._encoder = encoder
        self._clock = clock
        self._resolution = tuple(settings.resolution)  # fixed for the run: latents must match
        self._pending: ScheduleSettings | None = None
        self._index = 0
        self._segment = 0
        self._j = 0
        self._n = 0                                  # N_s of the current segment
        self._n_planned = 0                          # N_s as chosen when the segment started
        self._j0, self._u0 = 0, 0.0                  # position j0 showed u0: u runs on to 1 at N_s + 1
        self._current: _Key | None = None            # K_s
        self._next: _Key | None = None               # K_{s+1}, taken when first needed
        self._inbetweens: torch.Tensor | None = None  # [N_s, C, h, w] latents of this segment
        self._decoded: deque[np.ndarray] = deque()   # decoded in-betweens not yet served
        self._decoded_upto = 0                       # in-betweens 1..this of the segment decoded
        self._need_since: float | None = None        # when a missing keyframe was first needed
        self._stalls = 0                 # finished waits for a keyframe after the first segment
        self._stall_seconds = 0.0
        self.waiting = False             # the last next_frame() call returned None
        self.decode_seconds: float | None = None  # EMA per decoded frame
        self.write_seconds: float | None = None   # EMA per written frame (record_write)

    # -- lifecycle and controls -------------------------------------------------------------
    def start(self) -> "HybridGenerator":
        self.worker.start()
        return self

    def close(self, timeout: float = 2.0) -> bool:
        """Stop the keyframe thread; True if it joined within `timeout` seconds."""
        return self.worker.close(timeout)

    def pause(self) -> None:
        self.worker.pause()

    def resume(self) -> None:
        self.worker.resume()

    def update_settings(self, settings: ScheduleSettings) -> None:
        """New settings apply from the next segment on (resolution stays as started)."""
        self._pending = settings

    def record_write(self, seconds: float) -> None:
        """The caller's cost to write one frame (PNG + file + status), for auto N and fps cap."""
        self.write_seconds = _ema(self.write_seconds, seconds)

    @property
    def keyframe_latency(self) -> float | None:
        return self.worker.latency.value

    @property
    def stalls(self) -> int:
        """Waits for a keyframe after the first segment, the one going on now included."""
        return self._stalls + (1 if self._stall_so_far() > 0.001 else 0)

    @property
    def stall_seconds(self) -> float:
        """Total time of those waits, the one going on now counted up to now."""
        return self._stall_seconds + self._stall_so_far()

    @property
    def fps_cap(self) -> float | None:
        """Frames per second that decode + write sustain on this machine (None: not measured)."""
        cost = (self.decode_seconds or 0.0) + (self.write_seconds or 0.0)
        return 1.0 / cost if cost > 0 else None

    def effective_fps(self, target: float) -> float:
        """The rate to pace frames at: `target`, or `fps_cap` once measured and lower."""
        cap = self.fps_cap
        return target if cap is None else min(target, cap)

    def frames_for(self, settings: ScheduleSettings) -> int:
        """N for a segment starting now: fixed, 0 in img2img mode, or from latency when auto.

        Auto plans for the larger of the latency estimate and the time the keyframe in flight
        has taken so far: after a jump in latency the estimate learns it only when that slow
        keyframe finishes, but the segment has to be longer already.
        """
        if settings.mode == "img2img":
            return 0
        if settings.interpolation_frames != "auto":
            return int(settings.interpolation_frames)
        fps = self.effective_fps(settings.fps)
        latency = self._planned_latency()
        if latency is None:  # nothing generated yet (or a folder source): one-second segments
            n = round(fps) - 1
        else:  # a segment of N+1 frames must last at least latency * margin: (N+1)/fps >= L*margin
            n = math.ceil(latency * settings.auto_margin * fps - 1e-9) - 1
        # At least a few in-betweens: at ~1 fps (the SD VAE on a CPU) one-second segments would
        # leave none, and a folder source would cut from picture to picture instead of morphing.
        return max(settings.auto_min_frames, min(settings.auto_max_frames, n))

    def _planned_latency(self) -> float | None:
        """max(latency estimate, time the keyframe in flight has taken so far); None until a
        generated keyframe has been measured (there is nothing to plan against before)."""
        latency, since = self.keyframe_latency, self.worker.in_flight_since
        if latency is None or since is None:
            return latency
        return max(latency, self._clock() - since)

    # -- the schedule ------------------------------------------------------------------------
    def __iter__(self):
        return self

    def __next__(self) -> Frame:
        return self.next_frame()

    def next_frame(self, timeout: float | None = None, due: float | None = None) -> Frame | None:
        """The next frame, or None if a keyframe it needs did not arrive within `timeout` s.

        `due` is the monotonic time the caller will show the frame: waiting for a keyframe
        past it counts as a stall (not before; and never in segment 0, which is buffering).
        With auto N it also lets a segment stretch for a late keyframe; a caller that gives no
        `due` does not pace its frames, so there is no display time to stretch into.
        """
        if self._current is None:
            key = self._take(timeout, due)
            if key is None:
                return None
            self._current = key
            self._begin_segment()
        # From j = 1 on, and to end the segment, K_{s+1} is needed.
        if self._j > 0 and self._next is None and not self._take_next(timeout, due):
            return None
        if self._j > 0 and due is not None:
            self._respread(due)
        if self._j > self._n:
            # Segment s is over: segment s+1 opens on K_{s+1}, the latent s was heading to.
            self._segment += 1
            self._current, self._next = self._next, None
            self._begin_segment()
        if self._j == 0:
            pixels, kind = self._keyframe_pixels(self._current), "keyframe"
            keyframe, fitted = self._current.keyframe, self._current.image
        else:
            pixels, kind, keyframe, fitted = self._inbetween_pixels(), "inbetween", None, None
        frame = Frame(pixels, self._index, self._segment, self._j, kind, self._n + 1, keyframe, fitted)
        self._index += 1
        self._j += 1
        return frame

    def _take_next(self, timeout: float | None, due: float | None) -> bool:
        self._next = self._take(timeout, due)
        return self._next is not None

    def _begin_segment(self) -> None:
        self._j = 0
        if self._pending is not None:
            self.settings, self._pending = self._pending, None
        self._n = self._n_planned = self.frames_for(self.settings)
        self._j0, self._u0 = 0, 0.0
        self._inbetweens = None
        self._decoded.clear()
        self._decoded_upto = 0

    def _respread(self, due: float) -> None:
        """auto: give the rest of segment s more frames while K_{s+2} will be late for s+1,
        and go back to the planned pace once it is in.

        K_{s+2} (in flight since `since`) is needed at position 1 of segment s+1, which is
        N_s - j + 2 frames after frame j (shown at `due`, or now if that has passed). Plan for
        it to take max(estimate, elapsed) x margin, as `frames_for` does. And never open s+1
        while K_{s+2} is overdue (it has taken the estimate and is not here): s+1 would hold one
        frame later, so this segment gets one frame more instead.
        """
        settings, since, latency = self.settings, self.worker.in_flight_since, self._planned_latency()
        if settings.interpolation_frames != "auto" or settings.mode == "img2img" or latency is None:
            return
        last = self._j - 1
        if since is None:  # K_{s+2} is in (or nothing is being made): back to the planned pace
            if self._n > self._n_planned:
                # The fewest frames whose steps are no longer than planned, 1 / (N_planned + 1).
                n = last - 1 + math.ceil((1.0 - self._u(last)) * (self._n_planned + 1) - 1e-9)
                if n < self._n:
                    self._spread_rest(n, last)
            return
        now = self._clock()
        fps = self.effective_fps(settings.fps)
        arrival = since + latency * settings.auto_margin
        n = math.ceil((arrival - max(now, due)) * fps - 1e-9) + self._j - 2
        if self._j > self._n and now - since >= self.keyframe_latency:
            n = max(n, self._j)
        if n > self._n:
            # Grow in steps, not a frame per frame shown: each re-spread drops what was decoded ahead.
            step = max(settings.max_batch, math.ceil(self._n / 4))
            n = min(settings.auto_max_frames, max(n, self._n + step))
            if n > self._n:
                self._spread_rest(n, last)

    def _spread_rest(self, n: int, last: int) -> None:
        """N_s = n from now on: positions last+1..n run on from where `last` was shown to t = 1."""
        self._j0, self._u0 = last, self._u(last)  # frame `last` stays where it was shown
        self._n = n
        self._inbetweens = None                    # decoded-ahead frames had the old spacing
        self._decoded.clear()
        self._decoded_upto = last

    def _u(self, j):
        """Linear progress of position j (int or tensor) through the segment: u0 at j0, 1 at N_s + 1."""
        return self._u0 + (1.0 - self._u0) * (j - self._j0) / (self._n + 1 - self._j0)

    def prepare(self, until: float) -> None:
        """Spend the idle time before `until` (monotonic) on work the coming frames need.

        In order: take and encode K_{s+1} once the worker has it, decode in-betweens of this
        segment ahead (as many per batch as fit), decode the next keyframe slot. Each step runs
        only when its measured cost fits before `until`, so the frame waiting to be written at
        `until` is never made late; without this, that work lands on the frames that need it
        and the cadence jitters at every segment start.
        """
        while self._current is not None and self._vae():
            left = until - self._clock()
            # Twice the measured cost: a decode that runs long must not make the frame late.
            cost = 2.0 * self.decode_seconds if self.decode_seconds is not None else None
            if self._next is None:
                if self.worker.ready is None or (cost or 0.0) > left:
                    return
                self._next = self._wrap(self.worker.take(0))
                self._latent(self._next)
            elif cost is None or cost > left:
                return
            elif self._decoded_upto < self._n:
                self._decode_chunk(min(self.settings.max_batch, int(left / cost)))
            elif self._next.pixels is None:
                self._next.pixels = self._decode(self._latent(self._next))[0]
            else:
                return

    def _wrap(self, keyframe: Any) -> _Key:
        return _Key(keyframe, fit_cover(keyframe.image, self._resolution))

    def _take(self, timeout: float | None, due: float | None) -> _Key | None:
        now = self._clock()
        if self._need_since is None:
            self._need_since = now if due is None else max(now, due)
        keyframe = self.worker.take(timeout)
        self.waiting = keyframe is None
        if keyframe is None:
            return None
        waited = self._clock() - self._need_since
        self._need_since = None
        if self._segment >= 1 and waited > 0.001:
            self._stalls += 1
            self._stall_seconds += waited
        return self._wrap(keyframe)

    def _stall_so_far(self) -> float:
        """Seconds the display has held so far for a keyframe that has not come yet (0: none)."""
        if not self.waiting or self._need_since is None or self._segment < 1:
            return 0.0
        return max(0.0, self._clock() - self._need_since)

    # -- pixels ------------------------------------------------------------------------------
    def _vae(self) -> bool:
        # Without an encoder (started in crossfade or img2img mode) a live switch to VAE
        # interpolation cannot apply until restart: keep crossfading.
        return (self._encoder is not None and self.settings.mode == "hybrid"
                and self.settings.use_vae_interpolation)

    def _latent(self, key: _Key) -> torch.Tensor:
        if key.latent is None:
            key.latent = self._encoder.encode([key.image])  # [1, C, H/8, W/8]
        return key.latent

    def _keyframe_pixels(self, key: _Key) -> np.ndarray:
        if not self._vae() or self.settings.show_raw_keyframes:
            return np.asarray(key.image, dtype=np.uint8)
        if key.pixels is None:
            key.pixels = self._decode(self._latent(key))[0]
        return key.pixels

    def _inbetween_pixels(self) -> np.ndarray:
        t = ease(self._u(self._j), self.settings.easing)
        if not self._vae():
            a = np.asarray(self._current.image, dtype=np.float32)
            b = np.asarray(self._next.image, dtype=np.float32)
            return np.clip(np.rint(a + (b - a) * t), 0, 255).astype(np.uint8)
        if not self._decoded:
            self._decode_chunk(self._chunk_size())
        return self._decoded.popleft()

    def _decode_chunk(self, count: int) -> None:
        """Decode the next `count` (>= 1) in-betweens of this segment into the serving queue."""
        if self._inbetweens is None:
            z0, z1 = self._latent(self._current), self._latent(self._next)
            u = self._u(torch.arange(1, self._n + 1, dtype=torch.float64)).float()  # [N]
            t = ease(u, self.settings.easing).to(z0.device)
            blend = slerp if self.settings.interpolation_method == "spherical" else lerp
            self._inbetweens = blend(z0, z1, t)[:, 0]  # [N, 1, C, h, w] -> [N, C, h, w]
        first = self._decoded_upto
        count = max(1, min(count, self._n - first))
        self._decoded.extend(self._decode(self._inbetweens[first:first + count]))
        self._decoded_upto += count

    def _chunk_size(self) -> int:
        # Decode as many frames at once as fit in one frame interval, so a batch never makes
        # the frame after it late; the first chunk of a run is one frame (cost unknown).
        if self.decode_seconds is None:
            return 1
        budget = 1.0 / self.effective_fps(self.settings.fps) - (self.write_seconds or 0.0)
        return max(1, min(self.settings.max_batch, int(budget / self.decode_seconds)))

    def _decode(self, latents: torch.Tensor) -> np.ndarray:
        started = self._clock()
        pixels = self._encoder.decode_to_uint8(latents)  # [B, H, W, 3] uint8
        # Floored: a clock coarser than the decode (15.6 ms ticks on Windows before Python 3.13)
        # reads 0 s, and the budgets in prepare() and _chunk_size() divide by this cost.
        seconds = max(1e-6, (self._clock() - started) / len(latents))
        self.decode_seconds = _ema(self.decode_seconds, seconds)
        return pixels


def _ema(old: float | None, sample: float, weight: float = 0.2) -> float:
    return sample if old is None else old + weight * (sample - old)
