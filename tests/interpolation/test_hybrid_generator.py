"""The frame schedule against a fake keyframe source and a small exact fake "VAE"."""

from __future__ import annotations

import threading
import time
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from backend.frames import Keyframe
from backend.images import fit_cover
from backend.interpolation.hybrid_generator import HybridGenerator, ScheduleSettings
from backend.interpolation.keyframe_worker import LatencyEstimate
from backend.interpolation.segment import Segment
from backend.interpolation.spherical_lerp import ease, lerp, slerp
from tests.interpolation.gated import FakeClock, Gated, wait_until

RES = (32, 16)  # (width, height): latents of [4, 2, 4]


class PoolEncoder:
    """Deterministic stand-in for a VAE: 8x8 average pool (encode), nearest upsample (decode).

    Latents are [B, 4, H/8, W/8]: RGB in [-1, 1] plus a constant channel so no latent is zero.
    Every latent it decodes is recorded, so tests can check what the schedule asked for.
    """

    def __init__(self) -> None:
        self.encoded_sizes: list[tuple[int, int]] = []
        self.decoded: list[torch.Tensor] = []

    def encode(self, images: list[Image.Image]) -> torch.Tensor:
        self.encoded_sizes += [im.size for im in images]
        x = torch.stack([torch.from_numpy(np.asarray(im, dtype=np.float32)).permute(2, 0, 1)
                         for im in images]) / 127.5 - 1.0  # [B, 3, H, W]
        z = F.avg_pool2d(x, 8)  # [B, 3, H/8, W/8]
        return torch.cat([z, torch.ones_like(z[:, :1])], dim=1)

    def decode_to_uint8(self, latents: torch.Tensor) -> np.ndarray:
        self.decoded.append(latents.clone())
        x = F.interpolate(latents[:, :3], scale_factor=8, mode="nearest")  # [B, 3, H, W]
        x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return x.permute(0, 2, 3, 1).numpy()  # [B, H, W, 3]


def settings(**changes) -> ScheduleSettings:
    """Schedule settings for RES with 3 in-betweens at 10 fps; `changes` override any field."""
    base = dict(resolution=RES, mode="hybrid", interpolation_frames=3, use_vae_interpolation=True,
                interpolation_method="spherical", easing="linear", show_raw_keyframes=False, fps=10.0,
                max_batch=8)
    return ScheduleSettings(**{**base, **changes})


def fake_keyframe(image: Image.Image, number: int, seconds: float = 0.0) -> Keyframe:
    """Keyframe `number` (carried as its seed, so tests can tell keyframes apart)."""
    return Keyframe(image, seconds, seed=number)


class FakeSource:
    """Keyframe n is random noise seeded by n, at a size other than RES; `delay` s per call."""

    def __init__(self, delay: float = 0.0, fail_at: int | None = None) -> None:
        self.delay = delay
        self.fail_at = fail_at
        self.calls = 0
        self.previous: list[object] = []
        self.made: list[Image.Image] = []
        self._closed = threading.Event()

    def next_keyframe(self, previous):
        number = self.calls
        self.calls += 1
        self.previous.append(previous)
        if number == self.fail_at:
            raise RuntimeError("the source broke")
        if self.delay and self._closed.wait(self.delay):
            return None
        self.made.append(keyframe_image(number))
        return fake_keyframe(self.made[-1], number, seconds=self.delay)

    def close(self) -> None:
        self._closed.set()


def make(source=None, encoder="pool", **changes) -> tuple[HybridGenerator, FakeSource, PoolEncoder]:
    source = source or FakeSource()
    encoder = PoolEncoder() if encoder == "pool" else encoder
    gen = HybridGenerator(source, encoder, settings(**changes)).start()
    return gen, source, encoder


def pull(gen: HybridGenerator, count: int) -> list:
    frames = [gen.next_frame(timeout=10) for _ in range(count)]
    assert all(f is not None for f in frames)
    return frames


def keyframe_image(number: int) -> Image.Image:
    """Keyframe n as FakeSource makes it: noise seeded by n, 48x40 (not RES)."""
    return Image.fromarray(np.random.default_rng(number).integers(0, 256, (40, 48, 3), dtype=np.uint8))


def fitted(number: int) -> Image.Image:
    return fit_cover(keyframe_image(number), RES)


@pytest.fixture
def closing():
    made = []
    yield made.append
    for gen in made:
        assert gen.close()


def test_segments_play_the_keyframe_slot_then_the_inbetweens_in_order(closing):
    gen, _, _ = make(interpolation_frames=3)
    closing(gen)
    frames = pull(gen, 10)
    assert [(f.index, f.segment, f.position, f.kind, f.segment_frames) for f in frames[:6]] == [
        (0, 0, 0, "keyframe", 4), (1, 0, 1, "inbetween", 4), (2, 0, 2, "inbetween", 4),
        (3, 0, 3, "inbetween", 4), (4, 1, 0, "keyframe", 4), (5, 1, 1, "inbetween", 4)]
    assert [f.keyframe.seed for f in frames if f.kind == "keyframe"] == [0, 1, 2]
    assert all(f.keyframe is None for f in frames if f.kind == "inbetween")
    assert all(f.pixels.shape == (16, 32, 3) and f.pixels.dtype == np.uint8 for f in frames)


