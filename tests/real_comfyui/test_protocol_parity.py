"""The fake and the real ComfyUI must answer the wire protocol alike (raw HTTP + WebSocket, no client).

Each test runs twice through the `comfy_server` fixture: against tests.fake_comfyui.FakeComfyUI
and against a real ComfyUI 0.3.75. A failure on "fake" only means the fake drifted from reality.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.real_comfyui.raw import RawSession, invert_graph, is_inverted, pattern, png_bytes


@pytest.fixture
def raw(comfy_server):
    session = RawSession(comfy_server.url)
    yield session
    session.close()


def _uploaded_pattern(raw: RawSession, name: str = "parity.png") -> tuple[np.ndarray, str]:
    image = pattern()
    answer = raw.upload(png_bytes(image), name)
    return np.asarray(image), f"{answer['subfolder']}/{answer['name']}"


def test_websocket_greets_with_status_carrying_our_client_id(raw):
    assert raw.first["type"] == "status"
    assert raw.first["data"]["sid"] == raw.client_id
    assert raw.first["data"]["status"]["exec_info"]["queue_remaining"] >= 0


def test_system_stats_reports_comfyui_version(raw):
    stats = raw.http.get(raw.url + "/system_stats", timeout=10).json()
    assert stats["system"]["comfyui_version"] == "0.3.75"


def test_upload_without_overwrite_renames_changed_bytes_and_overwrite_keeps_the_name(raw):
    assert raw.upload(png_bytes(pattern()), "same.png")["name"] == "same.png"
    assert raw.upload(png_bytes(pattern(16, 16)), "same.png", overwrite=False)["name"] == "same (1).png"
    assert raw.upload(png_bytes(pattern(16, 16)), "same.png", overwrite=True)["name"] == "same.png"


def test_invert_to_save_image_finishes_with_executing_null_after_execution_success(raw):
    pixels, ref = _uploaded_pattern(raw)
    prompt_id, events = raw.run(invert_graph(ref, prefix="reverie/parity_save"))
    kinds = [event[0] for event in events if event[0] != "binary"]
    assert kinds.index("execution_success") < len(kinds) - 1
    assert events[-1] == ("executing", {"node": None, "prompt_id": prompt_id})
    entry = raw.history(prompt_id)[prompt_id]
    assert entry["status"]["status_str"] == "success"
    image_ref = entry["outputs"]["3"]["images"][0]
    assert image_ref["type"] == "output" and image_ref["subfolder"] == "reverie"
    assert is_inverted(raw.view(image_ref), pixels)


def test_save_image_websocket_sends_a_type_1_png_frame_of_the_result(raw):
    pixels, ref = _uploaded_pattern(raw, "parity_ws.png")
    _, events = raw.run(invert_graph(ref, output="SaveImageWebsocket"))
    frames = [event for event in events if event[0] == "binary"]
    assert len(frames) == 1 and frames[0][1] == 1
    payload = frames[0][2]
    assert payload[:4] == b"\x00\x00\x00\x02"          # format 2 = PNG
    assert is_inverted(Image.open(io.BytesIO(payload[4:])), pixels)


def test_identical_resubmission_is_served_from_cache(raw):
    _, ref = _uploaded_pattern(raw, "parity_cache.png")
    graph = invert_graph(ref, prefix="reverie/parity_cache")
    first_id, _ = raw.run(graph)
    second_id, events = raw.run(graph)
    cached = next(data for kind, *rest in events if kind == "execution_cached" for data in rest)
    assert sorted(cached["nodes"]) == ["1", "2", "3"]
    first = raw.history(first_id)[first_id]["outputs"]["3"]["images"]
    assert raw.history(second_id)[second_id]["outputs"]["3"]["images"] == first


def test_prompt_without_client_id_sends_us_no_execution_events(raw):
    _, ref = _uploaded_pattern(raw, "parity_noid.png")
    answer = raw.queue(invert_graph(ref, prefix="reverie/parity_noid"), client_id=False)
    assert answer.status_code == 200
    marker_id, events = raw.run(invert_graph(ref, prefix="reverie/parity_marker"))
    foreign = {data.get("prompt_id") for kind, *rest in events if kind == "executing" for data in rest}
    assert foreign <= {marker_id}


def test_unknown_checkpoint_is_value_not_in_list_naming_the_checkpoints(raw, comfy_server):
    graph = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "nope.safetensors"}},
             "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
             "8": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["4", 2]}},
             "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "images": ["8", 0]}}}
    answer = raw.queue(graph)
    assert answer.status_code == 400
    body = answer.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation" and body["error"]["details"] == ""
    error = body["node_errors"]["4"]["errors"][0]
    assert error["type"] == "value_not_in_list"
    assert error["details"].startswith("ckpt_name: 'nope.safetensors' not in [")
    assert comfy_server.checkpoint in error["details"]
    assert body["node_errors"]["4"]["class_type"] == "CheckpointLoaderSimple"


@pytest.mark.parametrize("graph, error_type", [
    ({"1": {"class_type": "NoSuchNode", "inputs": {}}}, "invalid_prompt"),
    ({"1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}}}, "prompt_no_outputs"),
], ids=["unknown-class", "no-outputs"])
def test_graph_level_rejections_carry_the_recorded_error_type(raw, graph, error_type):
    answer = raw.queue(graph)
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == error_type
    assert answer.json()["node_errors"] == {}


def test_partly_valid_graph_is_accepted_with_node_errors(raw):
    _, ref = _uploaded_pattern(raw, "parity_partial.png")
    graph = invert_graph(ref, prefix="reverie/parity_partial")
    graph["5"] = {"class_type": "LoadImage", "inputs": {"image": "missing.png"}}
    graph["6"] = {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "x"}}
    answer = raw.queue(graph)
    assert answer.status_code == 200
    error = answer.json()["node_errors"]["5"]["errors"][0]
    assert error["type"] == "custom_validation_failed"
    assert "Invalid image file: missing.png" in error["details"]
    raw.events_until_done(answer.json()["prompt_id"])


def test_free_takes_a_json_body_and_answers_500_without_one(raw):
    assert raw.http.post(raw.url + "/free", json={"unload_models": True}, timeout=10).status_code == 200
    assert raw.http.post(raw.url + "/free", data=b"", timeout=10).status_code == 500


def test_mismatched_origin_header_is_refused_with_an_empty_403(raw):
    answer = raw.http.get(raw.url + "/system_stats", headers={"Origin": "http://elsewhere.example"}, timeout=10)
    assert answer.status_code == 403 and answer.text == ""


def test_corrupt_uploaded_image_fails_at_execution_not_validation(raw):
    raw.upload(b"not an image at all", "corrupt.png")
    answer = raw.queue(invert_graph("reverie/corrupt.png", prefix="reverie/corrupt"))
    assert answer.status_code == 200 and answer.json()["node_errors"] == {}
    prompt_id = answer.json()["prompt_id"]
    events = raw.events_until_done(prompt_id)
    error = next(data for kind, *rest in events if kind == "execution_error" for data in rest)
    assert (error["node_id"], error["node_type"]) == ("1", "LoadImage")
    assert error["exception_type"] == "PIL.UnidentifiedImageError"
    assert raw.history(prompt_id)[prompt_id]["status"]["status_str"] == "error"


def test_deleted_history_entry_reads_as_empty(raw):
    _, ref = _uploaded_pattern(raw, "parity_delete.png")
    prompt_id, _ = raw.run(invert_graph(ref, prefix="reverie/parity_delete"))
    assert prompt_id in raw.history(prompt_id)
    assert raw.http.post(raw.url + "/history", json={"delete": [prompt_id]}, timeout=10).status_code == 200
    assert raw.history(prompt_id) == {}


def _sampler_graph(checkpoint: str, sampler: str, scheduler: str) -> dict:
    return {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a", "clip": ["4", 1]}},
            "3": {"class_type": "KSampler", "inputs": {
                "seed": 1, "steps": 1, "cfg": 7.0, "sampler_name": sampler, "scheduler": scheduler, "denoise": 1.0,
                "model": ["4", 0], "positive": ["6", 0], "negative": ["6", 0], "latent_image": ["5", 0]}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
            "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "images": ["8", 0]}}}


def test_bad_sampler_names_only_the_list_length_while_a_short_list_is_spelled_out(raw, comfy_server):
    """Real ComfyUI abbreviates choice lists longer than 20 (samplers: 42) in `details` and drops
    `input_config`: the names must come from /object_info, not from the rejection."""
    answer = raw.queue(_sampler_graph(comfy_server.checkpoint, "not_a_sampler", "not_a_scheduler"))
    assert answer.status_code == 400
    errors = {e["extra_info"]["input_name"]: e for e in answer.json()["node_errors"]["3"]["errors"]}
    assert errors["sampler_name"]["type"] == "value_not_in_list"
    assert errors["sampler_name"]["details"].startswith("sampler_name: 'not_a_sampler' not in (list of length ")
    assert errors["sampler_name"]["extra_info"]["input_config"] is None
    assert errors["scheduler"]["details"].startswith("scheduler: 'not_a_scheduler' not in ['simple', ")


@pytest.mark.parametrize("body, status, error_type", [
    ({"prompt": {"last_node_id": 9, "nodes": [], "links": []}}, 500, None),
    ({"prompt": {"nodes": [{"id": 1, "type": "LoadImage"}], "links": []}}, 400, "invalid_prompt"),
    ({"nodes": [], "links": []}, 400, "no_prompt"),
], ids=["ui-export-scalar-first", "ui-export-nodes-first", "ui-export-as-body"])
def test_ui_format_workflow_is_refused_as_the_real_server_does(raw, comfy_server, body, status, error_type):
    """A real UI export starts with scalars ("last_node_id": 9): 500 text/plain. A graph whose first
    value is a list gets 400 invalid_prompt ("a node is missing the class_type property")."""
    answer = raw.http.post(raw.url + "/prompt", json=body, timeout=10)
    assert answer.status_code == status
    if error_type is None:
        assert answer.headers["Content-Type"].startswith("text/plain")
    else:
        assert answer.json()["error"]["type"] == error_type
