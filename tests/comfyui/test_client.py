"""ComfyClient against the fake server: results, errors, faults, the one-job lock."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import requests
from PIL import ImageChops

from backend.comfyui.client import (ComfyClient, ComfyTimeout, ComfyUnavailable, ExecutionFailed,
                                    ImagesNotReceived, Interrupted, JobLost, WorkflowRejected, discover)
from tests.comfyui.conftest import invert_graph
from tests.fake_comfyui import fake_sample


def _inverted(picture):
    return ImageChops.invert(picture)


@pytest.mark.parametrize("output", ["SaveImage", "SaveImageWebsocket", "PreviewImage"])
def test_run_returns_the_inverted_input_for_each_output_kind(fake, client, picture, output):
    ref = client.upload_image(picture, "in.png")
    result = client.run_job(invert_graph(ref, output))
    assert len(result.images) == 1
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(_inverted(picture)))
    assert result.prompt_id and result.seconds > 0


def test_run_deletes_its_history_entry(fake, client, picture):
    client.run(invert_graph(client.upload_image(picture, "in.png")))
    assert fake.history == {}


def test_upload_uses_reverie_subfolder_and_overwrites(fake, client, picture):
    assert client.upload_image(picture, "k.png") == "reverie/k.png"
    assert client.upload_image(picture.rotate(90), "k.png") == "reverie/k.png"
    assert fake.file_counts()["input"] == 1


def test_upload_bytes_stores_any_file_as_sent_and_renames_instead_of_overwriting_when_told(fake, client):
    assert client.upload_bytes(b"first", "a.latent") == "reverie/a.latent"
    assert fake.resolve("input", "reverie", "a.latent").read_bytes() == b"first"
    assert client.upload_bytes(b"second", "a.latent", overwrite=False) == "reverie/a (1).latent"
    assert fake.resolve("input", "reverie", "a.latent").read_bytes() == b"first"
    assert client.upload_bytes(b"third", "a.latent", "elsewhere") == "elsewhere/a.latent"


@pytest.mark.parametrize("name", ["", "../x.png", "a/b.png", "a\\b.png"])
def test_upload_rejects_names_that_are_paths(client, picture, name):
    with pytest.raises(ValueError):
        client.upload_image(picture, name)
    with pytest.raises(ValueError):
        client.upload_bytes(b"data", name)


def test_health_version_and_checkpoints(client):
    assert client.version() == "0.3.75"
    assert client.checkpoints() == ["v1-5-pruned-emaonly.safetensors"]
    assert "KSampler" in client.object_info("KSampler")
    assert client.object_info("NoSuchNode") == {}
    client.free()
    assert client.queue_ids() == ([], [])


@pytest.mark.parametrize("mutate, expected", [
    (lambda g: g["1"]["inputs"].update(image="missing.png"), "node 1 (LoadImage) input 'image'"),
    (lambda g: g["3"]["inputs"].pop("images"), "node 3 (SaveImage) input 'images': Required input is missing"),
    (lambda g: g["3"]["inputs"].update(images=["1", 1]), "Return type mismatch"),
    (lambda g: g["3"]["inputs"].update(images=["1"]), "Bad linked input"),
    (lambda g: g["2"].update(class_type="ETN_LoadImageBase64"), "ETN_LoadImageBase64 does not exist"),
    (lambda g: g["3"].update(class_type="ImageInvert"), "Prompt has no outputs"),
])
def test_validation_errors_are_rendered_as_readable_lines(fake, client, picture, mutate, expected):
    graph = invert_graph(client.upload_image(picture, "in.png"))
    mutate(graph)
    with pytest.raises(WorkflowRejected) as info:
        client.run(graph)
    assert expected in str(info.value)
    assert info.value.lines


def test_bad_checkpoint_and_denoise_name_both_nodes(client):
    graph = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "nope.safetensors"}},
             "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
             "3": {"class_type": "KSampler", "inputs": {
                 "seed": 1, "steps": 2, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.5,
                 "model": ["4", 0], "positive": ["6", 0], "negative": ["6", 0], "latent_image": ["5", 0]}},
             "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "x", "clip": ["4", 1]}},
             "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
             "9": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["8", 0]}}}
    with pytest.raises(WorkflowRejected) as info:
        client.run(graph)
    text = "\n".join(info.value.lines)
    assert "node 4 (CheckpointLoaderSimple) input 'ckpt_name'" in text and "v1-5-pruned-emaonly" in text
    assert "node 3 (KSampler) input 'denoise': Value 1.5 bigger than max of 1.0" in text


def test_partly_valid_graph_answered_200_is_rejected_and_not_left_queued(fake, client, picture):
    graph = invert_graph(client.upload_image(picture, "in.png"))
    graph["9"] = {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}
    with pytest.raises(WorkflowRejected, match="part of the workflow"):
        client.run(graph)
    time.sleep(0.2)
    assert fake.history == {} and fake.pending == []


@pytest.mark.parametrize("ui_graph", [
    {"last_node_id": 9, "last_link_id": 9, "nodes": [], "links": []},       # answered 500 text/plain
    {"nodes": [{"id": 1, "type": "LoadImage"}], "links": []},               # answered 400 invalid_prompt
    {"id": "4b1c0a52", "revision": 0, "last_node_id": 9, "nodes": [], "links": []},   # 400, Node ID '#id'
], ids=["scalar-first", "nodes-first", "string-id-first"])
def test_ui_format_graph_sent_anyway_explains_api_export(client, ui_graph):
    with pytest.raises(WorkflowRejected) as info:
        client.run(ui_graph)
    assert "Save (API Format)" in str(info.value)


def test_execution_error_names_node_and_exception(fake, client, picture):
    fake.fail_next_execution = 1
    with pytest.raises(ExecutionFailed) as info:
        client.run(invert_graph(client.upload_image(picture, "in.png")))
    assert info.value.node_type == "LoadImage" and "OutOfMemoryError" in str(info.value)
    assert fake.history == {}


def test_silent_socket_finishes_by_polling_history(fake, client, picture):
    fake.silent_socket = True
    images = client.run(invert_graph(client.upload_image(picture, "in.png")))
    assert np.array_equal(np.asarray(images[0]), np.asarray(_inverted(picture)))


def test_silent_socket_with_websocket_output_says_the_images_were_not_received(fake, client, picture):
    fake.silent_socket = True
    with pytest.raises(ImagesNotReceived, match="succeeded"):   # a JobLost: callers that resubmit still do
        client.run(invert_graph(client.upload_image(picture, "in.png"), "SaveImageWebsocket"))
    assert fake.history == {}


def test_server_killed_mid_run_raises_job_lost_then_recovers(fake, client, picture):
    ref = client.upload_image(picture, "in.png")
    fake.latency = 0.5
    fake.kill_mid_run = True
    with pytest.raises(JobLost):
        client.run(invert_graph(ref))
    fake.latency = 0.0
    assert len(client.run(invert_graph(ref, "SaveImageWebsocket"))) == 1


def test_refused_connections_raise_unavailable_then_recover(fake, client, picture):
    ref = client.upload_image(picture, "in.png")
    fake.refuse_connections = True
    with pytest.raises(ComfyUnavailable):
        client.run(invert_graph(ref))
    fake.refuse_connections = False
    assert len(client.run(invert_graph(ref))) == 1


def test_a_job_given_up_while_the_server_was_away_is_discarded_when_it_returns(fake, picture):
    client = ComfyClient(fake.url, request_timeout=2.0, job_timeout=20.0, poll_interval=0.1,
                         unavailable_grace=0.5)
    ref = client.upload_image(picture, "in.png")
    fake.latency = 4.0
    errors = []
    worker = threading.Thread(target=lambda: _catch(errors, client.run, invert_graph(ref)))
    worker.start()
    deadline = time.monotonic() + 5
    while fake.running is None and time.monotonic() < deadline:
        time.sleep(0.01)
    old_job = fake.running.prompt_id
    fake.refuse_connections = True          # unreachable, but the job keeps running on the server
    worker.join(timeout=10)
    assert errors and isinstance(errors[0], ComfyUnavailable)
    fake.refuse_connections = False
    assert fake.running is not None and fake.running.prompt_id == old_job
    started = time.monotonic()
    fake.latency = 0.0
    assert len(client.run(invert_graph(ref))) == 1
    assert time.monotonic() - started < 3.0               # did not wait behind the old 4 s job
    assert old_job not in fake.history and fake.peak_queue == 1
    client.close()


def _catch(errors: list, call, *args) -> None:
    try:
        call(*args)
    except Exception as exc:    # the test thread inspects it
        errors.append(exc)


def test_free_asks_the_server_to_unload_models_and_the_fake_records_it(fake, client):
    assert fake.free_calls == []
    client.free()
    client.free()
    assert fake.free_calls == [{"unload_models": True, "free_memory": True}] * 2
    with requests.Session() as http:
        http.trust_env = False
        assert http.post(fake.url + "/free", data=b"").status_code == 500     # like the real server
    assert len(fake.free_calls) == 2


def test_job_timeout_interrupts_our_prompt(fake, picture):
    client = ComfyClient(fake.url, job_timeout=0.5, poll_interval=0.2)
    ref = client.upload_image(picture, "in.png")
    fake.latency = 3.0
    start = time.monotonic()
    with pytest.raises(ComfyTimeout):
        client.run(invert_graph(ref))
    assert time.monotonic() - start < 2.0
    assert fake.running is None and fake.history == {}
    client.close()


def test_a_server_dying_while_sending_an_image_is_unavailable_then_recovers(fake, client, picture):
    ref = client.upload_image(picture, "in.png")
    fake.truncate_next_view = 1             # half the PNG, then the connection drops
    with pytest.raises(ComfyUnavailable, match="broke off"):
        client.run(invert_graph(ref))
    images = client.run(invert_graph(ref))
    assert np.array_equal(np.asarray(images[0]), np.asarray(_inverted(picture)))


@pytest.mark.parametrize("fault", ["huge", "corrupt"])
@pytest.mark.parametrize("output", ["SaveImage", "SaveImageWebsocket"])
def test_bad_output_images_fail_cleanly(fake, client, picture, fault, output):
    ref = client.upload_image(picture, "in.png")
    fake.output_fault = fault
    with pytest.raises(ExecutionFailed, match="output image"):
        client.run(invert_graph(ref, output))


def test_close_interrupts_a_job_in_flight(fake, client, picture):
    ref = client.upload_image(picture, "in.png")
    fake.latency = 5.0
    errors = []
    worker = threading.Thread(target=lambda: _catch(errors, client.run, invert_graph(ref)))
    worker.start()
    time.sleep(0.3)
    client.close()
    worker.join(timeout=3)
    assert not worker.is_alive() and isinstance(errors[0], Interrupted)


def test_interrupt_from_the_ui_raises_interrupted(fake, client, picture):
    ref = client.upload_image(picture, "in.png")
    fake.latency = 2.0
    threading.Timer(0.3, lambda: setattr(fake, "interrupt_requested", True)).start()
    with pytest.raises(Interrupted):
        client.run(invert_graph(ref))
    assert fake.history == {}


def test_interrupt_leaves_other_clients_prompts_alone(fake, client, picture):
    other = ComfyClient(fake.url, poll_interval=0.3)
    ref = client.upload_image(picture, "in.png")
    fake.latency = 0.6
    results = []
    worker = threading.Thread(target=lambda: results.append(other.run(invert_graph(ref))))
    worker.start()
    time.sleep(0.2)
    client.interrupt("not-our-prompt")
    worker.join(timeout=5)
    assert len(results) == 1
    other.close()


def test_two_clients_on_one_server_each_get_their_own_result(fake, picture):
    a, b = ComfyClient(fake.url, poll_interval=0.3), ComfyClient(fake.url, poll_interval=0.3)
    ref = a.upload_image(picture, "in.png")
    graph_b = {"1": {"class_type": "LoadImage", "inputs": {"image": ref}},
               "3": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}}}
    fake.latency = 0.2
    out = {}
    threads = [threading.Thread(target=lambda: out.setdefault("a", a.run(invert_graph(ref, "SaveImageWebsocket")))),
               threading.Thread(target=lambda: out.setdefault("b", b.run(graph_b)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert np.array_equal(np.asarray(out["a"][0]), np.asarray(_inverted(picture)))
    assert np.array_equal(np.asarray(out["b"][0]), np.asarray(picture))
    a.close(), b.close()


def test_sampler_previews_are_not_taken_for_the_result(fake, client, picture):
    ref = client.upload_image(picture, "in.png")
    graph = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
             "10": {"class_type": "LoadImage", "inputs": {"image": ref}},
             "11": {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}},
             "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "x", "clip": ["4", 1]}},
             "3": {"class_type": "KSampler", "inputs": {
                 "seed": 9, "steps": 3, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 0.5,
                 "model": ["4", 0], "positive": ["6", 0], "negative": ["6", 0], "latent_image": ["11", 0]}},
             "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
             "9": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["8", 0]}}}
    images = client.run(graph)
    assert len(images) == 1
    assert np.array_equal(np.asarray(images[0]), fake_sample(picture, 9, 0.5))


def test_discover_finds_the_server_from_a_hint(fake):
    assert discover(fake.url) == fake.url


def test_dropped_socket_reconnects_and_finishes_the_job(fake, client, picture):
    ref = client.upload_image(picture, "in.png")
    fake.latency = 0.8
    threading.Timer(0.3, fake.drop_sockets).start()
    images = client.run(invert_graph(ref, "SaveImage"))
    assert np.array_equal(np.asarray(images[0]), np.asarray(_inverted(picture)))


def test_injected_validation_fault_is_rejected_then_clears(fake, client, picture):
    ref = client.upload_image(picture, "in.png")
    fake.fail_next_validation = 1
    with pytest.raises(WorkflowRejected, match="injected"):
        client.run(invert_graph(ref))
    assert len(client.run(invert_graph(ref))) == 1


def test_history_race_is_survived(fake, client, picture):
    fake.history_delay = 0.3
    ref = client.upload_image(picture, "in.png")
    assert len(client.run(invert_graph(ref))) == 1


def test_server_restart_between_jobs_does_not_lose_websocket_images(fake, client, picture):
    ref = client.upload_image(picture, "in.png")
    assert len(client.run(invert_graph(ref, "SaveImageWebsocket"))) == 1
    fake.restart()
    assert len(client.run(invert_graph(ref, "SaveImageWebsocket"))) == 1


def test_one_client_keeps_at_most_one_job_in_flight(fake, client, picture):
    ref = client.upload_image(picture, "in.png")
    fake.latency = 0.2
    results = []
    threads = [threading.Thread(target=lambda: results.append(client.run(invert_graph(ref)))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(results) == 3 and fake.peak_queue == 1


@pytest.mark.parametrize("output", ["SaveImageWebsocket", "SaveImage"])
def test_websocket_lagging_behind_history_still_delivers_the_image(fake, client, picture, output):
    """A fresh real ComfyUI sends WebSocket messages up to ~1 s after /history says done: the
    SaveImageWebsocket frame is still on its way when a poll finds the job finished."""
    ref = client.upload_image(picture, "in.png")
    fake.ws_lag = 1.0
    images = client.run(invert_graph(ref, output))
    assert np.array_equal(np.asarray(images[0]), np.asarray(_inverted(picture)))


def test_a_failed_job_is_reported_without_waiting_for_lagging_frames(fake, client, picture):
    ref = client.upload_image(picture, "in.png")
    fake.ws_lag, fake.fail_next_execution = 3.0, 1
    start = time.monotonic()
    with pytest.raises(ExecutionFailed):
        client.run(invert_graph(ref, "SaveImageWebsocket"))
    assert time.monotonic() - start < 1.8      # history said "error": no grace spent on frames


def test_interrupt_drops_our_pending_prompt_and_leaves_the_running_one_alone(fake, client, picture):
    ref = client.upload_image(picture, "in.png")
    fake.latency = 1.0
    http = requests.Session()
    http.trust_env = False
    running = http.post(fake.url + "/prompt", json={"prompt": invert_graph(ref)}).json()["prompt_id"]
    deadline = time.monotonic() + 5
    while client.queue_ids()[0] != [running]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    ours = http.post(fake.url + "/prompt", json={"prompt": invert_graph(ref, "PreviewImage")}).json()["prompt_id"]
    assert client.queue_ids() == ([running], [ours])
    client.interrupt(ours)
    assert client.queue_ids() == ([running], [])
    deadline = time.monotonic() + 5
    while running not in fake.history:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert fake.history[running]["status"]["status_str"] == "success" and ours not in fake.history
    http.close()


def test_a_rejection_echoing_a_node_class_with_a_lone_surrogate_and_a_newline_is_safe_to_log(client):
    graph = {"1": {"class_type": "Bad\udcffNode\nFORGED LOG LINE", "inputs": {}}}
    with pytest.raises(WorkflowRejected) as info:
        client.run(graph)
    text = str(info.value)
    text.encode("utf-8")
    assert "Bad\\udcffNode" in text and "\nFORGED" not in text
