"""The API-format graphs of a seed walk: one frame from a loaded start latent, and the seed reference.

Both come from one txt2img workflow (the built-in SD 1.5 template or a user's API export with a
KSampler or KSamplerAdvanced): `frame_graph` swaps its empty latent for LoadLatent and its
sampler for KSamplerAdvanced with ``add_noise: disable`` (see latent_file.py for why that
reproduces a seed), `seed_graph` is the plain workflow with a seed, which is what the walk's
t = 0 frame must equal.
"""

from __future__ import annotations

from dataclasses import dataclass

from backend.comfyui.workflow import Workflow, WorkflowError

LATENT_NODE = "reverie_latent"


@dataclass(frozen=True)
class Sampling:
    prompt: str
    negative: str
    steps: int
    cfg: float
    sampler: str
    scheduler: str
    checkpoint: str
    width: int
    height: int


def _patched(workflow: Workflow, sampling: Sampling, seed: int, prefix: str) -> dict:
    return workflow.patch(positive=sampling.prompt, negative=sampling.negative, seed=seed, steps=sampling.steps,
                          cfg=sampling.cfg, sampler=sampling.sampler, scheduler=sampling.scheduler,
                          checkpoint=sampling.checkpoint, width=sampling.width, height=sampling.height,
                          filename_prefix=prefix)


def check_walkable(workflow: Workflow) -> None:
    """Raise WorkflowError unless the workflow is a txt2img graph frame_graph can rewrite."""
    node = workflow.roles.get("sampler")
    if node is None:
        raise WorkflowError(f"{workflow.source}: has no KSampler or KSamplerAdvanced node to render with")
    inputs = workflow.graph[node]["inputs"]
    if "image" in workflow.roles:
        raise WorkflowError(f"{workflow.source}: is an img2img workflow (it has a LoadImage); a seed walk needs "
                            f"a txt2img workflow whose sampler starts from an empty latent")
    if float(inputs.get("denoise", 1.0)) != 1.0 or int(inputs.get("start_at_step", 0)) != 0:
        raise WorkflowError(f"{workflow.source}: its sampler (node {node}) does not start at full noise "
                            f"(denoise 1, start_at_step 0), which a seed walk needs")


def seed_graph(workflow: Workflow, sampling: Sampling, seed: int, prefix: str = "reverie/walk") -> dict:
    """The workflow as ComfyUI would run it for `seed`: the reference a t = 0 walk frame equals."""
    return _patched(workflow, sampling, seed, prefix)


def frame_graph(workflow: Workflow, sampling: Sampling, latent_ref: str, prefix: str = "reverie/walk") -> dict:
    """One walk frame: sample from the uploaded `.latent` (`latent_ref`, as the upload returned it)."""
    check_walkable(workflow)
    graph = _patched(workflow, sampling, 0, prefix)
    node = workflow.roles["sampler"]
    old = graph[node]["inputs"]
    graph[LATENT_NODE] = {"class_type": "LoadLatent", "inputs": {"latent": latent_ref},
                          "_meta": {"title": "Reverie Walk Latent"}}
    graph[node] = {"class_type": "KSamplerAdvanced", "_meta": graph[node].get("_meta", {}), "inputs": {
        "model": old["model"], "positive": old["positive"], "negative": old["negative"],
        "latent_image": [LATENT_NODE, 0],
        # the noise is already in the latent: the sampler must add none of its own
        "add_noise": "disable", "noise_seed": 0,
        "steps": old["steps"], "cfg": old["cfg"], "sampler_name": old["sampler_name"],
        "scheduler": old["scheduler"], "start_at_step": 0, "end_at_step": 10000,
        "return_with_leftover_noise": "disable"}}
    # The empty latent the sampler no longer reads would still be validated: drop it when unused.
    size = workflow.roles.get("size")
    if size and not any(isinstance(v, list) and v and v[0] == size
                        for n in graph.values() for v in n.get("inputs", {}).values()):
        del graph[size]
    return graph
