"""A faithful test double of a ComfyUI 0.3.75 server (HTTP + WebSocket) with switchable faults."""

from tests.fake_comfyui.nodes import fake_sample, fake_txt2img
from tests.fake_comfyui.server import FakeComfyUI

__all__ = ["FakeComfyUI", "fake_sample", "fake_txt2img"]
