"""backend.comfyui (client, workflow, keyframe) against the fake AND the real ComfyUI 0.3.75.

Everything here runs twice through `comfy_server`; model-free graphs only (LoadImage ->
ImageInvert -> output), so the real server needs no weights and answers in well under a second.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import requests
from PIL import Image

from backend.comfyui.client import ComfyClient, ExecutionFailed, WorkflowRejected
from backend.comfyui.keyframe import UPLOAD_SLOTS, KeyframeGenerator
from backend.comfyui.workflow import load_workflow
from tests.real_comfyui.raw import invert_graph, is_inverted, pattern


@pytest.fixture
def client(comfy_server):
    client = ComfyClient(comfy_server.url, request_timeout=10.0, job_timeout=60.0, poll_interval=0.5,
                         unavailable_grace=30.0)
    yield client
    client.close()


def _user_workflow(tmp_path, output: str):
    """A user's exported API-format workflow with no model in it: LoadImage -> ImageInvert -> output."""
    path = tmp_path / f"invert_{output}.json"
    path.write_text(json.dumps(invert_graph("reverie/placeholder.png", output=output)), encoding="utf-8")
    return load_workflow(path)


def _generator(client, workflow, checkpoint=None, sampler="euler", scheduler="normal"):
    return KeyframeGenerator(client, img2img=workflow, txt2img=workflow, checkpoint=checkpoint, steps=1, cfg=1.0,
                             sampler=sampler, scheduler=scheduler, width=64, height=64)


def test_health_reports_version_and_the_checkpoints_on_disk(client, comfy_server):
    assert client.system_stats()["system"]["comfyui_version"] == "0.3.75"
    assert client.version() == "0.3.75"
    assert comfy_server.checkpoint in client.checkpoints()
    assert "ImageInvert" in client.object_info("ImageInvert")


@pytest.mark.parametrize("output", ["SaveImage", "SaveImageWebsocket"])
def test_generate_keyframe_runs_a_model_free_user_workflow_and_returns_the_inverted_input(
        client, comfy_server, tmp_path, output):
    generator = _generator(client, _user_workflow(tmp_path, output))
    source = pattern(48, 40)
    result = generator.generate_keyframe(source, "ignored prompt", "", seed=7, denoise=0.5)
    assert result.image.size == (48, 40)
    assert is_inverted(result.image, np.asarray(source))
    assert result.seconds > 0 and result.prompt_id


@pytest.mark.parametrize("output", ["SaveImage", "SaveImageWebsocket", "PreviewImage"])
def test_client_run_returns_the_inverted_image_for_each_output_node(client, output):
    source = pattern()
    ref = client.upload_image(source, f"run_{output}.png")
    images = client.run(invert_graph(ref, output=output, prefix=f"reverie/run_{output}"), output_node="3")
    assert len(images) == 1 and is_inverted(images[0], np.asarray(source))


def test_history_entry_is_deleted_once_the_result_is_fetched(client, comfy_server, tmp_path):
    result = _generator(client, _user_workflow(tmp_path, "SaveImage")).generate_keyframe(
        pattern(), "p", "n", seed=1, denoise=0.5)
    answer = requests.get(f"{comfy_server.url}/history/{result.prompt_id}", timeout=10)
    assert answer.status_code == 200 and answer.json() == {}


def test_uploads_overwrite_a_rotating_set_so_the_input_folder_stays_bounded(client, comfy_server, tmp_path):
    input_dir, output_dir = comfy_server.require_dirs()
    files_before = {kind: set(folder.rglob("*")) for kind, folder in (("input", input_dir), ("output", output_dir))}
    generator = _generator(client, _user_workflow(tmp_path, "SaveImageWebsocket"))
    for seed in range(UPLOAD_SLOTS * 2 + 1):
        shade = Image.new("RGB", (32, 32), (seed * 30, 10, 200))
        result = generator.generate_keyframe(shade, "p", "n", seed=seed, denoise=0.5)
        assert is_inverted(result.image, np.asarray(shade))      # a fresh run each time, not a cache hit
    new_inputs = {p.relative_to(input_dir).as_posix() for p in set(input_dir.rglob("*")) - files_before["input"]}
    assert new_inputs <= {"reverie"} | {f"reverie/keyframe_{slot}.png" for slot in range(UPLOAD_SLOTS)}
    assert set(output_dir.rglob("*")) == files_before["output"], "SaveImageWebsocket must write no file"


