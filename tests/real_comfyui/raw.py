"""A bare protocol speaker (requests + websocket-client) for the fake-vs-real parity tests.

Deliberately NOT our client: these tests pin what the servers send, so a difference between
the fake and the real ComfyUI shows up here even where backend.comfyui.client would hide it.
"""

from __future__ import annotations

import io
import json
import struct
import time
import uuid

import numpy as np
import requests
import websocket
from PIL import Image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def pattern(width: int = 32, height: int = 32) -> Image.Image:
    """A small RGB test image with distinct channels: [H, W, 3] uint8, never symmetric under inversion."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1),
                       np.full_like(x, 40)], axis=-1).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def invert_graph(image_ref: str, output: str = "SaveImage", prefix: str = "reverie/parity") -> dict:
    """LoadImage -> ImageInvert -> `output` (SaveImage | SaveImageWebsocket | PreviewImage), model-free."""
    save_inputs = {"images": ["2", 0]}
    if output == "SaveImage":
        save_inputs["filename_prefix"] = prefix
    return {"1": {"class_type": "LoadImage", "inputs": {"image": image_ref}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": output, "inputs": save_inputs}}


def is_inverted(result: Image.Image, source: np.ndarray) -> bool:
    """True when `result` is 255 - `source` up to 1 level: real ComfyUI goes through float32 and
    truncates (255 * (1 - 238/255) -> 16), so exact equality would test the float rounding."""
    result = np.asarray(result.convert("RGB"), dtype=np.int16)
    return result.shape == source.shape and int(np.abs(result - (255 - source.astype(np.int16))).max()) <= 1


def running_prompts(url: str) -> list[str]:
    """Prompt ids in /queue's queue_running."""
    return [entry[1] for entry in requests.get(url + "/queue", timeout=10).json()["queue_running"]]


def wait_until_running(url: str, timeout: float = 30.0) -> str:
    """Block until /queue shows a running prompt and return its id (polled: the server pushes
    nothing to a client that did not queue it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = running_prompts(url)
        if running:
            return running[0]
        time.sleep(0.05)
    raise AssertionError(f"no prompt started running on {url} within {timeout} s")


def wait_until_idle(url: str, timeout: float = 30.0) -> None:
    """Block until /queue is empty (nothing running, nothing pending)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queue = requests.get(url + "/queue", timeout=10).json()
        if not queue["queue_running"] and not queue["queue_pending"]:
            return
        time.sleep(0.05)
    raise AssertionError(f"{url} still busy after {timeout} s: {queue}")


class RawSession:
    """One clientId, one WebSocket, one requests.Session (no Origin header)."""

    def __init__(self, url: str, timeout: float = 60.0):
        self.url, self.client_id = url, uuid.uuid4().hex
        self.http = requests.Session()
        self.ws = websocket.create_connection(f"ws{url[4:]}/ws?clientId={self.client_id}", timeout=timeout)
        self.first = json.loads(self.ws.recv())

    def close(self) -> None:
        self.ws.close()
        self.http.close()

    def upload(self, data: bytes, name: str, *, overwrite: bool = True, subfolder: str = "reverie") -> dict:
        fields = {"subfolder": subfolder, "type": "input"}
        if overwrite:
            fields["overwrite"] = "true"
        answer = self.http.post(self.url + "/upload/image", files={"image": (name, data, "image/png")},
                                data=fields, timeout=30)
        answer.raise_for_status()
        return answer.json()

    def queue(self, graph: dict, *, client_id: bool = True) -> requests.Response:
        body = {"prompt": graph, "client_id": self.client_id} if client_id else {"prompt": graph}
        return self.http.post(self.url + "/prompt", json=body, timeout=30)

    def events_until_done(self, prompt_id: str) -> list:
        """Every message for this client up to `executing {node: null}` of `prompt_id`.

        JSON messages come back as (type, data); binary frames as ("binary", event_type, payload).
        """
        events = []
        while True:
            frame = self.ws.recv()
            if isinstance(frame, bytes):
                events.append(("binary", struct.unpack(">I", frame[:4])[0], frame[4:]))
                continue
            message = json.loads(frame)
            events.append((message["type"], message.get("data", {})))
            data = message.get("data", {})
            if message["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                return events

    def run(self, graph: dict) -> tuple[str, list]:
        answer = self.queue(graph)
        assert answer.status_code == 200, answer.text
        prompt_id = answer.json()["prompt_id"]
        return prompt_id, self.events_until_done(prompt_id)

    def history(self, prompt_id: str) -> dict:
        return self.http.get(f"{self.url}/history/{prompt_id}", timeout=30).json()

    def view(self, ref: dict) -> Image.Image:
        answer = self.http.get(self.url + "/view", params=ref, timeout=30)
        answer.raise_for_status()
        return Image.open(io.BytesIO(answer.content)).convert("RGB")