def test_keyframe_slot_is_exactly_the_decoded_latent_that_ended_the_previous_segment(closing):
    gen, _, enc = make(interpolation_frames=3)
    closing(gen)
    frames = pull(gen, 13)
    reference = PoolEncoder()
    z = [reference.encode([fitted(n)]) for n in range(4)]  # [1, 4, 2, 4] each
    for f in frames:
        s, j, n = f.segment, f.position, f.segment_frames - 1
        # Segment s heads to z[s+1] (t -> 1); the slot j == 0 of s+1 shows exactly decode(z[s+1]).
        latent = z[s] if j == 0 else slerp(z[s], z[s + 1], j / (n + 1))
        assert np.array_equal(f.pixels, reference.decode_to_uint8(latent)[0]), (s, j)
    assert torch.equal(slerp(z[1], z[2], 1.0), z[2])
    keyframe_slots = [d for d in enc.decoded if d.shape[0] == 1 and d[0, 3].eq(1).all()]
    assert any(torch.equal(d, z[3]) for d in keyframe_slots)


def test_segment_length_changes_between_segments_and_continuity_still_holds(closing):
    gen, _, _ = make(interpolation_frames=2)
    closing(gen)
    frames = pull(gen, 2)  # segment 0: j = 0, 1
    gen.update_settings(settings(interpolation_frames=5))
    frames += pull(gen, 1 + 6 + 6)
    assert [f.segment_frames for f in frames] == [3] * 3 + [6] * 12
    reference = PoolEncoder()
    for f in frames:
        if f.kind == "keyframe":
            expected = reference.decode_to_uint8(reference.encode([fitted(f.segment)]))[0]
            assert np.array_equal(f.pixels, expected)


def test_keyframes_are_fitted_to_the_resolution_before_encoding(closing):
    gen, _, enc = make()
    closing(gen)
    pull(gen, 5)
    assert enc.encoded_sizes and set(enc.encoded_sizes) == {RES}


def test_inbetweens_are_decoded_in_batches_no_larger_than_max_batch(closing):
    gen, _, enc = make(interpolation_frames=10, max_batch=4, fps=1.0)
    closing(gen)
    pull(gen, 23)
    sizes = [d.shape[0] for d in enc.decoded]
    assert max(sizes) == 4 and sizes.count(4) >= 3


def test_worker_runs_exactly_one_keyframe_ahead(closing):
    gen, source, _ = make(interpolation_frames=3)
    closing(gen)
    frames = pull(gen, 6)  # into segment 1: K_0, K_1, K_2 taken
    assert frames[-1].segment == 1
    time.sleep(0.3)  # give the worker every chance to run further ahead than it should
    assert source.calls == 4  # K_3 made and waiting, K_4 not started
    assert [p is None for p in source.previous] == [True, False, False, False]


def test_worker_feeds_each_keyframe_the_previous_keyframe(closing):
    gen, source, _ = make(interpolation_frames=0)
    closing(gen)
    frames = pull(gen, 4)
    # The source gets the very keyframe it made last (seed, prompt and all), not the fitted copy.
    assert source.previous[1].image is source.made[0] and source.previous[1].seed == frames[0].keyframe.seed == 0
    assert source.previous[2].image is source.made[1] and source.previous[2].seed == frames[1].keyframe.seed == 1


def test_stalls_are_counted_and_timed_when_the_source_is_slower_than_a_segment(closing):
    gen, _, _ = make(FakeSource(delay=0.15), interpolation_frames=1)
    closing(gen)
    pull(gen, 8)  # four segments of two frames, pulled as fast as possible
    assert gen.stalls.count >= 2
    assert gen.stalls.seconds >= 0.15


def test_no_stall_when_each_keyframe_arrives_within_one_segment(closing):
    gen, _, _ = make(FakeSource(delay=0.02), interpolation_frames=4)
    closing(gen)
    due = time.monotonic()
    for _ in range(20):
        due += 0.04  # a segment lasts 5 x 40 ms, ten times the keyframe latency
        assert gen.next_frame(timeout=5, due=due) is not None
        time.sleep(max(0.0, due - time.monotonic()))
    assert gen.stalls.count == 0


def test_next_frame_returns_none_while_the_needed_keyframe_is_late(closing):
    gen, _, _ = make(FakeSource(delay=0.5), interpolation_frames=2)
    closing(gen)
    assert gen.next_frame(timeout=0.01) is None and gen.waiting
    assert gen.next_frame(timeout=5).kind == "keyframe" and not gen.waiting


def test_auto_frames_follow_the_measured_keyframe_latency():
    gen = HybridGenerator(FakeSource(), PoolEncoder(), settings())
    auto = settings(interpolation_frames="auto", fps=10, auto_margin=1.2)
    gen.worker.latency.add(1.0)
    assert gen.frames_for(auto) == 11  # 12 frames at 10 fps = 1.2 s = 1.0 s x 1.2
    gen.worker.latency.add(3.0)
    assert gen.frames_for(auto) == 35
    gen.pacing.decode_seconds, gen.pacing.write_seconds = 0.15, 0.05  # only 5 fps sustainable: the cap wins
    assert gen.pacing.fps_cap == pytest.approx(5.0)
    assert gen.frames_for(auto) == 17


def test_auto_segments_grow_when_the_source_slows_down(closing):
    source = FakeSource(delay=0.03)
    gen, _, _ = make(source, interpolation_frames="auto", fps=50, auto_margin=1.2)
    closing(gen)
    early = pull(gen, 12)
    source.delay = 0.15  # N+1 >= 0.15 s x 1.2 x 50 fps = 9 frames, against 4 (the floor) before
    late = pull(gen, 40)
    assert max(f.segment_frames for f in late) >= 2 * max(f.segment_frames for f in early[4:])


def test_auto_keeps_a_few_in_betweens_even_when_the_fps_is_low_or_keyframes_are_instant(closing):
    gen, _, _ = make(FakeSource(), interpolation_frames="auto", fps=0.75)
    closing(gen)
    # ~0.75 fps is what the SD VAE or TAESD at 512x512 sustains on a CPU: one-second segments would
    # mean no in-betweens at all, and a folder of photos would cut instead of morph.
    assert gen.frames_for(gen.settings) == 3