def test_the_checkpoint_list_for_servers_without_the_models_route_reads_object_info_alike(client):
    # the fallback behind checkpoints() when GET /models/checkpoints answers 404 (older servers)
    assert client._checkpoints_from_object_info() == client.checkpoints() != []


def test_unknown_checkpoint_is_rejected_with_the_available_names(client, comfy_server):
    graph = load_workflow("builtin:img2img").patch(image="reverie/absent.png", checkpoint="nope.safetensors")
    graph["10"] = {"class_type": "LoadImage", "inputs": {"image": client.upload_image(pattern(), "ckpt.png")}}
    with pytest.raises(WorkflowRejected) as caught:
        client.run(graph)
    line = next(line for line in caught.value.lines if "ckpt_name" in line)
    assert line.startswith("node 4 (CheckpointLoaderSimple)")
    assert "'nope.safetensors' not in [" in line and comfy_server.checkpoint in line


def test_preflight_names_the_available_checkpoints_and_samplers(client, comfy_server):
    img2img, txt2img = load_workflow("builtin:img2img"), load_workflow("builtin:txt2img")
    generator = KeyframeGenerator(client, img2img=img2img, txt2img=txt2img, checkpoint="nope.safetensors",
                                  steps=1, cfg=1.0, sampler="not_a_sampler", scheduler="normal", width=64, height=64)
    with pytest.raises(WorkflowRejected) as caught:
        generator.preflight()
    text = str(caught.value)
    assert "'nope.safetensors'" in text and comfy_server.checkpoint in text
    assert "'not_a_sampler'" in text and "euler_ancestral" in text and "dpmpp_2m" in text


def test_bad_sampler_name_sent_anyway_is_rejected_naming_the_input(client, comfy_server):
    graph = load_workflow("builtin:txt2img").patch(checkpoint=comfy_server.checkpoint, sampler="not_a_sampler",
                                                   steps=1, width=64, height=64)
    with pytest.raises(WorkflowRejected) as caught:
        client.run(graph)
    (line,) = [line for line in caught.value.lines if "sampler_name" in line]
    assert "KSampler" in line and "'not_a_sampler' not in" in line


def test_partly_valid_graph_answered_200_is_still_a_rejection(client):
    graph = invert_graph(client.upload_image(pattern(), "partial.png"))
    graph["5"] = {"class_type": "LoadImage", "inputs": {"image": "reverie/missing.png"}}
    graph["6"] = {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "reverie/partial"}}
    with pytest.raises(WorkflowRejected) as caught:
        client.run(graph)
    assert any("node 5 (LoadImage)" in line and "Invalid image file" in line for line in caught.value.lines)


def test_corrupt_input_image_is_an_execution_failure_naming_the_node(client, comfy_server):
    answer = requests.post(comfy_server.url + "/upload/image", timeout=10,
                           files={"image": ("corrupt.png", b"definitely not a png", "image/png")},
                           data={"overwrite": "true", "subfolder": "reverie", "type": "input"})
    assert answer.status_code == 200
    with pytest.raises(ExecutionFailed) as caught:
        client.run(invert_graph("reverie/corrupt.png", prefix="reverie/corrupt"))
    assert (caught.value.node_id, caught.value.node_type) == ("1", "LoadImage")
    assert caught.value.exception_type == "PIL.UnidentifiedImageError"


def test_uploaded_png_round_trips_bit_exact_through_view(client, comfy_server):
    source = pattern(24, 16)
    assert client.upload_image(source, "roundtrip.png") == "reverie/roundtrip.png"
    answer = requests.get(comfy_server.url + "/view", timeout=10,
                          params={"filename": "roundtrip.png", "subfolder": "reverie", "type": "input"})
    assert answer.status_code == 200
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB")), np.asarray(source))
