"""The dream through the real keyframe path: ComfyUISource(dream=...) -> KeyframeGenerator ->
ComfyClient -> the fake ComfyUI, whose sampler drifts or comes back black on request."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from backend.dream.dream import Dream
from backend.dream.metrics import measure
from backend.dream.settings import DreamSettings
from tests.dream.test_drift_sampler import astronaut
from tests.fake_comfyui import FakeComfyUI


@dataclass(frozen=True)
class Prompt:
    prompt: str
    negative: str = ""


@pytest.fixture
def fake(tmp_path):
    with FakeComfyUI(root=tmp_path, previews=False, history_delay=0.0) as server:
        server.sampler = "drift"
        yield server


def make_source(fake, dream: Dream):
    from backend.comfyui.client import ComfyClient
    from backend.comfyui.keyframe import KeyframeGenerator
    from backend.comfyui.workflow import load_workflow
    from backend.keyframes import ComfyUISource, SeedPolicy

    client = ComfyClient(fake.url, request_timeout=5.0, poll_interval=0.3)
    gen = KeyframeGenerator(client, img2img=load_workflow("builtin:img2img"), txt2img=load_workflow("builtin:txt2img"),
                            checkpoint=None, steps=1, cfg=7.0, sampler="euler", scheduler="normal", width=128, height=64)
    return ComfyUISource(gen, prompts=[Prompt("a")], prompt_period=10**6, seed=SeedPolicy("random", 0, random.Random(3)),
                         denoise=0.5, start_image=Image.fromarray(astronaut()), client=client, dream=dream)


def test_a_black_keyframe_from_comfyui_never_reaches_the_screen(fake):
    dream = Dream(DreamSettings())
    src = make_source(fake, dream)
    try:
        k0 = src.next_keyframe(None)
        fake.sampler_next = ["black", "black"]
        k1 = src.next_keyframe(k0)
    finally:
        src.close()
    assert k1.origin == "img2img" and measure(k1.image).l_mean > 20
    assert dream.status_fields()["events"]["blank_rejected"] == 2


def test_grounded_source_keyframes_keep_the_palette_that_ungrounded_ones_lose(fake):
    ends = {}
    for name, settings in (("off", DreamSettings(control=False)), ("on", DreamSettings())):
        dream = Dream(settings)
        src = make_source(fake, dream)
        try:
            keyframe = src.next_keyframe(None)
            for _ in range(20):
                keyframe = src.next_keyframe(keyframe)
                small = keyframe.image.resize((16, 8), Image.BOX)
                dream.observe(keyframe, np.asarray(small, np.float32).transpose(2, 0, 1))
        finally:
            src.close()
        ends[name] = measure(keyframe.image)
    start = measure(Image.fromarray(astronaut()))
    assert ends["off"].magenta > 0.3 and ends["on"].magenta < 0.15
    assert abs(ends["on"].chroma / start.chroma - 1) < 0.25 < ends["off"].chroma / start.chroma - 1
