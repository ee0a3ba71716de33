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
iterator; the caller paces the frames with `pacing`. Only the thread that calls `next_frame`
touches torch.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from backend.frames import Frame, Keyframe
from backend.images import fit_cover
from backend.interpolation.keyframe_worker import KeyframeSource, KeyframeWorker
from backend.interpolation.latent_cache import Encoder, LatentCache, LatentListener
from backend.interpolation.segment import Segment
from backend.pacing import Pacing
from backend.stalls import Stalls


@dataclass(frozen=True)
class ScheduleSettings:
    """The schedule's part of the config (assembly.schedule_settings builds it): no defaults
    here, so nothing can disagree with config.py's."""

    resolution: tuple[int, int]               # (width, height) of every frame, multiples of 8
    mode: str                                 # "hybrid" | "img2img" (every frame a keyframe)
    interpolation_frames: int | str           # in-betweens per segment (>= 0) or "auto"
    use_vae_interpolation: bool               # False: pixel crossfade, no VAE at all
    interpolation_method: str                 # "spherical" | "linear" (latent blend)
    easing: str                               # curve applied to t inside each segment
    show_raw_keyframes: bool                  # j == 0 shows K_s itself instead of decode(z_s)
    fps: float                                # display.fps: the target the pacing caps
    max_batch: int                            # most latents decoded in one call
    auto_margin: float = 1.25                 # auto: segment time >= latency * margin
    auto_max_frames: int = 240                # auto: upper bound on N
    auto_min_frames: int = 3                  # auto: lower bound on N, so fast or loaded keyframes still morph


