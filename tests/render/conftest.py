"""Fixtures for the render tests: fake ComfyUI servers and a pool whose clients give up quickly."""

from __future__ import annotations

import pytest

from backend.comfyui.client import ComfyClient
from tests.fake_comfyui import FakeComfyUI


def quick_client(url: str) -> ComfyClient:
    return ComfyClient(url, request_timeout=5.0, job_timeout=30.0, poll_interval=0.2, unavailable_grace=1.0)


@pytest.fixture
def fakes():
    """Two fake ComfyUIs with a little latency, so frames overlap across them."""
    with FakeComfyUI(latency=0.2) as a, FakeComfyUI(latency=0.2) as b:
        yield a, b
