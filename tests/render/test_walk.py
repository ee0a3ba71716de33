"""The walk plan (frames per leg, loop), the family rules, and the frame graph rewrite."""

from __future__ import annotations

import pytest

from backend.comfyui.workflow import WorkflowError, load_workflow, parse_workflow
from backend.render.families import FAMILIES, detect, refusal
from backend.render.graphs import LATENT_NODE, Sampling, frame_graph, seed_graph
from backend.render.walk import WalkError, plan_walk

SAMPLING = Sampling("p", "n", 4, 7.0, "euler", "normal", "model.safetensors", 64, 64)


def test_two_seeds_and_sixteen_frames_make_sixteen_frames_from_t0_to_t1():
    frames = plan_walk([5, 9], 16)
    assert len(frames) == 16
    assert (frames[0].seed_a, frames[0].t) == (5, 0.0)
    assert (frames[-1].seed_b, frames[-1].t) == (9, 1.0)
    assert [f.index for f in frames] == list(range(16))


def test_three_seeds_share_the_middle_frame_once():
    frames = plan_walk([1, 2, 3], 4)
    assert [(f.seed_a, f.seed_b, round(f.t, 3)) for f in frames] == [
        (1, 2, 0.0), (1, 2, 0.333), (1, 2, 0.667), (1, 2, 1.0), (2, 3, 0.333), (2, 3, 0.667), (2, 3, 1.0)]


def test_loop_walks_back_to_the_first_seed_without_repeating_frame_zero():
    frames = plan_walk([1, 2], 3, loop=True)
    assert [(f.seed_a, f.seed_b, f.t) for f in frames] == [(1, 2, 0.0), (1, 2, 0.5), (1, 2, 1.0), (2, 1, 0.5)]


@pytest.mark.parametrize("seeds,frames,message", [([1], 16, "two or more seeds"), ([1, 2], 1, "at least 2")])
def test_a_walk_that_cannot_be_made_says_why(seeds, frames, message):
    with pytest.raises(WalkError, match=message):
        plan_walk(seeds, frames)


@pytest.mark.parametrize("name,family", [("flux1-dev.safetensors", "flux"), ("sd3.5_large.safetensors", "sd3"),
                                         ("juggernautXL_v9.safetensors", "sdxl"),
                                         ("v1-5-pruned-emaonly.safetensors", "sd1")])
def test_family_from_the_checkpoint_name(name, family):
    assert detect(name, set(), None)[0].name == family


def test_metadata_outranks_the_name_and_flow_nodes_outrank_both():
    assert detect("model.safetensors", set(), {"modelspec.architecture": "stable-diffusion-xl-v1-base"})[0].name == "sdxl"
    assert detect("sdxl.safetensors", {"ModelSamplingFlux"}, None)[0].name == "flux"


def test_flow_families_are_refused_with_the_reason_and_what_works():
    assert not FAMILIES["flux"].walkable and not FAMILIES["sd3"].walkable
    message = refusal(FAMILIES["flux"])
    assert "FLUX" in message and "multiplied by zero" in message and "SDXL" in message


def test_frame_graph_samples_the_loaded_latent_without_adding_noise():
    graph = frame_graph(load_workflow("builtin:txt2img"), SAMPLING, "reverie/walk_0.latent")
    sampler = next(n for n in graph.values() if n["class_type"] == "KSamplerAdvanced")["inputs"]
    assert graph[LATENT_NODE] == {"class_type": "LoadLatent", "inputs": {"latent": "reverie/walk_0.latent"},
                                  "_meta": {"title": "Reverie Walk Latent"}}
    assert sampler["latent_image"] == [LATENT_NODE, 0]
    assert (sampler["add_noise"], sampler["start_at_step"], sampler["steps"]) == ("disable", 0, 4)
    assert not any(n["class_type"] == "EmptyLatentImage" for n in graph.values())


def test_seed_graph_is_the_plain_workflow_with_the_seed():
    graph = seed_graph(load_workflow("builtin:txt2img"), SAMPLING, 42)
    sampler = next(n for n in graph.values() if n["class_type"] == "KSampler")["inputs"]
    assert (sampler["seed"], sampler["denoise"], sampler["steps"]) == (42, 1.0, 4)


def test_an_img2img_workflow_cannot_be_walked():
    with pytest.raises(WorkflowError, match="img2img"):
        frame_graph(load_workflow("builtin:img2img"), SAMPLING, "x.latent")


def test_a_workflow_without_a_sampler_cannot_be_walked():
    graph = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
             "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    with pytest.raises(WorkflowError, match="no KSampler"):
        frame_graph(parse_workflow(graph), SAMPLING, "x.latent")