def test_crossfade_mode_blends_keyframe_pixels_without_a_vae(closing):
    gen, _, _ = make(encoder=None, use_vae_interpolation=False, interpolation_frames=3)
    closing(gen)
    frames = pull(gen, 5)
    a = np.asarray(fitted(0), dtype=np.float32)
    b = np.asarray(fitted(1), dtype=np.float32)
    assert np.array_equal(frames[0].pixels, a.astype(np.uint8))
    assert np.array_equal(frames[2].pixels, np.rint(a + (b - a) * 0.5).astype(np.uint8))
    assert np.array_equal(frames[4].pixels, b.astype(np.uint8))


def test_img2img_mode_makes_every_frame_a_new_keyframe(closing):
    gen, _, _ = make(encoder=None, mode="img2img")
    closing(gen)
    frames = pull(gen, 4)
    assert [(f.segment, f.kind, f.keyframe.seed) for f in frames] == [
        (n, "keyframe", n) for n in range(4)]
    assert np.array_equal(frames[2].pixels, np.asarray(fitted(2)))


def test_show_raw_keyframes_puts_the_source_image_in_the_keyframe_slot(closing):
    gen, _, _ = make(show_raw_keyframes=True)
    closing(gen)
    frames = pull(gen, 5)
    assert np.array_equal(frames[4].pixels, np.asarray(fitted(1)))


def test_a_fatal_source_error_reaches_the_caller(closing):
    gen, _, _ = make(FakeSource(fail_at=1))
    closing(gen)
    gen.next_frame(timeout=5)
    with pytest.raises(RuntimeError, match="the source broke"):
        gen.next_frame(timeout=5)


def test_paused_worker_starts_no_new_keyframe(closing):
    gen, source, _ = make(interpolation_frames=0)
    closing(gen)
    pull(gen, 2)
    gen.pause()
    time.sleep(0.1)
    calls = source.calls
    # Keyframes finished before the pause are still served (one or none, depending on whether the
    # worker had started the next request when the pause came); after that the display holds.
    served = 0
    while gen.next_frame(timeout=0.5) is not None:
        served += 1
        assert served <= 2, "a paused generator kept producing frames"
    time.sleep(0.2)
    assert source.calls == calls and gen.next_frame(timeout=0.1) is None
    gen.resume()
    assert gen.next_frame(timeout=5) is not None


def test_close_joins_the_worker_even_inside_a_slow_request_and_leaks_no_thread():
    before = threading.active_count()
    gen, _, _ = make(FakeSource(delay=30.0))
    time.sleep(0.05)
    started = time.monotonic()
    assert gen.close(timeout=2.0)
    assert time.monotonic() - started < 1.0
    assert not gen.worker.alive and threading.active_count() == before


def test_work_done_ahead_in_idle_time_changes_no_frame(closing):
    plain, _, _ = make(interpolation_frames=3, max_batch=2)
    ahead, _, enc = make(interpolation_frames=3, max_batch=2)
    closing(plain)
    closing(ahead)
    expected = pull(plain, 14)
    got = []
    for _ in range(14):
        got.append(ahead.next_frame(timeout=10))
        time.sleep(0.02)  # let the worker finish the next keyframe
        ahead.prepare(until=time.monotonic() + 1.0)
    assert [(f.segment, f.position) for f in got] == [(f.segment, f.position) for f in expected]
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(got, expected))
    assert max(d.shape[0] for d in enc.decoded) == 2


def test_prepare_takes_the_next_keyframe_early_and_decodes_ahead_so_next_frame_only_serves(closing):
    gen, _, enc = make(interpolation_frames=3)
    closing(gen)
    pull(gen, 2)  # K_0 and K_1 taken, decode cost measured
    deadline = time.monotonic() + 5
    while gen.worker.ready is None and time.monotonic() < deadline:
        time.sleep(0.01)
    gen.prepare(until=time.monotonic() + 1.0)
    calls = len(enc.decoded)
    frames = pull(gen, 3)  # j = 2, 3 of segment 0, then the slot of segment 1
    assert [f.position for f in frames] == [2, 3, 0]
    assert len(enc.decoded) == calls  # everything was ready


def test_prepare_does_nothing_when_no_time_is_left(closing):
    gen, _, enc = make(interpolation_frames=3)
    closing(gen)
    pull(gen, 2)
    calls = len(enc.decoded)
    gen.prepare(until=time.monotonic() - 1.0)
    assert len(enc.decoded) == calls


class GatedSource(Gated):
    """Keyframe n is a flat colour seeded by n (far apart, so a wrong t shows in every pixel);
    it reports `latencies[n]` s and finishes only when the test calls `finish()`."""

    def __init__(self, latencies: list[float]) -> None:
        super().__init__()
        self.latencies = latencies

    @staticmethod
    def image(number: int) -> Image.Image:
        colour = np.random.default_rng(number).integers(0, 256, 3)
        return Image.new("RGB", (48, 40), tuple(int(c) for c in colour))

    def next_keyframe(self, previous):
        number = self.calls
        self.calls += 1
        if not self._wait_for_finish():
            return None
        return fake_keyframe(self.image(number), number, seconds=self.latencies[number])