class HybridGenerator:
    """Pull frames with `next_frame()`; `encoder` may be None for crossfade / img2img modes.

    `on_keyframe_latent(keyframe, latent [1, C, h, w])` is called once per keyframe, on this
    thread, the moment its latent is made (the dream's quality metrics hook in there).
    """

    def __init__(self, source: KeyframeSource, encoder: Encoder | None, settings: ScheduleSettings,
                 *, clock: Callable[[], float] = time.monotonic,
                 on_keyframe_latent: LatentListener | None = None) -> None:
        self.settings = settings
        self.pacing = Pacing(settings.fps, clock)
        self.worker = KeyframeWorker(source, clock=clock)
        self.stalls = Stalls(clock)
        self._cache = LatentCache(encoder, self.pacing, on_keyframe_latent) if encoder is not None else None
        self._clock = clock
        self._resolution = tuple(settings.resolution)  # fixed for the run: latents must match
        self._pending: ScheduleSettings | None = None
        self._index = 0
        self._segment: Segment | None = None

    # -- lifecycle and controls -------------------------------------------------------------
    def start(self) -> HybridGenerator:
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
        """The fps applies at once; everything else from the next segment on (resolution stays)."""
        self.pacing.target_fps = settings.fps
        self._pending = settings

    @property
    def keyframe_latency(self) -> float | None:
        return self.worker.latency.value

    @property
    def waiting(self) -> bool:
        """The last next_frame() call found its keyframe missing."""
        return self.stalls.holding

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
        latency = self._planned_latency()
        if latency is None:  # nothing generated yet (or a folder source): one-second segments
            n = round(self.pacing.fps) - 1
        else:  # a segment of N+1 frames must last at least latency * margin
            n = self.pacing.frames_to_last(latency * settings.auto_margin)
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
    def __iter__(self) -> HybridGenerator:
        return self

    def __next__(self) -> Frame:
        frame = self.next_frame()
        assert frame is not None  # without a timeout next_frame waits for its keyframe
        return frame

    def next_frame(self, timeout: float | None = None, due: float | None = None) -> Frame | None:
        """The next frame, or None if a keyframe it needs did not arrive within `timeout` s.

        `due` is the monotonic time the caller will show the frame: waiting for a keyframe
        past it is a stall (once a frame is on screen; see backend.stalls). With auto N it also
        lets a segment stretch for a late keyframe; a caller that gives no `due` does not pace
        its frames, so there is no display time to stretch into.
        """
        seg = self._segment
        if seg is None:
            first = self._take(timeout, due)
            if first is None:
                return None
            seg = self._begin(0, first)
        # From j = 1 on, and to end the segment, K_{s+1} is needed.
        if seg.j > 0 and seg.end is None:
            seg.end = self._take(timeout, due)
            if seg.end is None:
                return None
        if seg.j > 0 and due is not None:
            self._respread(seg, due)
        if seg.j > seg.n:
            # Segment s is over: segment s+1 opens on K_{s+1}, the latent s was heading to.
            seg = self._begin(seg.index + 1, seg.end)
        if seg.j == 0:
            frame = Frame(self._keyframe_pixels(seg.start), self._index, seg.index, 0, "keyframe", seg.n + 1,
                          seg.start)
        else:
            frame = Frame(self._inbetween_pixels(seg), self._index, seg.index, seg.j, "inbetween", seg.n + 1)
        self._index += 1
        seg.j += 1
        return frame

    def _begin(self, index: int, start: Keyframe) -> Segment:
        if self._pending is not None:
            self.settings, self._pending = self._pending, None
        self._segment = Segment(index, start, self.frames_for(self.settings))
        return self._segment

    def _respread(self, seg: Segment, due: float) -> None:
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
        last = seg.j - 1
        if since is None:  # K_{s+2} is in (or nothing is being made): back to the planned pace
            if seg.n > seg.planned:
                # The fewest frames whose steps are no longer than planned, 1 / (N_planned + 1).
                n = last - 1 + math.ceil((1.0 - seg.u(last)) * (seg.planned + 1) - 1e-9)
                if n < seg.n:
                    seg.spread_rest(n, last)
            return
        now = self._clock()
        arrival = since + latency * settings.auto_margin
        n = self.pacing.frames_until(arrival, max(now, due)) + seg.j - 2
        if seg.j > seg.n and now - since >= (self.keyframe_latency or 0.0):
            n = max(n, seg.j)
        if n > seg.n:
            # Grow in steps, not a frame per frame shown: each re-spread drops what was decoded ahead.
            step = max(settings.max_batch, math.ceil(seg.n / 4))
            n = min(settings.auto_max_frames, max(n, seg.n + step))
            if n > seg.n:
                seg.spread_rest(n, last)

    def prepare(self, until: float) -> None:
        """Spend the idle time before `until` (monotonic) on work the coming frames need.

        In order: take and encode K_{s+1} once the worker has it, decode in-betweens of this
        segment ahead (as many per batch as fit), decode the next keyframe slot. Each step runs
        only when its measured cost (twice it, to be safe) fits before `until`, so the frame
        waiting to be written at `until` is never made late; without this, that work lands on
        the frames that need it and the cadence jitters at every segment start.
        """
        seg, cache = self._segment, self._cache
        while seg is not None and cache is not None and self._vae():
            fits = self.pacing.decodes_before(until)
            if seg.end is None:
                no_time = fits < 1 if self.pacing.decode_seconds is not None else self.pacing.left(until) < 0
                if self.worker.ready is None or no_time:
                    return
                seg.end = self._wrap(self.worker.take(0))
                cache.latent(seg.end)
            elif fits < 1:
                return
            elif seg.decoded_upto < seg.n:
                seg.decode_ahead(cache, self.settings.easing, self.settings.interpolation_method,
                                 min(self.settings.max_batch, fits))
            elif not cache.has_pixels(seg.end):
                cache.pixels(seg.end)
            else:
                return

    def _wrap(self, keyframe: Keyframe | None) -> Keyframe | None:
        """The keyframe with its image fitted (cover-crop) to the resolution."""
        if keyframe is None:
            return None
        return dataclasses.replace(keyframe, image=fit_cover(keyframe.image, self._resolution))

    def _take(self, timeout: float | None, due: float | None) -> Keyframe | None:
        self.stalls.need(due, shown=self._index > 0)
        keyframe = self.worker.take(timeout)
        if keyframe is None:
            self.stalls.missing()
            return None
        self.stalls.arrived()
        return self._wrap(keyframe)

    # -- pixels ------------------------------------------------------------------------------
    def _vae(self) -> bool:
        # Without an encoder (started in crossfade or img2img mode) a live switch to VAE
        # interpolation cannot apply until restart: keep crossfading.
        return (self._cache is not None and self.settings.mode == "hybrid"
                and self.settings.use_vae_interpolation)

    def _keyframe_pixels(self, keyframe: Keyframe) -> np.ndarray:
        if not self._vae() or self.settings.show_raw_keyframes:
            return np.asarray(keyframe.image, dtype=np.uint8)
        return self._cache.pixels(keyframe)

    def _inbetween_pixels(self, seg: Segment) -> np.ndarray:
        if not self._vae():
            return seg.crossfade(self.settings.easing)
        return seg.inbetween(self._cache, self.settings.easing, self.settings.interpolation_method,
                             self.pacing.batch(self.settings.max_batch))
