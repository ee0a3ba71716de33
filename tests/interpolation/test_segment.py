"""One segment of the schedule: where each position sits between K_s and K_{s+1}, the chosen
blend and easing, decoding ahead, and re-spreading the rest of a segment."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from backend.frames import Keyframe
from backend.interpolation.latent_cache import LatentCache
from backend.interpolation.segment import Segment
from backend.interpolation.spherical_lerp import ease, lerp, slerp
from backend.pacing import Pacing
from tests.interpolation.gated import FakeClock
from tests.interpolation.test_hybrid_generator import RES, PoolEncoder

# Two flat colours whose latents (RGB mean in [-1, 1], then a constant 1) are 70 degrees apart:
# far enough that slerp and lerp, and the easings, give visibly different in-betweens.
COLOURS = ((191, 64, 140), (64, 191, 90))


def keyframe(number: int) -> Keyframe:
    return Keyframe(Image.new("RGB", RES, COLOURS[number]), seed=number)


def segment(frames: int = 3) -> tuple[Segment, LatentCache, PoolEncoder]:
    encoder = PoolEncoder()
    seg = Segment(4, keyframe(0), frames)
    seg.end = keyframe(1)
    return seg, LatentCache(encoder, Pacing(10.0, FakeClock())), encoder


def ends() -> tuple[torch.Tensor, torch.Tensor]:
    reference = PoolEncoder()
    return reference.encode([keyframe(0).image]), reference.encode([keyframe(1).image])


def expected(method: str, t: list[float]) -> torch.Tensor:
    """The in-between latents [N, C, h, w] for the ts, blended the way `method` names."""
    z0, z1 = ends()
    blend = slerp if method == "spherical" else lerp
    return blend(z0, z1, torch.tensor(t, dtype=torch.float32))[:, 0]


def test_a_new_segment_starts_at_its_keyframe_slot_with_the_planned_count_and_no_end_yet():
    seg = Segment(2, keyframe(0), 5)
    assert (seg.index, seg.start.seed, seg.end) == (2, 0, None)
    assert (seg.n, seg.planned, seg.j, seg.decoded_upto) == (5, 5, 0, 0)


def test_planned_progress_is_j_over_n_plus_one_from_the_slot_to_the_next_keyframe():
    seg, _, _ = segment(frames=3)
    assert [seg.u(j) for j in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert torch.equal(seg.u(torch.arange(1, 4, dtype=torch.float64)),
                       torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))


def test_spreading_the_rest_keeps_the_position_shown_and_still_ends_on_the_next_keyframe():
    seg, cache, _ = segment(frames=3)
    seg.decode_ahead(cache, "linear", "spherical", 3)
    seg.spread_rest(7, last=2)  # j = 2 (u = 0.5) was shown; six steps of 1/12 to u = 1 at j = 8
    assert (seg.n, seg.planned, seg.decoded_upto) == (7, 3, 2)
    assert seg.u(2) == 0.5 and seg.u(8) == 1.0
    assert [seg.u(j) for j in (3, 5, 7)] == pytest.approx([7 / 12, 9 / 12, 11 / 12])
    seg.spread_rest(9, last=5)  # spread again from j = 5 (u = 3/4): five steps of 1/20
    assert seg.u(5) == pytest.approx(0.75) and seg.u(10) == 1.0 and seg.u(6) == pytest.approx(0.8)


@pytest.mark.parametrize("method", ["spherical", "linear"])
@pytest.mark.parametrize("easing", ["linear", "smoothstep", "cosine"])
def test_inbetweens_blend_the_two_latents_with_the_chosen_method_at_the_eased_progress(method, easing):
    seg, cache, enc = segment(frames=3)
    seg.decode_ahead(cache, easing, method, 3)
    t = [ease(u, easing) for u in (0.25, 0.5, 0.75)]
    (decoded,) = enc.decoded
    assert torch.allclose(decoded, expected(method, t), atol=1e-6)
    assert seg.decoded_upto == 3


def test_spherical_and_linear_blends_give_different_inbetweens():
    frames = {}
    for method in ("spherical", "linear"):
        seg, cache, _ = segment(frames=3)
        seg.j = 1
        frames[method] = seg.inbetween(cache, "linear", method, batch=1)
    assert not np.array_equal(frames["spherical"], frames["linear"])
    z0, z1 = ends()
    assert np.array_equal(frames["linear"], PoolEncoder().decode_to_uint8(lerp(z0, z1, 0.25))[0])
    assert np.array_equal(frames["spherical"], PoolEncoder().decode_to_uint8(slerp(z0, z1, 0.25))[0])


def test_the_easing_moves_every_inbetween_but_the_middle_one():
    latents = {}
    for easing in ("linear", "smoothstep"):
        seg, cache, enc = segment(frames=3)
        seg.decode_ahead(cache, easing, "spherical", 3)
        latents[easing] = enc.decoded[0]
    assert not torch.allclose(latents["linear"][0], latents["smoothstep"][0], atol=1e-3)
    assert torch.allclose(latents["linear"][1], latents["smoothstep"][1], atol=1e-6)  # ease(0.5) = 0.5
    assert not torch.allclose(latents["linear"][2], latents["smoothstep"][2], atol=1e-3)


def test_decoding_ahead_takes_at_least_one_and_never_runs_past_the_last_inbetween():
    seg, cache, enc = segment(frames=5)
    seg.decode_ahead(cache, "linear", "spherical", 0)
    seg.decode_ahead(cache, "linear", "spherical", 2)
    seg.decode_ahead(cache, "linear", "spherical", 100)
    assert [d.shape[0] for d in enc.decoded] == [1, 2, 2]
    assert seg.decoded_upto == 5
    whole = expected("spherical", [j / 6 for j in range(1, 6)])
    assert torch.allclose(torch.cat(enc.decoded), whole, atol=1e-6)  # in order, none twice


def test_inbetween_serves_the_frames_decoded_ahead_in_order_before_decoding_another_batch():
    seg, cache, enc = segment(frames=4)
    served = []
    for j in range(1, 5):
        seg.j = j
        served.append(seg.inbetween(cache, "linear", "linear", batch=3))
    assert [d.shape[0] for d in enc.decoded] == [3, 1]
    reference = PoolEncoder().decode_to_uint8(expected("linear", [0.2, 0.4, 0.6, 0.8]))
    assert all(np.array_equal(a, b) for a, b in zip(served, reference))


def test_after_a_spread_the_inbetweens_follow_the_new_spacing():
    seg, cache, enc = segment(frames=3)
    seg.j = 1
    seg.inbetween(cache, "linear", "spherical", batch=3)  # j = 1..3 decoded at u = 1/4, 2/4, 3/4
    seg.spread_rest(5, last=1)  # from u = 1/4 at j = 1, five steps of 0.15 to u = 1 at j = 6
    seg.j = 2
    frame = seg.inbetween(cache, "linear", "spherical", batch=1)
    assert torch.allclose(enc.decoded[-1], expected("spherical", [0.4]), atol=1e-6)
    assert np.array_equal(frame, PoolEncoder().decode_to_uint8(enc.decoded[-1])[0])
    assert seg.decoded_upto == 2


@pytest.mark.parametrize("easing", ["linear", "smoothstep"])
def test_crossfade_blends_the_two_keyframe_images_at_the_eased_progress(easing):
    seg, _, _ = segment(frames=3)
    seg.j = 1
    t = ease(0.25, easing)
    a, b = np.array(COLOURS[0], dtype=np.float32), np.array(COLOURS[1], dtype=np.float32)
    pixels = seg.crossfade(easing)
    assert pixels.dtype == np.uint8 and pixels.shape == (RES[1], RES[0], 3)
    assert (pixels == np.rint(a + (b - a) * t).astype(np.uint8)).all()


def test_crossfade_rounds_to_the_nearest_level():
    seg, _, _ = segment(frames=1)  # j = 1 is half way: (191 + 64) / 2 = 127.5 rounds to even, 128
    seg.j = 1
    assert tuple(seg.crossfade("linear")[0, 0]) == (128, 128, 115)


def test_crossfade_keeps_black_black_and_white_white():
    seg = Segment(0, Keyframe(Image.new("RGB", RES, (0, 255, 0))), 3)
    seg.end = Keyframe(Image.new("RGB", RES, (0, 255, 255)))
    seg.j = 2
    assert tuple(seg.crossfade("cosine")[3, 5]) == (0, 255, 128)