def play_paced(gen: HybridGenerator, source: GatedSource, clock: FakeClock, fps: float, count: int) -> list:
    """The daemon's loop on a fake clock: right after a frame is shown, ask for the one due 1/fps
    later and prepare it; the keyframe in flight finishes once its latency has passed on the clock.
    Returns what next_frame gave at each tick (None: the display held)."""
    wait_until(lambda: gen.worker.in_flight_since is not None)  # K_0 asked for at clock 0
    results, tick = [], 0
    while sum(f is not None for f in results) < count:
        assert tick < 10 * count, "the display held for good"
        clock.now = tick / fps
        tick += 1
        since, made = gen.worker.in_flight_since, gen.worker.made
        if since is not None and clock.now >= since + source.latencies[made]:
            source.finish()
            wait_until(lambda: gen.worker.made > made)
        frame = gen.next_frame(timeout=0.05, due=clock.now + 1 / fps)
        if frame is not None:
            gen.prepare(until=clock.now + 1 / fps)
        results.append(frame)
    return results


def test_auto_frames_plan_for_a_keyframe_in_flight_that_already_took_longer_than_the_estimate(closing):
    clock = FakeClock(100.0)
    source = GatedSource([1.0, 1.0, 1.0])
    gen = HybridGenerator(source, PoolEncoder(), settings(), clock=clock).start()
    closing(gen)
    auto = settings(interpolation_frames="auto", fps=10, auto_margin=1.2)
    source.finish()
    wait_until(lambda: gen.worker.made == 1)  # K_0 took 1.0 s: the estimate
    assert gen.worker.take(timeout=1) is not None  # K_1 asked for at 100.0
    assert gen.frames_for(auto) == 11
    clock.now = 103.0  # K_1 has taken 3 s and is not done: the estimate cannot know yet
    assert gen.keyframe_latency == 1.0
    assert gen.frames_for(auto) == 35  # 36 frames at 10 fps = 3.0 s x 1.2


def segments_on_the_arc(frames: list) -> dict[int, list]:
    """Frames by segment, after checking each picture is where the schedule must put it.

    The slot of segment s is exactly decode(z_s). Every in-between is decode(slerp(z_s, z_{s+1},
    t)) where each frame covers an equal share of what is left of the segment over the frames
    left (t_j = t_{j-1} + (1 - t_{j-1}) / (N_j + 2 - j), N_j as the frame reports it): the same
    rule whether or not the segment was re-spread, so the segment always runs on to exactly
    z_{s+1}, where segment s+1 opens.
    """
    by_segment: dict[int, list] = {}
    for f in frames:
        by_segment.setdefault(f.segment, []).append(f)
    reference = PoolEncoder()
    z = [reference.encode([fit_cover(GatedSource.image(n), RES)]) for n in range(len(by_segment) + 1)]
    for s, seg in by_segment.items():
        assert [f.position for f in seg] == list(range(len(seg)))
        assert np.array_equal(seg[0].pixels, reference.decode_to_uint8(z[s])[0])
        t = 0.0
        for f in seg[1:]:
            t += (1.0 - t) / (f.segment_frames + 1 - f.position)
            expected = reference.decode_to_uint8(slerp(z[s], z[s + 1], t))[0]
            assert np.abs(f.pixels.astype(int) - expected).max() <= 1, (s, f.position)
        assert t < 1.0
    return by_segment


def test_auto_segment_stretches_while_a_late_keyframe_is_in_flight_and_still_ends_on_the_next_latent(closing):
    fps, count = 4.0, 45
    clock = FakeClock()
    source = GatedSource([1.0] * 6 + [3.0] * 10)  # K_6 onwards take three times as long
    chosen = settings(interpolation_frames="auto", fps=fps, auto_margin=1.25)
    gen = HybridGenerator(source, PoolEncoder(), chosen, clock=clock).start()
    closing(gen)
    results = play_paced(gen, source, clock, fps, count)
    # The one hold is K_1 arriving after K_0 was shown (a stall); after it the display never holds.
    first_inbetween = next(i for i, f in enumerate(results) if f is not None and f.position == 1)
    assert None not in results[first_inbetween:] and gen.stalls.count == 1
    by_segment = segments_on_the_arc([f for f in results if f is not None])
    # The segment playing while K_6 was late grew while it played.
    grown = [seg for seg in by_segment.values() if max(f.segment_frames for f in seg) > seg[0].segment_frames]
    assert grown


def test_a_stretched_segment_goes_back_to_its_planned_pace_once_the_late_keyframe_is_in(closing):
    fps = 20.0  # at 20 fps the stretch plans many frames ahead of a late keyframe
    clock = FakeClock()
    source = GatedSource([1.0] * 6 + [3.0] * 10)
    chosen = settings(interpolation_frames="auto", fps=fps, auto_margin=1.25)
    gen = HybridGenerator(source, PoolEncoder(), chosen, clock=clock).start()
    closing(gen)
    frames = [f for f in play_paced(gen, source, clock, fps, 170) if f is not None]
    by_segment = segments_on_the_arc(frames)
    stretched = by_segment[4]  # the one playing while K_6 was late
    planned, most = stretched[0].segment_frames, max(f.segment_frames for f in stretched)
    assert most > planned
    # K_6 came (at 3 s) long before the stretched plan ran out: the rest was spread again with
    # steps no longer than planned, so the segment ended well before `most` frames.
    assert 5 in by_segment and len(stretched) < most


def test_a_long_overdue_keyframe_grows_the_segment_in_steps_not_a_frame_per_frame(closing):
    fps = 10.0
    clock = FakeClock()
    source = GatedSource([1.0] * 6 + [12.0] * 10)  # K_6 takes twelve times the estimate
    chosen = settings(interpolation_frames="auto", fps=fps, auto_margin=1.25)
    gen = HybridGenerator(source, PoolEncoder(), chosen, clock=clock).start()
    closing(gen)
    frames = [f for f in play_paced(gen, source, clock, fps, 200) if f is not None]
    stretched = segments_on_the_arc(frames)[4]  # the one playing while K_6 was late
    plans = [f.segment_frames for f in stretched]
    changes = sum(a != b for a, b in zip(plans, plans[1:]))
    # Every re-spread throws away the frames decoded ahead: it must not happen at every frame.
    assert len(stretched) > 60 and changes <= len(stretched) // 6, (len(stretched), changes)


