"""Fixtures: a fresh FakeComfyUI per test and a ComfyClient tuned for fast tests; helpers for
keyframes made through the fake (generator, source, a call in a thread, the jobs it accepted)."""

from __future__ import annotations

import threading
import time

import pytest
from PIL import Image

from backend.comfyui.client import ComfyClient
from backend.comfyui.keyframe import KeyframeGenerator
from backend.comfyui.workflow import load_workflow
from backend.keyframes import ComfyUISource
from backend.seeds import SeedPolicy
from tests.fake_comfyui import FakeComfyUI


@pytest.fixture
def fake(tmp_path):
    server = FakeComfyUI(root=tmp_path / "comfy", history_delay=0.02, restart_delay=0.2)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(fake):
    c = ComfyClient(fake.url, request_timeout=3.0, job_timeout=10.0, poll_interval=0.3, unavailable_grace=5.0)
    yield c
    c.close()


@pytest.fixture
def picture() -> Image.Image:
    """A 32x32 RGB image with structure (so rolls and colour shifts are visible)."""
    im = Image.new("RGB", (32, 32))
    im.putdata([(x * 8, y * 8, (x * y) % 256) for y in range(32) for x in range(32)])
    return im


def invert_graph(image_ref: str, output: str = "SaveImage") -> dict:
    """The model-free graph of the recordings: LoadImage -> ImageInvert -> output."""
    out = {"class_type": output, "inputs": {"images": ["2", 0]}}
    if output == "SaveImage":
        out["inputs"]["filename_prefix"] = "reverie/test"
    return {"1": {"class_type": "LoadImage", "inputs": {"image": image_ref}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": out}


def record_jobs(fake) -> list:
    """Every job the fake accepts from now on (its executor.Job: prompt_id, prompt, client_id),
    in order: wraps the instance's enqueue, which POST /prompt calls."""
    accepted: list = []
    enqueue = fake.enqueue

    async def recording(job) -> None:
        accepted.append(job)
        await enqueue(job)

    fake.enqueue = recording
    return accepted


def seeds_of(jobs) -> list[int]:
    """The KSampler seed of each job (the keyframe workflows have one KSampler)."""
    return [node["inputs"]["seed"] for job in jobs for node in job.prompt.values()
            if node.get("class_type") == "KSampler"]


def wait_for(condition, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Prompt:
    prompt, negative = "sky", ""


def keyframe_generator(client, **overrides) -> KeyframeGenerator:
    """The built-in workflows at 32x32, two steps (the fake's exact sampler: see fake_sample)."""
    settings = dict(img2img=load_workflow("builtin:img2img"), txt2img=load_workflow("builtin:txt2img"),
                    checkpoint=None, steps=2, cfg=7.0, sampler="euler", scheduler="normal", width=32, height=32)
    return KeyframeGenerator(client, **{**settings, **overrides})


def comfy_source(client, seed: int = 100, generator=None) -> ComfyUISource:
    """A ComfyUISource with one prompt, seeds seed, seed+1, ..., denoise 0.5, short backoffs."""
    return ComfyUISource(generator or keyframe_generator(client), prompts=[Prompt()], prompt_period=10**6,
                         seed=SeedPolicy("increment", seed), denoise=0.5, max_backoff=0.2, client=client)


class InThread:
    """Runs `call` on a daemon thread; join() returns its result or raises its exception."""

    def __init__(self, call) -> None:
        self.result, self.error = None, None
        self.thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self.thread.start()

    def _run(self, call) -> None:
        try:
            self.result = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread by join()
            self.error = exc

    def join(self, timeout: float = 30.0):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the call never returned"
        if self.error is not None:
            raise self.error
        return self.result
