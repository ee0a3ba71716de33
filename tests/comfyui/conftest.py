"""Fixtures: a fresh FakeComfyUI per test and a ComfyClient tuned for fast tests."""

from __future__ import annotations

import pytest
from PIL import Image

from backend.comfyui.client import ComfyClient
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