def test_fixed_segments_never_stretch_so_a_late_keyframe_holds_the_display(closing):
    fps = 4.0
    clock = FakeClock()
    source = GatedSource([1.0] * 6 + [3.0] * 10)
    chosen = settings(interpolation_frames=4, fps=fps)
    gen = HybridGenerator(source, PoolEncoder(), chosen, clock=clock).start()
    closing(gen)
    frames = [f for f in play_paced(gen, source, clock, fps, 40) if f is not None]
    assert {f.segment_frames for f in frames} == {5} and gen.stalls.count >= 1


def test_waiting_for_k1_after_k0_was_shown_is_a_stall_but_waiting_for_k0_at_start_up_is_not(closing):
    clock = FakeClock(10.0)
    source = GatedSource([0.5, 0.5, 0.5])
    gen = HybridGenerator(source, PoolEncoder(), settings(interpolation_frames=1), clock=clock).start()
    closing(gen)
    assert gen.next_frame(timeout=0.01, due=10.0) is None  # K_0 not made yet: starting
    clock.now = 14.0
    assert (gen.stalls.count, gen.stalls.seconds) == (0, 0.0)
    source.finish()
    assert gen.next_frame(timeout=5, due=14.0).position == 0  # K_0 on screen
    assert gen.stalls.count == 0
    assert gen.next_frame(timeout=0.01, due=14.5) is None  # (0, 1) needs K_1: the picture holds
    clock.now = 20.0
    assert (gen.stalls.count, gen.stalls.seconds) == (1, 5.5)  # a long hold in the first segment
    source.finish()
    assert gen.next_frame(timeout=5, due=20.0).position == 1
    assert (gen.stalls.count, gen.stalls.seconds) == (1, 5.5)


def test_each_keyframe_latent_is_handed_to_the_listener_once_when_it_is_made(closing):
    seen: list[tuple[int, torch.Tensor]] = []
    gen = HybridGenerator(FakeSource(), PoolEncoder(), settings(interpolation_frames=2),
                          on_keyframe_latent=lambda keyframe, latent: seen.append((keyframe.seed, latent))).start()
    closing(gen)
    frames = pull(gen, 7)  # segments 0, 1 and the slot of segment 2: K_0..K_2 (and K_3 maybe)
    assert [number for number, _ in seen][:3] == [0, 1, 2] and len({n for n, _ in seen}) == len(seen)
    reference = PoolEncoder()
    assert torch.equal(seen[1][1], reference.encode([fitted(1)]))
    assert np.array_equal(frames[3].pixels, reference.decode_to_uint8(seen[1][1])[0])


def test_a_stall_in_progress_shows_in_stalls_and_stall_seconds_before_it_ends(closing):
    clock = FakeClock(10.0)
    source = GatedSource([0.5, 0.5, 0.5])
    gen = HybridGenerator(source, PoolEncoder(), settings(interpolation_frames=1),
                          clock=clock).start()
    closing(gen)
    source.finish()
    source.finish()
    assert [gen.next_frame(timeout=5, due=10.0).position for _ in range(3)] == [0, 1, 0]  # into segment 1
    assert gen.next_frame(timeout=0.01, due=10.0) is None  # (1, 1) needs K_2, which is late
    clock.now = 12.0
    assert (gen.stalls.count, gen.stalls.seconds) == (1, 2.0)  # counted while the display holds
    source.finish()
    wait_until(lambda: gen.worker.made == 3)
    clock.now = 12.5
    assert gen.next_frame(timeout=5, due=12.5).position == 1
    assert (gen.stalls.count, gen.stalls.seconds) == (1, 2.5)  # the same stall, not counted twice


# -- the choices the user makes in the config: blend, easing, VAE or not -------------------------

class ColourSource(FakeSource):
    """FakeSource with flat colours far apart (GatedSource's): slerp and lerp, and the easings,
    differ visibly in every in-between."""

    @staticmethod
    def image(number: int) -> Image.Image:
        return GatedSource.image(number)

    def next_keyframe(self, previous):
        number = super().next_keyframe(previous).seed
        self.made[-1] = self.image(number)
        return fake_keyframe(self.made[-1], number)



def inbetween_latents(frames: list, method: str, easing: str,
                      image=keyframe_image) -> list[tuple[int, int, torch.Tensor]]:
    """(segment, position, the latent the schedule must have decoded) for each in-between;
    keyframe n is `image(n)`."""
    z = [PoolEncoder().encode([fit_cover(image(n), RES)]) for n in range(max(f.segment for f in frames) + 2)]
    blend = slerp if method == "spherical" else lerp
    return [(f.segment, f.position, blend(z[f.segment], z[f.segment + 1], ease(f.position / f.segment_frames, easing)))
            for f in frames if f.kind == "inbetween"]


@pytest.mark.parametrize("method", ["spherical", "linear"])
@pytest.mark.parametrize("easing", ["linear", "smoothstep"])
def test_the_schedule_blends_with_the_configured_method_at_the_eased_position(closing, method, easing):
    gen, _, _ = make(interpolation_frames=3, interpolation_method=method, easing=easing)
    closing(gen)
    frames = pull(gen, 9)
    reference = PoolEncoder()
    for f, (s, j, latent) in zip([f for f in frames if f.kind == "inbetween"],
                                 inbetween_latents(frames, method, easing)):
        assert np.array_equal(f.pixels, reference.decode_to_uint8(latent)[0]), (s, j)


