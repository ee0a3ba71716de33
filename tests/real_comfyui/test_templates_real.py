"""The built-in SD 1.5 templates pass the REAL ComfyUI validator (real-server only).

The real server's models/checkpoints holds `placeholder.safetensors`, which is not a checkpoint:
a graph that reaches CheckpointLoaderSimple's execution has passed validation of every node,
link, type, range and combo value. So ExecutionFailed at CheckpointLoaderSimple (a safetensors
header error) is the success criterion here; WorkflowRejected would mean a broken template.
The fake cannot prove this: its validator is our own reading of ComfyUI's.
"""

from __future__ import annotations

import pytest

from backend.comfyui.client import ComfyClient, ExecutionFailed
from backend.comfyui.keyframe import KeyframeGenerator
from backend.comfyui.workflow import load_workflow
from tests.real_comfyui.raw import pattern
from tests.real_comfyui.server import PLACEHOLDER_CHECKPOINT

pytestmark = pytest.mark.real_comfyui


@pytest.fixture
def client(running_real_server):
    if running_real_server.checkpoint != PLACEHOLDER_CHECKPOINT:
        pytest.skip(f"the server at {running_real_server.url} has no {PLACEHOLDER_CHECKPOINT} "
                    "(start it with tests/real_comfyui/server.py)")
    client = ComfyClient(running_real_server.url, request_timeout=10.0, job_timeout=120.0, poll_interval=0.5)
    yield client
    client.close()


def _generator(client, **overrides):
    settings = dict(img2img=load_workflow("builtin:img2img"), txt2img=load_workflow("builtin:txt2img"),
                    checkpoint=PLACEHOLDER_CHECKPOINT, steps=4, cfg=7.0, sampler="dpmpp_2m", scheduler="karras",
                    width=512, height=384)
    settings.update(overrides)
    return KeyframeGenerator(client, **settings)


def _assert_failed_loading_the_placeholder(caught) -> None:
    error = caught.value
    assert error.node_type == "CheckpointLoaderSimple", str(error)
    assert "SafetensorError" in (error.exception_type or ""), str(error)


def test_preflight_accepts_the_templates_against_the_real_object_info(client):
    generator = _generator(client)
    generator.preflight()
    assert generator.img2img.output_class == "SaveImageWebsocket"


@pytest.mark.parametrize("start_image", [True, False], ids=["img2img", "txt2img"])
def test_builtin_template_passes_real_validation_and_fails_only_at_the_checkpoint(client, start_image):
    generator = _generator(client)
    with pytest.raises(ExecutionFailed) as caught:
        generator.generate_keyframe(pattern(64, 64) if start_image else None, "a quiet lake at dawn",
                                    "blurry", seed=2 ** 64 - 1, denoise=0.45)
    _assert_failed_loading_the_placeholder(caught)


@pytest.mark.parametrize("spec", ["builtin:img2img", "builtin:txt2img"])
def test_builtin_template_with_save_image_output_also_validates(client, spec):
    workflow = load_workflow(spec).with_save_output()
    image = client.upload_image(pattern(64, 64), "template.png") if "image" in workflow.roles else None
    graph = workflow.patch(image=image, checkpoint=PLACEHOLDER_CHECKPOINT, seed=0, denoise=1.0, steps=10000,
                           cfg=100.0, sampler="euler", scheduler="normal", width=64, height=64,
                           filename_prefix="reverie/template")
    with pytest.raises(ExecutionFailed) as caught:
        client.run(graph, output_node=workflow.output_node)
    _assert_failed_loading_the_placeholder(caught)


def test_every_sampler_and_scheduler_the_real_server_lists_is_accepted_by_the_patch(client):
    """Our patch must carry the server's names verbatim (no normalising of e.g. 'dpmpp_2m_sde_gpu')."""
    ksampler = client.object_info("KSampler")["KSampler"]["input"]["required"]
    samplers, schedulers = ksampler["sampler_name"][0], ksampler["scheduler"][0]
    assert "euler" in samplers and "karras" in schedulers
    workflow = load_workflow("builtin:txt2img")
    for sampler in samplers:
        graph = workflow.patch(sampler=sampler, scheduler=schedulers[-1])
        assert graph[workflow.roles["sampler"]]["inputs"]["sampler_name"] == sampler
