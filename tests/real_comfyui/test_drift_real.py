"""The dream's palette grounding against the real ComfyUI: a model-free loop that tints its
input 4 % toward magenta every pass (LoadImage + EmptyImage -> ImageBlend -> SaveImageWebsocket,
core nodes only), 15 passes through our client, once ungrounded and once grounded by Dream.
The grounded loop's hue stays near the anchor's; the ungrounded one walks off to magenta."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from backend.comfyui.client import ComfyClient
from backend.dream.dream import Dream
from backend.dream.metrics import measure
from backend.dream.settings import DreamSettings
from backend.frames import Keyframe

pytestmark = pytest.mark.real_comfyui

PASSES = 15
MAGENTA = 0xFF00FF
TINT = 0.04


def tint_graph(image_ref: str, width: int, height: int) -> dict:
    return {"1": {"class_type": "LoadImage", "inputs": {"image": image_ref}},
            "2": {"class_type": "EmptyImage", "inputs": {"width": width, "height": height, "batch_size": 1,
                                                         "color": MAGENTA}},
            "3": {"class_type": "ImageBlend", "inputs": {"image1": ["1", 0], "image2": ["2", 0],
                                                         "blend_factor": TINT, "blend_mode": "normal"}},
            "4": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["3", 0]}}}


def stand_in_latent(image: Image.Image) -> np.ndarray:
    """[3, h/8, w/8] pixels in place of a VAE latent: novelty is not what this test measures."""
    return np.asarray(image.resize((image.width // 8, image.height // 8), Image.BOX), np.float32).transpose(2, 0, 1)


def hue_gap(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


def loop(client: ComfyClient, start: Image.Image, dream: Dream | None) -> list[Image.Image]:
    previous = Keyframe(start, generated=False, origin="start_image")
    out = []
    for n in range(PASSES):
        source = previous.image if dream is None else dream.plan_input(previous).image
        ref = client.upload_image(source, f"drift_{n % 3}.png")
        image = client.run(tint_graph(ref, start.width, start.height), output_node="4")[0]
        previous = Keyframe(image, 0.0, "tint", n, True, "img2img")
        if dream is not None:
            dream.keyframe_made(previous)
            dream.observe(previous, stand_in_latent(image))
        out.append(image)
    return out


def test_a_grounded_real_loop_keeps_its_hue_and_an_ungrounded_one_turns_magenta(running_real_server):
    client = ComfyClient(running_real_server.url, request_timeout=20.0, poll_interval=0.5)
    try:
        missing = {"ImageBlend", "EmptyImage", "SaveImageWebsocket"} - set(client.object_info())
        if missing:
            pytest.skip(f"this ComfyUI has no {', '.join(sorted(missing))} node")
        from skimage import data
        start = Image.fromarray(data.astronaut()).resize((128, 64), Image.LANCZOS)
        anchor = measure(start)
        # grounding only (with its trim): no re-anchoring and no detail grounding
        dream = Dream(DreamSettings(anchor_every=0, detail_strength=0.0))
        free = loop(client, start, None)
        grounded = loop(client, start, dream)
    finally:
        client.close()
    free_end, grounded_end = measure(free[-1]), measure(grounded[-1])
    assert np.asarray(free[0]).shape == (64, 128, 3)
    assert hue_gap(free_end.hue, anchor.hue) > 40.0 and free_end.magenta > 0.3
    # the first pass is one push off in both loops; after that the grounded one comes back and stays
    assert max(hue_gap(measure(im).hue, anchor.hue) for im in grounded) < 25.0
    assert max(hue_gap(measure(im).hue, anchor.hue) for im in grounded[5:]) < 8.0
    assert grounded_end.magenta < 0.1 and grounded_end.magenta < free_end.magenta / 5