def test_spherical_and_linear_interpolation_give_different_inbetweens(closing):
    made = {}
    for method in ("spherical", "linear"):
        gen, _, _ = make(ColourSource(), interpolation_frames=3, interpolation_method=method)
        closing(gen)
        made[method] = pull(gen, 4)
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(made["spherical"][:1], made["linear"][:1]))
    assert not any(np.array_equal(a.pixels, b.pixels) for a, b in zip(made["spherical"][1:], made["linear"][1:]))


def test_the_easing_setting_changes_the_inbetweens_and_a_live_edit_applies_from_the_next_segment(closing):
    gen, _, _ = make(ColourSource(), interpolation_frames=3, easing="linear")
    closing(gen)
    frames = pull(gen, 2)
    gen.update_settings(settings(interpolation_frames=3, easing="smoothstep"))
    frames += pull(gen, 6)  # the rest of segment 0 (linear), then segment 1 (smoothstep)
    linear = inbetween_latents(frames, "spherical", "linear", ColourSource.image)
    eased = inbetween_latents(frames, "spherical", "smoothstep", ColourSource.image)
    reference = PoolEncoder()
    inbetweens = [f for f in frames if f.kind == "inbetween"]
    assert [(f.segment, f.position) for f in inbetweens] == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]
    for f, (s, j, latent) in zip(inbetweens, linear[:3] + eased[3:]):
        assert np.array_equal(f.pixels, reference.decode_to_uint8(latent)[0]), (s, j)
    assert not np.array_equal(inbetweens[3].pixels, reference.decode_to_uint8(linear[3][2])[0])


def test_crossfade_follows_the_easing_setting(closing):
    gen, _, _ = make(encoder=None, use_vae_interpolation=False, interpolation_frames=3, easing="smoothstep")
    closing(gen)
    frames = pull(gen, 2)
    a, b = (np.asarray(fitted(n), dtype=np.float32) for n in (0, 1))
    assert np.array_equal(frames[1].pixels, np.rint(a + (b - a) * ease(0.25, "smoothstep")).astype(np.uint8))


def test_with_vae_interpolation_off_the_schedule_crossfades_even_with_an_encoder(closing):
    gen, _, enc = make(use_vae_interpolation=False, interpolation_frames=1)
    closing(gen)
    frames = pull(gen, 3)
    a, b = (np.asarray(fitted(n), dtype=np.float32) for n in (0, 1))
    assert np.array_equal(frames[0].pixels, a.astype(np.uint8))
    assert np.array_equal(frames[1].pixels, np.rint(a + (b - a) * 0.5).astype(np.uint8))
    assert enc.decoded == [] and enc.encoded_sizes == []


def test_img2img_mode_shows_the_keyframes_themselves_even_with_an_encoder(closing):
    gen, _, enc = make(mode="img2img")
    closing(gen)
    frames = pull(gen, 3)
    assert [f.kind for f in frames] == ["keyframe"] * 3
    assert all(np.array_equal(f.pixels, np.asarray(fitted(n))) for n, f in enumerate(frames))
    assert enc.decoded == []


def test_the_generator_is_an_iterator_of_frames(closing):
    gen, _, _ = make(interpolation_frames=1)
    closing(gen)
    assert iter(gen) is gen
    frames = [next(gen) for _ in range(3)]
    assert [(f.segment, f.position) for f in frames] == [(0, 0), (0, 1), (1, 0)]


def test_an_fps_edit_applies_to_the_pacing_at_once_and_the_rest_from_the_next_segment(closing):
    gen, _, _ = make(interpolation_frames=3, fps=10.0)
    closing(gen)
    pull(gen, 2)
    gen.update_settings(settings(interpolation_frames=1, fps=4.0))
    assert gen.pacing.target_fps == 4.0
    frames = pull(gen, 4)
    assert [f.segment_frames for f in frames] == [4, 4, 2, 2]




# -- auto N: the arithmetic of planning and stretching a segment, on a fake clock ----------------

class StillWorker:
    """In place of the keyframe thread: a latency estimate and the time the keyframe in flight
    was asked for, both set by the test (None: nothing in flight); `take` hands out keyframes
    0, 1, 2, ... at once."""

    def __init__(self, latency: float | None, since: float | None) -> None:
        self.latency = LatencyEstimate()
        if latency is not None:
            self.latency.add(latency)
        self.in_flight_since = since
        self.taken = 0

    def take(self, timeout: float | None = None) -> Keyframe:
        self.taken += 1
        return fake_keyframe(keyframe_image(self.taken - 1), self.taken - 1)


def still(clock: FakeClock, latency: float | None, since: float | None, **changes) -> HybridGenerator:
    """A generator (not started) whose worker is a StillWorker, with auto N at 8 fps, margin 1."""
    chosen = settings(**{"interpolation_frames": "auto", "fps": 8.0, "auto_margin": 1.0, "max_batch": 1,
                         **changes})
    gen = HybridGenerator(FakeSource(), PoolEncoder(), chosen, clock=clock)
    gen.worker = StillWorker(latency, since)
    return gen


def playing(n: int, j: int) -> Segment:
    seg = Segment(0, fake_keyframe(fitted(0), 0), n)
    seg.j = j
    return seg


def test_auto_frames_are_bounded_and_one_second_long_before_anything_is_measured():
    clock = FakeClock(64.0)
    assert still(clock, None, None, fps=8.0).frames_for(settings(interpolation_frames="auto", fps=8.0)) == 7
    gen = still(clock, 30.0, None, auto_max_frames=100)
    assert gen.frames_for(gen.settings) == 100  # 30 s x 8 fps would be 239
    gen = still(clock, 0.25, None, auto_min_frames=5)
    assert gen.frames_for(gen.settings) == 5  # 0.25 s x 8 fps would be 1
    gen = still(clock, 2.0, None, auto_margin=1.25)
    assert gen.frames_for(gen.settings) == 19  # 20 frames = 2.5 s at 8 fps
    assert gen.frames_for(settings(interpolation_frames=6)) == 6
    assert gen.frames_for(settings(interpolation_frames=6, mode="img2img")) == 0


