"""A seed walk: which seeds and blend each frame has, and the ComfyUI job that renders one.

Frames per leg ``N`` counts both ends: a leg from seed a to seed b has frames at
``t = j / (N - 1)``, ``j = 0..N-1``, and the next leg starts where it ended, so its first
frame is not repeated. Two seeds and N = 16 give 16 frames; with ``loop`` the walk goes back
to the first seed and leaves out that last frame, so the video repeats without a stutter.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from backend.comfyui.workflow import Workflow
from backend.render.families import Family
from backend.render.graphs import Sampling, frame_graph
from backend.render.latent_file import latent_bytes, start_latent
from backend.render.noise import latent_shape, walk_noise
from backend.render.transfer import upload_latent


class WalkError(ValueError):
    """The seeds or frame count cannot make a walk; the message says what to pass instead."""


@dataclass(frozen=True)
class WalkFrame:
    index: int
    seed_a: int
    seed_b: int
    t: float          # 0 = seed_a's noise, 1 = seed_b's


def plan_walk(seeds: list[int], frames_per_leg: int, *, loop: bool = False) -> list[WalkFrame]:
    """Every frame of the walk through `seeds` in order."""
    if len(seeds) < 2:
        raise WalkError(f"a seed walk needs two or more seeds, got {len(seeds)}: pass e.g. --seeds 1 2")
    if frames_per_leg < 2:
        raise WalkError(f"--frames must be at least 2 (each leg has a first and a last frame), got {frames_per_leg}")
    stops = list(seeds) + ([seeds[0]] if loop else [])
    frames: list[WalkFrame] = []
    for leg, (a, b) in enumerate(zip(stops, stops[1:])):
        for j in range(0 if leg == 0 else 1, frames_per_leg):
            frames.append(WalkFrame(len(frames), a, b, j / (frames_per_leg - 1)))
    if loop:
        frames.pop()   # the closing frame is the first seed again: the loop plays it as frame 0
    return frames


class FrameJob:
    """Renders one WalkFrame on a given ComfyUI: upload its start latent, sample, return the image."""

    def __init__(self, workflow: Workflow, sampling: Sampling, family: Family, *, websocket_output: bool = True):
        self.workflow = workflow if websocket_output else workflow.with_save_output("reverie/walk")
        self.sampling, self.family = sampling, family
        self.shape = latent_shape(family.channels, sampling.width, sampling.height)
        self._run = uuid.uuid4().hex[:8]

    def __call__(self, client, worker: int, frame: WalkFrame):
        noise = walk_noise(frame.seed_a, frame.seed_b, frame.t, self.shape)
        latent = start_latent(noise, sigma_max=self.family.sigma_max, scaling_factor=self.family.scaling_factor)
        # one file name per worker, overwritten each frame: ComfyUI's input folder stays bounded, and
        # two servers sharing one input folder (two GPUs, one install) never read each other's file
        ref = upload_latent(client.url, latent_bytes(latent), f"walk_{self._run}_{worker}.latent")
        images = client.run(frame_graph(self.workflow, self.sampling, ref), output_node=self.workflow.output_node)
        return images[0]
