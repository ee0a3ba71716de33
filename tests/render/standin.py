"""A frame job the fake ComfyUI can run: the built-in txt2img graph with seed = 1000 + frame index.

The fake knows neither LoadLatent nor KSamplerAdvanced, so pool and render-loop tests use this
stand-in; the fake's txt2img image is a pure function of the seed (tests.fake_comfyui.nodes.
fake_txt2img), so every output frame can be checked against the frame it should be.
"""

from __future__ import annotations

import numpy as np

from backend.comfyui.workflow import load_workflow
from tests.fake_comfyui.nodes import fake_txt2img

SIZE = (64, 48)
BASE_SEED = 1000


def expected(index: int) -> np.ndarray:
    return fake_txt2img(BASE_SEED + index, *SIZE)


class StandInJob:
    def __init__(self):
        self.workflow = load_workflow("builtin:txt2img")
        self.workers: list[int] = []

    def __call__(self, client, worker, index):
        self.workers.append(worker)
        graph = self.workflow.patch(seed=BASE_SEED + index, width=SIZE[0], height=SIZE[1])
        return client.run(graph)[0]