def test_a_segment_grows_by_the_frames_until_the_late_keyframe_is_due_in():
    clock = FakeClock(66.0)  # K_{s+2} asked for at 64.0, estimated at 1 s, has taken 2 s so far
    gen = still(clock, 1.0, 64.0, auto_margin=1.25)
    seg = playing(n=2, j=2)  # the last in-between is next, due at 66.125
    gen._respread(seg, due=66.125)
    # Plan for 2 s x 1.25: K_{s+2} due at 66.5, 3 frames after 66.125; it is needed at j = 1 of
    # s+1, N - j + 2 frames after j: N = 3 + 2 - 2.
    assert seg.n == 3 and seg.planned == 2
    assert seg.u(1) == pytest.approx(1 / 3) and seg.u(4) == 1.0  # from j = 1 (shown) on to u = 1


def test_a_segment_grows_in_steps_of_a_quarter_or_a_batch_and_never_past_the_auto_maximum():
    clock = FakeClock(66.0)
    gen = still(clock, 1.0, 64.0, auto_margin=1.25)
    seg = playing(n=20, j=20)  # needs N = 3 + 20 - 2 = 21: one more, but grows by ceil(20 / 4) = 5
    gen._respread(seg, due=66.125)
    assert seg.n == 25
    gen = still(clock, 1.0, 64.0, auto_margin=1.25, max_batch=8)
    seg = playing(n=20, j=20)
    gen._respread(seg, due=66.125)
    assert seg.n == 28  # by a whole decode batch when that is more
    gen = still(clock, 1.0, 64.0, auto_margin=1.25, auto_max_frames=23)
    seg = playing(n=20, j=20)
    gen._respread(seg, due=66.125)
    assert seg.n == 23
    seg.end = fake_keyframe(fitted(1), 1)
    seg.decode_ahead(gen._cache, "linear", "spherical", 3)
    seg.j += 1
    gen.worker.latency.add(3.0)  # later still: N = 12 + 21 - 2 wanted, but N is at the maximum
    gen._respread(seg, due=66.25)
    assert (seg.n, seg.decoded_upto) == (23, 22)  # nothing re-spread, so nothing decoded ahead dropped


def test_a_segment_stretches_from_its_first_inbetween_when_the_keyframe_it_took_shows_a_slowdown():
    clock = FakeClock(64.0)
    gen = still(clock, 1.0, 63.5)
    assert gen.next_frame(due=64.0).segment_frames == 8  # planned for 1 s at 8 fps
    gen.worker.latency.add(4.0)  # K_1 (taken for j = 1) took 4 s; K_2 is in flight from now
    gen.worker.in_flight_since = 64.0
    clock.now = 64.125
    frame = gen.next_frame(due=64.25)
    # K_2 due in at 68.0, 30 frames after 64.25, and needed at j = 1 of segment 1: N = 30 + 1 - 2.
    assert (frame.position, frame.segment_frames) == (1, 30)


def test_a_segment_does_not_grow_while_the_keyframe_in_flight_will_be_in_time():
    clock = FakeClock(64.5)
    gen = still(clock, 1.0, 63.875)  # due in at 64.875, when j = 1 of s+1 is: 2 frames after j = 2
    seg = playing(n=2, j=2)
    gen._respread(seg, due=64.625)
    assert seg.n == 2 and seg.u(1) == pytest.approx(1 / 3)
    gen = still(clock, 1.0, 64.0)  # due in at 65.0, one frame too late: N = 3 + 2 - 2
    gen._respread(seg, due=64.625)
    assert seg.n == 3
    gen._respread(playing(n=2, j=0), due=64.625)  # nothing was shown yet: nothing to spread


def test_a_finished_segment_gets_one_more_frame_rather_than_open_the_next_on_an_overdue_keyframe():
    clock = FakeClock(65.0)  # in flight since 64.0 and the estimate is 1.0 s: overdue from now
    gen = still(clock, 1.0, 64.0)
    seg = playing(n=2, j=3)  # j > N: segment s+1 would open next
    gen._respread(seg, due=65.125)
    assert seg.n == 3
    clock.now = 64.875  # not overdue yet (and due in before the frame after): s+1 may open
    seg = playing(n=2, j=3)
    gen._respread(seg, due=65.0)
    assert seg.n == 2


def test_once_the_late_keyframe_is_in_the_rest_goes_back_to_steps_no_longer_than_planned():
    clock = FakeClock(70.0)
    gen = still(clock, 1.0, None)  # nothing in flight: K_{s+2} is in
    seg = playing(n=3, j=2)
    seg.spread_rest(9, last=2)  # stretched at u(2) = 0.5
    seg.j = 3
    gen._respread(seg, due=70.0)
    assert seg.n == 3 and seg.u(3) == pytest.approx(0.75)  # the planned positions again, exactly
    seg = playing(n=3, j=2)
    seg.spread_rest(9, last=1)  # stretched at u(1) = 0.25: u(2) = 1/3
    seg.j = 3
    gen._respread(seg, due=70.0)
    # 2/3 of the segment left at planned steps of 1/4: three more after j = 2 (the last is j = 4).
    assert seg.n == 4 and seg.u(2) == pytest.approx(1 / 3) and seg.u(5) == 1.0
    seg.end = fake_keyframe(fitted(1), 1)
    seg.decode_ahead(gen._cache, "linear", "spherical", 2)  # j = 3, 4
    seg.j = 4
    gen._respread(seg, due=70.125)  # 4/9 left at steps of 1/4: still N = 4, so nothing is dropped
    assert (seg.n, seg.decoded_upto) == (4, 4)


