"""Runs one queued prompt on the fake server and emits ComfyUI 0.3.75's event sequence.

Order as recorded: execution_start, execution_cached, per node progress_state / executing /
(progress, binary frames) / executed, execution_success, *then* the history write, status, and
last `executing {"node": null}`: a client that fetches /history on execution_success races the
write, exactly like against the real server. Faults (latency, execution errors, kill mid-run,
bad output images) are read from the FakeComfyUI instance when each job runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import struct
import time
from dataclasses import dataclass, field

import numpy as np

from tests.fake_comfyui import drift, nodes

PREVIEW_IMAGE, PREVIEW_WITH_METADATA = 1, 4


class Killed(Exception):
    """The simulated server process died mid-run: nothing more is sent or written."""


class NodeFailed(Exception):
    def __init__(self, exception_type: str, message: str):
        super().__init__(message)
        self.exception_type, self.message = exception_type, message


@dataclass
class Job:
    number: int
    prompt_id: str
    prompt: dict
    extra_data: dict
    outputs: list[str]
    messages: list = field(default_factory=list)

    @property
    def client_id(self) -> str | None:
        return self.extra_data.get("client_id")

    def queue_entry(self) -> list:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


def _now_ms() -> int:
    return int(time.time() * 1000)


def execution_order(prompt: dict, outputs: list[str]) -> list[str]:
    """Dependencies first, each output after its inputs (depth-first post-order)."""
    order: list[str] = []

    def visit(node_id: str) -> None:
        if node_id in order:
            return
        for value in prompt[node_id].get("inputs", {}).values():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) in prompt:
                visit(str(value[0]))
        order.append(node_id)

    for out in outputs:
        visit(out)
    return order


class Executor:
    """Executes jobs for one FakeComfyUI; `fake` supplies sending, folders, cache and faults."""

    def __init__(self, fake):
        self.fake = fake

    async def run(self, job: Job) -> None:
        fake = self.fake
        self.job, self.states, self.values, self.ui = job, {}, {}, {}
        fake.interrupt_requested = False
        order = execution_order(job.prompt, job.outputs)
        keys = self._cache_keys(job.prompt, order)
        cached = [n for n in order if keys[n] in fake.cache]
        await self._event("execution_start", {"prompt_id": job.prompt_id, "timestamp": _now_ms()})
        await self._event("execution_cached", {"nodes": cached, "prompt_id": job.prompt_id, "timestamp": _now_ms()})
        new_cache, executed = {}, []
        budget = fake.latency + (random.uniform(-fake.jitter, fake.jitter) if fake.jitter else 0.0)
        sampler_runs = any(job.prompt[n]["class_type"] == "KSampler" for n in order if n not in cached)
        fail_here = self._failing_node(order, cached) if fake.take_execution_fault() else None
        try:
            for node_id in order:
                cls = job.prompt[node_id]["class_type"]
                if node_id in cached:
                    self.values[node_id], ui = fake.cache[keys[node_id]]
                    new_cache[keys[node_id]] = fake.cache[keys[node_id]]
                    if ui:
                        self.ui[node_id] = ui
                        await self._event("executed", self._executed(node_id, ui))
                        await self._progress(node_id, 1.0, "finished")
                    continue
                await self._progress(node_id, 0.0, "running")
                fake.last_node_id = node_id
                await self._event("executing", {"node": node_id, "display_node": node_id, "prompt_id": job.prompt_id})
                if fake.take_kill():
                    raise Killed()
                if node_id == fail_here:
                    raise NodeFailed("torch.OutOfMemoryError",
                                     "Allocation on device would exceed allowed memory. (out of memory)\n")
                if not sampler_runs and budget > 0:
                    await self._sleep(budget, node_id)
                    budget = 0.0
                outs, ui = await self._execute(node_id, cls, budget if sampler_runs else 0.0)
                self.values[node_id] = outs
                new_cache[keys[node_id]] = (outs, ui)
                executed.append(node_id)
                if ui:
                    self.ui[node_id] = ui
                    await self._event("executed", self._executed(node_id, ui))
                await self._progress(node_id, 1.0, "finished")
        except Killed:
            fake.last_node_id = None
            await fake.kill_now()
            return
        except NodeFailed as exc:
            await self._finish_error(job, "execution_error", {
                "prompt_id": job.prompt_id, "node_id": node_id, "node_type": cls, "executed": executed,
                "exception_message": exc.message, "exception_type": exc.exception_type,
                "traceback": ['File "<fake>/execution.py", line 1, in execute'],
                "current_inputs": {}, "current_outputs": list(order), "timestamp": _now_ms()})
            return
        except _Interrupted:
            await self._finish_error(job, "execution_interrupted", {
                "prompt_id": job.prompt_id, "node_id": node_id, "node_type": cls,
                "executed": executed, "timestamp": _now_ms()})
            return
        fake.cache = new_cache
        await self._event("execution_success", {"prompt_id": job.prompt_id, "timestamp": _now_ms()})
        await asyncio.sleep(fake.history_delay)
        fake.write_history(job, self.ui, "success", True)
        await self._finish()

    async def _finish_error(self, job: Job, kind: str, data: dict) -> None:
        await self._event(kind, data)
        self.fake.write_history(job, {}, "error", False)
        await self._finish()

    async def _finish(self) -> None:
        self.fake.last_node_id = None
        self.fake.running = None
        await self.fake.broadcast_status()
        await self._event("executing", {"node": None, "prompt_id": self.job.prompt_id})

    # -- events -------------------------------------------------------------------------------
    async def _event(self, kind: str, data: dict) -> None:
        if kind in ("execution_start", "execution_cached", "execution_success", "execution_error",
                    "execution_interrupted"):
            self.job.messages.append([kind, data])
        await self.fake.send(kind, data, self.job.client_id)

    async def _progress(self, node_id: str, value: float, state: str) -> None:
        self.states[node_id] = {"value": value, "max": 1.0, "state": state, "node_id": node_id,
                                "prompt_id": self.job.prompt_id, "display_node_id": node_id,
                                "parent_node_id": None, "real_node_id": node_id}
        # progress_state goes to the prompt's client, or to everyone when it has none (as recorded)
        await self.fake.send("progress_state", {"prompt_id": self.job.prompt_id, "nodes": dict(self.states)},
                             self.job.client_id, broadcast_if_none=True)

    def _executed(self, node_id: str, ui: dict) -> dict:
        return {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": self.job.prompt_id}

    async def _image_frame(self, node_id: str, image: bytes, fmt: int) -> None:
        meta = {"node_id": node_id, "prompt_id": self.job.prompt_id, "display_node_id": node_id,
                "parent_node_id": None, "real_node_id": node_id,
                "image_type": "image/png" if fmt == 2 else "image/jpeg"}
        legacy = struct.pack(">II", PREVIEW_IMAGE, fmt) + image
        blob = json.dumps(meta).encode()
        with_meta = struct.pack(">II", PREVIEW_WITH_METADATA, len(blob)) + blob + image
        await self.fake.send_bytes(legacy, with_meta, self.job.client_id)

    # -- nodes --------------------------------------------------------------------------------
    async def _execute(self, node_id: str, cls: str, budget: float) -> tuple[tuple, dict | None]:
        inputs = {k: self._resolve(v) for k, v in self.job.prompt[node_id].get("inputs", {}).items()}
        fake = self.fake
        if cls == "LoadImage":
            try:
                arr = nodes.load_image(fake.input_path(inputs["image"]))
            except Exception as exc:
                raise NodeFailed("PIL.UnidentifiedImageError", f"cannot identify image file {str(exc)!r}\n")
            return (arr, np.zeros(arr.shape[:2], np.float32)), None
        if cls == "ImageInvert":
            return (nodes.invert(inputs["image"]),), None
        if cls == "ImageScale":
            return (nodes.scale(inputs["image"], int(inputs["width"]), int(inputs["height"])),), None
        if cls == "CheckpointLoaderSimple":
            return (("MODEL",), ("CLIP",), ("VAE",)), None
        if cls == "IPAdapterUnifiedLoader":       # the model passes through; the adapter is a token
            return (inputs["model"], ("IPADAPTER", inputs["preset"])), None
        if cls == "IPAdapterAdvanced":
            return (inputs["model"],), None
        if cls == "CLIPTextEncode":
            return (("COND", inputs["text"]),), None
        if cls == "VAEEncode":
            return ({"image": nodes.crop_to_8(inputs["pixels"])},), None
        if cls == "EmptyLatentImage":
            return ({"image": None, "width": int(inputs["width"]), "height": int(inputs["height"])},), None
        if cls == "VAEDecode":
            return (inputs["samples"]["image"],), None
        if cls == "KSampler":
            return (await self._sample(node_id, inputs, budget),), None
        if cls in ("SaveImage", "PreviewImage"):
            return (), {"images": [fake.save_output(inputs["images"], cls, str(inputs.get("filename_prefix", "")))]}
        if cls == "SaveImageWebsocket":
            await self._progress(node_id, 0, "running")
            await self._event("progress", {"value": 0, "max": 1, "prompt_id": self.job.prompt_id, "node": node_id})
            await self._image_frame(node_id, nodes.encode_png(inputs["images"], fake.output_fault), 2)
            return (), None
        raise NodeFailed("NotImplementedError", f"fake server cannot execute {cls}\n")

    async def _sample(self, node_id: str, inputs: dict, budget: float) -> dict:
        latent, steps = inputs["latent_image"], int(inputs["steps"])
        seed, denoise = int(inputs["seed"]), float(inputs["denoise"])
        for step in range(steps):
            await self._sleep(budget / steps, node_id)
            await self._event("progress", {"value": step + 1, "max": steps, "prompt_id": self.job.prompt_id,
                                           "node": node_id})
            if self.fake.previews:
                preview = np.full((8, 8, 3), (step * 12) % 256, np.uint8)
                await self._image_frame(node_id, nodes.encode_jpeg(preview), 1)
        if latent["image"] is None:
            return {"image": nodes.fake_txt2img(seed, latent["width"], latent["height"])}
        return {"image": self._sampler(latent["image"], seed, denoise)}

    def _sampler(self, image: np.ndarray, seed: int, denoise: float) -> np.ndarray:
        mode = self.fake.sampler_next.pop(0) if self.fake.sampler_next else self.fake.sampler
        if mode == "drift":
            return drift.drift_sample(image, seed, denoise, self.fake.drift_rates)
        if mode == "collapse":
            return drift.collapse_sample(image, seed)
        if mode == "black":
            return drift.black_sample(image, seed)
        return nodes.fake_sample(image, seed, denoise)

    async def _sleep(self, seconds: float, node_id: str) -> None:
        end = time.monotonic() + max(0.0, seconds)
        while True:
            if self.fake.interrupt_requested:
                raise _Interrupted()
            left = end - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.02))

    def _resolve(self, value):
        if isinstance(value, list) and len(value) == 2 and str(value[0]) in self.values:
            return self.values[str(value[0])][value[1]]
        return value

    def _failing_node(self, order: list[str], cached: list[str]) -> str | None:
        fresh = [n for n in order if n not in cached] or list(order)
        samplers = [n for n in fresh if self.job.prompt[n]["class_type"] == "KSampler"]
        return (samplers or fresh)[0]

    def _cache_keys(self, prompt: dict, order: list[str]) -> dict[str, str]:
        """Input signatures: a node is cached when its signature ran in the previous prompt."""
        keys: dict[str, str] = {}
        for node_id in order:
            node = prompt[node_id]
            parts = [node["class_type"]]
            for name, value in sorted(node.get("inputs", {}).items()):
                linked = isinstance(value, list) and len(value) == 2 and str(value[0]) in keys
                parts.append(f"{name}={keys[str(value[0])] + str(value[1]) if linked else json.dumps(value)}")
            if node["class_type"] == "LoadImage":
                parts.append(self.fake.input_digest(str(node["inputs"].get("image"))))
            if node["class_type"] == "SaveImageWebsocket":
                parts.append(str(time.monotonic_ns()))       # its IS_CHANGED never caches
            keys[node_id] = hashlib.sha256("|".join(parts).encode()).hexdigest()
        return keys


class _Interrupted(Exception):
    pass
