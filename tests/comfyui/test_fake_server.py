"""The fake server against the recorded traffic of a real ComfyUI 0.3.75 (shared/comfyui/transcripts.json).

These keep the test double honest: same event sequences, same error bodies, same quirks.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from pathlib import Path

import pytest
import requests
import websocket
from PIL import Image

from tests.comfyui.conftest import invert_graph
from tests.fake_comfyui import FakeComfyUI

TRANSCRIPTS = Path(__file__).resolve().parents[3] / "shared" / "comfyui" / "transcripts.json"


@pytest.fixture(scope="module")
def recorded() -> dict:
    if not TRANSCRIPTS.is_file():
        pytest.skip(f"recorded ComfyUI traffic not found at {TRANSCRIPTS} (it ships beside the repo in ../shared)")
    return json.loads(TRANSCRIPTS.read_text())


@pytest.fixture
def http(fake):
    session = requests.Session()
    session.trust_env = False
    yield session
    session.close()


def _upload(http, fake, name="frame.png", color=(10, 20, 30), **data) -> dict:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buf, "PNG")
    return http.post(fake.url + "/upload/image", files={"image": (name, buf.getvalue(), "image/png")}, data=data).json()


def _run_and_record(http, fake, graph: dict) -> list:
    """Queue with a fresh clientId and return ('type', data) / ('binary', bytes) until executing null."""
    cid = uuid.uuid4().hex
    ws = websocket.create_connection(f"ws://127.0.0.1:{fake.port}/ws?clientId={cid}", timeout=5)
    seen = [("status", json.loads(ws.recv())["data"])]
    resp = http.post(fake.url + "/prompt", json={"prompt": graph, "client_id": cid}).json()
    while True:
        msg = ws.recv()
        if isinstance(msg, bytes):
            seen.append(("binary", msg))
            continue
        msg = json.loads(msg)
        seen.append((msg["type"], msg["data"]))
        if msg["type"] == "executing" and msg["data"]["node"] is None and msg["data"]["prompt_id"] == resp["prompt_id"]:
            ws.close()
            return seen


def _recorded_types(scenario: dict) -> list[str]:
    return [m["text"]["type"] if "text" in m else "binary" for m in scenario["ws"]]


@pytest.mark.parametrize("scenario, output", [("success_saveimage", "SaveImage"),
                                              ("success_previewimage", "PreviewImage")])
def test_event_sequence_matches_the_recording(recorded, http, fake, scenario, output):
    _upload(http, fake)
    seen = _run_and_record(http, fake, invert_graph("frame.png", output))
    assert [kind for kind, _ in seen] == _recorded_types(recorded["scenarios"][scenario])
    assert seen[0][1]["sid"]


def test_cached_rerun_matches_the_recording(recorded, http, fake):
    _upload(http, fake)
    first = _run_and_record(http, fake, invert_graph("frame.png"))
    again = _run_and_record(http, fake, invert_graph("frame.png"))
    assert [k for k, _ in again] == _recorded_types(recorded["scenarios"]["success_rerun_cached"])
    executed = [d["output"] for k, d in first + again if k == "executed"]
    assert executed[0] == executed[1] and fake.file_counts()["output"] == 1


def test_websocket_output_sequence_matches_the_recording(recorded, http, fake):
    _upload(http, fake)
    _run_and_record(http, fake, invert_graph("frame.png", "SaveImageWebsocket"))       # warms the cache for 1, 2
    seen = _run_and_record(http, fake, invert_graph("frame.png", "SaveImageWebsocket"))
    assert [k for k, _ in seen] == _recorded_types(recorded["scenarios"]["success_saveimagewebsocket_legacy"])
    frame = next(d for k, d in seen if k == "binary")
    assert frame[:8] == b"\x00\x00\x00\x01\x00\x00\x00\x02" and frame[8:12] == b"\x89PNG"


def test_events_go_only_to_the_matching_client(http, fake):
    _upload(http, fake)
    bystander = websocket.create_connection(f"ws://127.0.0.1:{fake.port}/ws?clientId=other", timeout=5)
    bystander.recv()
    _run_and_record(http, fake, invert_graph("frame.png"))
    bystander.settimeout(0.2)
    kinds = []
    try:
        while True:
            kinds.append(json.loads(bystander.recv())["type"])
    except websocket.WebSocketTimeoutException:
        pass
    bystander.close()
    assert set(kinds) <= {"status"} and kinds


def test_history_is_written_after_execution_success(http, fake):
    fake.history_delay = 0.3
    _upload(http, fake)
    cid = uuid.uuid4().hex
    ws = websocket.create_connection(f"ws://127.0.0.1:{fake.port}/ws?clientId={cid}", timeout=5)
    pid = http.post(fake.url + "/prompt", json={"prompt": invert_graph("frame.png"), "client_id": cid}).json()["prompt_id"]
    while json.loads(ws.recv())["type"] != "execution_success":
        pass
    assert http.get(f"{fake.url}/history/{pid}").json() == {}
    while True:
        msg = json.loads(ws.recv())
        if msg["type"] == "executing" and msg["data"]["node"] is None:
            break
    assert pid in http.get(f"{fake.url}/history/{pid}").json()
    ws.close()


def _invalid_graphs() -> dict:
    def graph(**changes):
        g = invert_graph("frame.png")
        g["3"]["inputs"]["filename_prefix"] = "keyframe"
        for fn in changes.values():
            fn(g)
        return g
    return {
        "invalid_missing_image": graph(a=lambda g: g["1"]["inputs"].update(image="does_not_exist.png")),
        "invalid_unknown_class": graph(a=lambda g: g["1"].update(class_type="ETN_LoadImageBase64")),
        "invalid_no_outputs": graph(a=lambda g: g.pop("3")),
        "invalid_missing_class_type": graph(a=lambda g: g["1"].pop("class_type")),
        "invalid_bad_link": graph(a=lambda g: g["3"]["inputs"].update(images=["1"])),
        "invalid_missing_required_input": graph(a=lambda g: g["3"]["inputs"].pop("images")),
        "invalid_type_mismatch": graph(a=lambda g: g["3"]["inputs"].update(images=["1", 1])),
    }


@pytest.mark.parametrize("scenario", sorted(_invalid_graphs()))
def test_validation_bodies_match_the_recording(recorded, http, fake, scenario):
    _upload(http, fake)
    resp = http.post(fake.url + "/prompt", json={"prompt": _invalid_graphs()[scenario], "client_id": "x"})
    expected = recorded["scenarios"][scenario]["post_prompt_response"]
    assert resp.status_code == expected["status"]
    assert resp.json() == expected["json"]


def test_bad_checkpoint_and_denoise_match_the_recording(recorded, tmp_path):
    scenario = recorded["scenarios"]["invalid_img2img_no_ckpt_and_bad_denoise"]
    graph = json.loads(json.dumps(_SD15))
    graph["10"]["inputs"]["image"] = "frame.png"
    graph["3"]["inputs"]["denoise"] = 1.5
    with FakeComfyUI(root=tmp_path, checkpoints=[]) as fake:
        _upload(requests, fake)
        body = requests.post(fake.url + "/prompt", json={"prompt": graph}).json()
    for node in (body, scenario["post_prompt_response"]["json"]):
        for entry in node["node_errors"].values():
            for err in entry["errors"]:
                err["extra_info"].pop("input_config")
    assert body == scenario["post_prompt_response"]["json"]


@pytest.mark.parametrize("name, body, status, text", [
    ("extra_ui_format_as_prompt", {"prompt": {"last_node_id": 9, "nodes": [], "links": []}}, 500, True),
    ("post_prompt_no_prompt_key", {"client_id": "x"}, 400, False),
    ("extra_prompt_is_list", {"prompt": []}, 400, False),
])
def test_odd_prompt_bodies_match_the_recording(recorded, http, fake, name, body, status, text):
    resp = http.post(fake.url + "/prompt", json=body)
    expected = recorded["http"][name]
    assert resp.status_code == expected["status"] == status
    assert (resp.text == expected["text"]) if text else (resp.json() == expected["json"])


@pytest.mark.parametrize("prompt, status, details", [
    ({"nodes": [{"id": 1, "type": "LoadImage"}], "links": []}, 400, "Node ID '#nodes'"),
    ({"id": "4b1c0a52-uuid", "revision": 0, "last_node_id": 9}, 400, "Node ID '#id'"),
    ({"1": "LoadImage"}, 400, "Node ID '#1'"),
    ({"last_node_id": 9, "nodes": []}, 500, None),
    ({"1": None}, 500, None),
    ({"1": "class_type"}, 500, None),
    ({"1": {"class_type": ["LoadImage"]}}, 500, None),
    ([{"class_type": "LoadImage"}], 500, None),
    ("x", 500, None),
], ids=["ui-nodes-first", "ui-string-id-first", "string-node", "ui-scalar-first", "null-node",
        "string-holding-class_type", "unhashable-class_type", "non-empty-list", "string"])
def test_a_graph_value_that_is_no_node_gets_the_real_servers_answer(http, fake, prompt, status, details):
    """ComfyUI tests `'class_type' not in prompt[x]`: lists and strings fail that test (400),
    numbers and null make it raise (500 text/plain), as does indexing a string or hashing a list."""
    resp = http.post(fake.url + "/prompt", json={"prompt": prompt})
    assert resp.status_code == status
    if details is None:
        assert resp.headers["Content-Type"].startswith("text/plain")
    else:
        error = resp.json()["error"]
        assert (error["type"], error["details"]) == ("invalid_prompt", details)
        assert error["message"] == "Cannot execute because a node is missing the class_type property."


def test_partly_valid_graph_is_answered_200_with_node_errors(recorded, http, fake):
    _upload(http, fake)
    graph = invert_graph("frame.png")
    graph["9"] = {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}
    body = http.post(fake.url + "/prompt", json={"prompt": graph}).json()
    expected = recorded["scenarios"]["partial_valid_200_with_node_errors"]["post_prompt_response"]["json"]
    assert body["node_errors"] == expected["node_errors"]


def test_upload_renames_other_bytes_under_the_same_name(http, fake):
    assert _upload(http, fake)["name"] == "frame.png"
    assert _upload(http, fake)["name"] == "frame.png"
    assert _upload(http, fake, color=(1, 2, 3))["name"] == "frame (1).png"
    assert _upload(http, fake, color=(4, 5, 6), overwrite="true")["name"] == "frame.png"
    assert _upload(http, fake, subfolder="steer") == {"name": "frame.png", "subfolder": "steer", "type": "input"}
    assert http.post(fake.url + "/upload/image", data={"subfolder": "x"}).status_code == 400


@pytest.mark.parametrize("params, status", [
    ({"filename": "nothing.png"}, 404), ({"filename": "../secret.png"}, 400), ({"filename": "/etc/passwd"}, 400),
])
def test_view_refuses_missing_and_escaping_files(http, fake, params, status):
    assert http.get(fake.url + "/view", params=params).status_code == status


def test_routes_are_also_served_under_api_and_origin_mismatch_is_403(http, fake):
    assert http.get(fake.url + "/api/queue").json() == {"queue_running": [], "queue_pending": []}
    assert http.get(fake.url + "/api/system_stats").json()["system"]["comfyui_version"] == "0.3.75"
    assert http.get(fake.url + "/models/checkpoints").json() == ["v1-5-pruned-emaonly.safetensors"]
    forbidden = http.post(fake.url + "/prompt", json={"prompt": {}}, headers={"Origin": "http://evil.example"})
    assert forbidden.status_code == 403 and forbidden.text == ""
    assert http.post(fake.url + "/free", json={"unload_models": True}).status_code == 200


_SD15 = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
    "10": {"class_type": "LoadImage", "inputs": {"image": "frame.png"}},
    "11": {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "b", "clip": ["4", 1]}},
    "3": {"class_type": "KSampler", "inputs": {"seed": 42, "steps": 20, "cfg": 7.0, "sampler_name": "euler",
          "scheduler": "normal", "denoise": 0.55, "model": ["4", 0], "positive": ["6", 0],
          "negative": ["7", 0], "latent_image": ["11", 0]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "reverie/keyframe", "images": ["8", 0]}},
}


def test_prompt_without_client_id_broadcasts_only_status_and_progress_state(recorded, http, fake):
    _upload(http, fake)
    _run_and_record(http, fake, invert_graph("frame.png"))                 # nodes 1, 2 now cached
    graph = invert_graph("frame.png")
    graph["3"]["inputs"]["filename_prefix"] = "noclient"
    bystander = websocket.create_connection(f"ws://127.0.0.1:{fake.port}/ws?clientId=other", timeout=5)
    kinds = [json.loads(bystander.recv())["type"]]
    http.post(fake.url + "/prompt", json={"prompt": graph})
    bystander.settimeout(0.3)
    try:
        while True:
            kinds.append(json.loads(bystander.recv())["type"])
    except websocket.WebSocketTimeoutException:
        pass
    bystander.close()
    assert kinds == _recorded_types(recorded["scenarios"]["success_no_client_id"])


def test_feature_flags_switch_image_frames_to_type_4_with_metadata(http, fake):
    _upload(http, fake)
    cid = uuid.uuid4().hex
    ws = websocket.create_connection(f"ws://127.0.0.1:{fake.port}/ws?clientId={cid}", timeout=5)
    ws.recv()
    ws.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
    assert json.loads(ws.recv())["data"]["supports_preview_metadata"] is True
    pid = http.post(fake.url + "/prompt", json={"prompt": invert_graph("frame.png", "SaveImageWebsocket"),
                                                "client_id": cid}).json()["prompt_id"]
    while not isinstance(frame := ws.recv(), bytes):
        pass
    ws.close()
    size = int.from_bytes(frame[4:8], "big")
    meta = json.loads(frame[8:8 + size])
    assert frame[:4] == b"\x00\x00\x00\x04" and meta["prompt_id"] == pid and meta["node_id"] == "3"
    assert frame[8 + size:8 + size + 4] == b"\x89PNG"


def test_reconnecting_mid_run_resumes_with_executing_without_prompt_id(http, fake):
    _upload(http, fake)
    fake.latency = 0.6
    cid = uuid.uuid4().hex
    ws = websocket.create_connection(f"ws://127.0.0.1:{fake.port}/ws?clientId={cid}", timeout=5)
    http.post(fake.url + "/prompt", json={"prompt": invert_graph("frame.png"), "client_id": cid})
    while json.loads(ws.recv())["type"] != "executing":
        pass
    ws.close()
    again = websocket.create_connection(f"ws://127.0.0.1:{fake.port}/ws?clientId={cid}", timeout=5)
    assert json.loads(again.recv())["data"]["sid"] == cid
    assert json.loads(again.recv()) == {"type": "executing", "data": {"node": "1"}}
    again.close()


def test_kill_mid_run_drops_sockets_and_forgets_the_job(http, fake):
    _upload(http, fake)
    fake.latency, fake.kill_mid_run = 0.5, True
    cid = uuid.uuid4().hex
    ws = websocket.create_connection(f"ws://127.0.0.1:{fake.port}/ws?clientId={cid}", timeout=5)
    pid = http.post(fake.url + "/prompt", json={"prompt": invert_graph("frame.png"), "client_id": cid}).json()["prompt_id"]
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        while True:
            ws.recv()
    time.sleep(fake.restart_delay + 0.2)
    assert http.get(f"{fake.url}/history/{pid}").json() == {}
    assert http.get(fake.url + "/queue").json() == {"queue_running": [], "queue_pending": []}


def test_ws_lag_delivers_the_whole_sequence_in_order_after_history_is_written(recorded, http, fake):
    _upload(http, fake)
    graph = invert_graph("frame.png", "SaveImageWebsocket")
    _run_and_record(http, fake, graph)                          # warms the cache, like the recording
    fake.ws_lag = 0.6
    cid = uuid.uuid4().hex
    ws = websocket.create_connection(f"ws://127.0.0.1:{fake.port}/ws?clientId={cid}", timeout=5)
    ws.recv()                                                   # the greeting is not delayed
    pid = http.post(fake.url + "/prompt", json={"prompt": graph, "client_id": cid}).json()["prompt_id"]
    deadline = time.monotonic() + 5
    while pid not in http.get(f"{fake.url}/history/{pid}").json():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    ws.settimeout(0.2)
    with pytest.raises(websocket.WebSocketTimeoutException):
        ws.recv()                                               # history is done, the socket still quiet
    ws.settimeout(5)
    seen = []
    while not seen or seen[-1] != ("executing", None):
        msg = ws.recv()
        seen.append(("binary", None) if isinstance(msg, bytes) else
                    (json.loads(msg)["type"], json.loads(msg)["data"].get("node")))
    ws.close()
    scenario = recorded["scenarios"]["success_saveimagewebsocket_legacy"]
    assert [kind for kind, _ in seen] == _recorded_types(scenario)[1:]


def test_restart_drops_messages_still_held_by_ws_lag(http, fake):
    _upload(http, fake)
    fake.ws_lag = 0.5
    http.post(fake.url + "/prompt", json={"prompt": invert_graph("frame.png"), "client_id": "late"})
    time.sleep(0.2)
    fake.restart()
    fake.ws_lag = 0.0
    ws = websocket.create_connection(f"ws://127.0.0.1:{fake.port}/ws?clientId=late", timeout=5)
    assert json.loads(ws.recv())["type"] == "status"
    ws.settimeout(0.8)
    with pytest.raises(websocket.WebSocketTimeoutException):
        ws.recv()
    ws.close()
