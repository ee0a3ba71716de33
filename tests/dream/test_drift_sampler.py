"""The fake ComfyUI's drifting sampler: deterministic, compounding, converging, and served."""

from __future__ import annotations

import random

import numpy as np
from PIL import Image

from backend.dream.metrics import measure_array
from tests.dream.test_metrics import photo
from tests.fake_comfyui import FakeComfyUI
from tests.fake_comfyui.drift import DriftRates, black_sample, collapse_sample, drift_sample


def astronaut() -> np.ndarray:
    from skimage import data
    return np.asarray(Image.fromarray(data.astronaut()).resize((128, 64), Image.LANCZOS))


def chain(count: int, rates: DriftRates | None = None, seed: int | None = None) -> list[np.ndarray]:
    rates, rng, x, out = rates or DriftRates(), random.Random(0), astronaut(), []
    for _ in range(count):
        x = drift_sample(x, rng.randrange(2**32) if seed is None else seed, 0.5, rates)
        out.append(x)
    return out


def test_the_same_input_seed_and_denoise_give_the_same_picture():
    x = photo()
    assert np.array_equal(drift_sample(x, 5, 0.5), drift_sample(x, 5, 0.5))
    assert not np.array_equal(drift_sample(x, 5, 0.5), drift_sample(x, 6, 0.5))


def test_a_chain_drifts_toward_magenta_saturation_and_burnt_detail():
    start, frames = measure_array(astronaut()), chain(60)
    end = measure_array(frames[-1])
    assert start.magenta < 0.1 < 0.4 < end.magenta
    assert end.chroma > 2 * start.chroma and end.sharpness > 2 * start.sharpness


def test_each_rate_is_its_own_effect():
    x = photo()
    still = DriftRates(warp=0, motion=0, magenta_pull=0, chroma_gain=0, contrast_gain=0, sharpen=0)
    assert np.abs(drift_sample(x, 1, 0.5, still).astype(int) - x).max() <= 1
    only_magenta = DriftRates(warp=0, motion=0, chroma_gain=0, contrast_gain=0, sharpen=0, magenta_pull=0.5)
    assert measure_array(drift_sample(x, 1, 1.0, only_magenta)).magenta > measure_array(x).magenta + 0.2


def test_the_change_between_keyframes_shrinks_as_the_chain_converges():
    # the picture's structure (a 16x8 box downscale) moves less and less, while pixels still flicker
    coarse = [np.asarray(Image.fromarray(f).resize((16, 8), Image.BOX), np.float64) for f in chain(150)]
    steps = [np.abs(b - a).mean() for a, b in zip(coarse, coarse[1:])]
    assert np.mean(steps[-20:]) < 0.7 * np.mean(steps[:20])


def test_collapse_returns_a_near_copy_and_black_a_black_picture():
    x = photo()
    assert np.abs(collapse_sample(x, 3).astype(int) - x).max() == 1
    assert black_sample(x, 3).max() <= 2 and black_sample(x, 3).shape == x.shape


def test_the_fake_server_runs_the_drift_sampler_and_one_off_modes(tmp_path):
    from backend.comfyui.client import ComfyClient
    from backend.comfyui.keyframe import KeyframeGenerator
    from backend.comfyui.workflow import load_workflow

    with FakeComfyUI(root=tmp_path) as fake:
        client = ComfyClient(fake.url, request_timeout=5.0, poll_interval=0.3)
        gen = KeyframeGenerator(client, img2img=load_workflow("builtin:img2img"),
                                txt2img=load_workflow("builtin:txt2img"), checkpoint=None, steps=1, cfg=7.0,
                                sampler="euler", scheduler="normal", width=128, height=64)
        try:
            source = Image.fromarray(photo())
            fake.sampler = "drift"
            drifted = gen.generate_keyframe(source, "p", "", 11, 0.5).image
            fake.sampler_next = ["black"]
            black = gen.generate_keyframe(source, "p", "", 12, 0.5).image
            after = gen.generate_keyframe(source, "p", "", 13, 0.5).image
        finally:
            client.close()
    assert np.array_equal(np.asarray(drifted), drift_sample(photo(), 11, 0.5))
    assert np.asarray(black).max() <= 2
    assert np.array_equal(np.asarray(after), drift_sample(photo(), 13, 0.5))