def test_a_fixed_count_or_img2img_segment_is_never_respread():
    clock = FakeClock(66.0)
    for changes in ({"interpolation_frames": 2}, {"mode": "img2img"}):
        gen = still(clock, 1.0, 64.0, auto_margin=1.25, **changes)
        seg = playing(n=2, j=2)
        gen._respread(seg, due=66.125)
        assert seg.n == 2


# -- prepare: what fits in the idle time before the next frame -----------------------------------

class TimedEncoder(PoolEncoder):
    """PoolEncoder whose decode takes `seconds` per frame on the fake clock."""

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        super().__init__()
        self.clock, self.seconds = clock, seconds

    def decode_to_uint8(self, latents: torch.Tensor) -> np.ndarray:
        self.clock.now += self.seconds * len(latents)
        return super().decode_to_uint8(latents)


def prepared(clock: FakeClock, **changes) -> tuple[HybridGenerator, GatedSource, PoolEncoder]:
    """A generator on `clock` (decodes take 1 s a frame on it) that has shown K_0 and whose
    worker has K_1 ready."""
    source, enc = GatedSource([0.5] * 4), TimedEncoder(clock, 1.0)
    gen = HybridGenerator(source, enc, settings(**changes), clock=clock).start()
    source.finish()
    assert gen.next_frame(timeout=5).position == 0
    source.finish()
    wait_until(lambda: gen.worker.ready is not None)
    return gen, source, enc


def test_prepare_takes_the_next_keyframe_while_there_is_time_before_any_decode_is_measured(closing):
    clock = FakeClock(10.0)
    gen, _, enc = prepared(clock, show_raw_keyframes=True)  # K_0 shown raw: nothing decoded yet
    closing(gen)
    assert gen.pacing.decode_seconds is None
    gen.prepare(until=9.9)  # too late: nothing
    assert gen.worker.ready is not None and enc.encoded_sizes == []
    gen.prepare(until=10.5)
    assert gen.worker.ready is None and len(enc.encoded_sizes) == 1  # K_1 taken and encoded
    assert enc.decoded == []  # a decode's cost is unknown, so none is started


def test_prepare_takes_the_next_keyframe_only_when_a_decode_fits_and_then_decodes_what_fits(closing):
    clock = FakeClock(10.0)
    gen, _, enc = prepared(clock)
    closing(gen)
    assert gen.pacing.decode_seconds == 1.0 and clock.now == 11.0  # K_0's slot took 1 s
    gen.prepare(until=12.5)  # each decode counts 2 s: none fits
    assert gen.worker.ready is not None and len(enc.encoded_sizes) == 1
    gen.prepare(until=13.5)  # one fits: K_1 is taken, then one in-between decoded ahead
    assert gen.worker.ready is None and len(enc.encoded_sizes) == 2
    assert [d.shape[0] for d in enc.decoded] == [1, 1] and clock.now == 12.0
    gen.prepare(until=16.0)  # two fit: in-betweens 2 and 3 in one batch, then K_1's slot (one more fits)
    assert [d.shape[0] for d in enc.decoded] == [1, 1, 2, 1] and clock.now == 15.0
    assert torch.equal(enc.decoded[-1], PoolEncoder().encode([fit_cover(GatedSource.image(1), RES)]))


def test_prepare_before_the_first_frame_or_without_vae_interpolation_does_nothing(closing):
    gen, source, enc = make(interpolation_frames=2)
    closing(gen)
    wait_until(lambda: gen.worker.ready is not None)
    gen.prepare(until=time.monotonic() + 1.0)  # no segment yet: K_0 is for next_frame to take
    assert gen.worker.ready is not None and enc.encoded_sizes == []
    for changes in ({"use_vae_interpolation": False}, {"encoder": None, "use_vae_interpolation": False}):
        gen, _, enc = make(**{"interpolation_frames": 2, **changes})
        closing(gen)
        pull(gen, 1)
        wait_until(lambda: gen.worker.ready is not None)
        gen.prepare(until=time.monotonic() + 1.0)  # crossfading: nothing to encode or decode ahead
        assert gen.worker.ready is not None
        assert enc is None or (enc.encoded_sizes, enc.decoded) == ([], [])


def test_a_crossfade_started_without_an_encoder_keeps_crossfading_when_vae_interpolation_is_turned_on(closing):
    gen, _, _ = make(encoder=None, use_vae_interpolation=False, interpolation_frames=1)
    closing(gen)
    pull(gen, 1)
    gen.update_settings(settings(use_vae_interpolation=True, interpolation_frames=1))
    frames = pull(gen, 3)  # needs the restart that loads a VAE: until then, still pixels
    a, b = (np.asarray(fitted(n), dtype=np.float32) for n in (1, 2))
    assert np.array_equal(frames[1].pixels, a.astype(np.uint8))
    assert np.array_equal(frames[2].pixels, np.rint(a + (b - a) * 0.5).astype(np.uint8))


class StuckSource(FakeSource):
    """A source whose request ignores close() until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def next_keyframe(self, previous):
        self.release.wait()
        return None


def test_close_gives_up_after_its_timeout_on_a_source_that_does_not_stop_and_says_so():
    source = StuckSource()
    gen = HybridGenerator(source, PoolEncoder(), settings()).start()
    wait_until(lambda: gen.worker.in_flight_since is not None)
    try:
        assert gen.close(timeout=0.1) is False
    finally:
        source.release.set()
    assert gen.worker.close(timeout=5) is True
