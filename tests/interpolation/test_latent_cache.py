"""The keyframe latents cache: each keyframe encoded once, decoded once, the last few kept,
every decode timed into the pacing."""

from __future__ import annotations

import pytest
import torch

from backend.frames import Keyframe
from backend.interpolation.latent_cache import LatentCache
from backend.pacing import Pacing
from tests.interpolation.gated import FakeClock
from tests.interpolation.test_hybrid_generator import RES, PoolEncoder, TimedEncoder, fitted


def keyframes(count: int) -> list[Keyframe]:
    return [Keyframe(fitted(n), seed=n) for n in range(count)]


def cache(encoder=None, **kwargs) -> tuple[LatentCache, PoolEncoder, Pacing]:
    encoder = encoder or PoolEncoder()
    pacing = Pacing(10.0, FakeClock())
    return LatentCache(encoder, pacing, **kwargs), encoder, pacing


def test_a_keyframe_is_encoded_once_and_the_listener_hears_of_it_once():
    heard = []
    c, enc, _ = cache(on_latent=lambda keyframe, latent: heard.append((keyframe.seed, latent)))
    k0, k1 = keyframes(2)
    first = c.latent(k0)
    assert c.latent(k0) is first and c.latent(k1) is not first
    assert enc.encoded_sizes == [RES, RES]  # K_0 once, K_1 once
    assert torch.equal(first, PoolEncoder().encode([k0.image]))
    assert [seed for seed, _ in heard] == [0, 1] and heard[0][1] is first


def test_a_keyframe_is_decoded_once_from_its_cached_latent():
    c, enc, _ = cache()
    (k0,) = keyframes(1)
    assert not c.has_pixels(k0)
    pixels = c.pixels(k0)
    assert c.has_pixels(k0) and c.pixels(k0) is pixels
    assert len(enc.decoded) == 1 and torch.equal(enc.decoded[0], c.latent(k0))
    assert pixels.shape == (RES[1], RES[0], 3)
    assert (pixels == PoolEncoder().decode_to_uint8(c.latent(k0))[0]).all()
    assert len(enc.encoded_sizes) == 1  # pixels() reused the latent it had


def test_the_last_three_keyframes_stay_cached_and_an_older_one_is_made_again():
    c, enc, _ = cache()
    k = keyframes(4)
    for keyframe in k[:3]:
        c.pixels(keyframe)
    for keyframe in k[:3]:  # the three ends of the segments in play: nothing made again
        c.pixels(keyframe)
    assert (len(enc.encoded_sizes), len(enc.decoded)) == (3, 3)
    c.latent(k[3])  # a fourth pushes out the oldest, K_0
    assert c.has_pixels(k[1]) and c.has_pixels(k[2])
    assert not c.has_pixels(k[0])
    assert len(enc.encoded_sizes) == 4


def test_keep_sets_how_many_keyframes_stay_cached():
    c, enc, _ = cache(keep=2)
    k0, k1, k2 = keyframes(3)
    for keyframe in (k0, k1, k2):
        c.pixels(keyframe)
    assert c.has_pixels(k1) and c.has_pixels(k2)
    c.latent(k0)
    assert len(enc.encoded_sizes) == 4


def test_keep_one_caches_only_the_newest_keyframe():
    c, enc, _ = cache(keep=1)
    k0, k1 = keyframes(2)
    c.pixels(k0)
    c.pixels(k1)
    assert c.has_pixels(k1) and not c.has_pixels(k0)


def test_keyframes_are_told_apart_by_identity_so_a_repeated_picture_is_its_own_keyframe():
    c, enc, _ = cache()
    image = fitted(0)
    a, b = Keyframe(image, seed=0), Keyframe(image, seed=0)
    assert a == b
    c.latent(a)
    c.latent(b)
    assert len(enc.encoded_sizes) == 2


def test_each_decode_records_its_cost_per_frame_in_the_pacing():
    clock = FakeClock(5.0)
    encoder = TimedEncoder(clock, seconds=0.2)  # per frame
    pacing = Pacing(10.0, clock)
    c = LatentCache(encoder, pacing)
    k0, k1 = keyframes(2)
    latents = torch.cat([c.latent(k0), c.latent(k1), c.latent(k0)])  # [3, C, h, w]
    pixels = c.decode(latents)
    assert pixels.shape == (3, RES[1], RES[0], 3) and clock.now == pytest.approx(5.6)
    assert pacing.decode_seconds == pytest.approx(0.2)  # 0.6 s for three frames
    encoder.seconds = 0.5
    c.pixels(k1)  # one frame in 0.5 s, averaged in
    assert pacing.decode_seconds == pytest.approx(0.2 + 0.2 * (0.5 - 0.2))
