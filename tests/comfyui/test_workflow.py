"""Workflow loading, role finding and patching (no server needed)."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.comfyui.workflow import Workflow, WorkflowError, load_workflow, parse_workflow

IMG2IMG = load_workflow("builtin:img2img")


def _user_graph() -> dict:
    """An exported API-format img2img graph without titles (roles found by inference)."""
    graph = IMG2IMG.graph
    for node in graph.values():
        node.pop("_meta", None)
    return graph


def test_builtin_img2img_has_every_role():
    assert IMG2IMG.roles == {"image": "10", "positive": "6", "negative": "7", "sampler": "3", "seed": "3",
                             "denoise": "3", "checkpoint": "4", "output": "9"}


def test_builtin_txt2img_uses_an_empty_latent_and_has_no_image():
    wf = load_workflow("builtin:txt2img")
    assert wf.roles["size"] == "5" and "image" not in wf.roles
    assert wf.graph["5"]["class_type"] == "EmptyLatentImage"


def test_roles_are_inferred_from_an_untitled_graph():
    wf = parse_workflow(_user_graph())
    assert wf.roles == IMG2IMG.roles


def test_positive_and_negative_follow_links_through_other_nodes():
    graph = _user_graph()
    graph["20"] = {"class_type": "ConditioningSetArea", "inputs": {"conditioning": ["7", 0], "width": 64}}
    graph["3"]["inputs"]["negative"] = ["20", 0]
    wf = parse_workflow(graph)
    assert wf.roles["negative"] == "7" and wf.roles["positive"] == "6"


def _negative_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "negative" in r.getMessage()]


def test_a_negative_made_by_zeroing_the_positive_never_overwrites_the_positive(caplog):
    graph = _user_graph()
    del graph["7"]
    graph["20"] = {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["6", 0]}}
    graph["3"]["inputs"]["negative"] = ["20", 0]
    with caplog.at_level("WARNING", logger="backend.comfyui.roles"):
        wf = parse_workflow(graph)
    assert wf.roles["positive"] == "6" and "negative" not in wf.roles
    patched = wf.patch(positive="a sunny meadow", negative="blurry")
    assert patched["6"]["inputs"]["text"] == "a sunny meadow"
    warned, = _negative_warnings(caplog)
    assert "ConditioningZeroOut" in warned and "not applied" in warned


@pytest.mark.parametrize("node_ids", [None, {"positive": "6", "negative": "6"}])
def test_a_sampler_fed_by_one_encoder_twice_keeps_the_positive_prompt(node_ids, caplog):
    graph = _user_graph()
    del graph["7"]
    graph["3"]["inputs"]["negative"] = ["6", 0]
    with caplog.at_level("WARNING", logger="backend.comfyui.roles"):
        wf = parse_workflow(graph, node_ids=node_ids)
    assert wf.roles["positive"] == "6" and "negative" not in wf.roles
    assert wf.patch(positive="a sunny meadow", negative="blurry")["6"]["inputs"]["text"] == "a sunny meadow"
    warned, = _negative_warnings(caplog)
    assert "node 6 (CLIPTextEncode)" in warned and "comfyui.node_ids.negative" in warned


def test_sdxl_text_encoders_get_the_prompt_in_both_text_inputs():
    graph = _user_graph()
    for node_id in ("6", "7"):
        graph[node_id] = {"class_type": "CLIPTextEncodeSDXL",
                          "inputs": {"clip": ["4", 1], "text_g": "old", "text_l": "old", "width": 1024,
                                     "height": 1024, "crop_w": 0, "crop_h": 0, "target_width": 1024,
                                     "target_height": 1024}}
    wf = parse_workflow(graph)
    assert (wf.roles["positive"], wf.roles["negative"]) == ("6", "7")
    patched = wf.patch(positive="a sunny meadow", negative="blurry")
    assert (patched["6"]["inputs"]["text_g"], patched["6"]["inputs"]["text_l"]) == ("a sunny meadow",) * 2
    assert (patched["7"]["inputs"]["text_g"], patched["7"]["inputs"]["text_l"]) == ("blurry",) * 2


def test_a_text_encoder_without_a_known_text_input_is_refused_with_what_to_do():
    graph = _user_graph()
    graph["6"] = {"class_type": "CLIPTextEncodeHunyuanDiT", "inputs": {"clip": ["4", 1], "bert": "a", "mt5xl": "b"}}
    with pytest.raises(WorkflowError, match=r"node 6 \(CLIPTextEncodeHunyuanDiT\).*comfyui.node_ids.positive"):
        parse_workflow(graph)


def test_titles_beat_inference():
    graph = _user_graph()
    graph["12"] = {"class_type": "LoadImage", "inputs": {"image": "mask.png"}}
    graph["10"]["_meta"] = {"title": "Reverie Image"}
    assert parse_workflow(graph).roles["image"] == "10"


def test_explicit_node_ids_beat_titles():
    graph = _user_graph()
    graph["12"] = {"class_type": "LoadImage", "inputs": {"image": "mask.png"}}
    assert parse_workflow(graph, node_ids={"image": 12}).roles["image"] == "12"


@pytest.mark.parametrize("extra, role", [
    ({"12": {"class_type": "LoadImage", "inputs": {"image": "b.png"}}}, "image"),
    ({"13": {"class_type": "KSampler", "inputs": {"seed": 1, "denoise": 1.0}}}, "sampler"),
    ({"14": {"class_type": "SaveImage", "inputs": {"images": ["8", 0]}},
      "15": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}}, "output"),
])
def test_ambiguity_is_an_error_naming_the_candidates(extra, role):
    graph = _user_graph()
    if role == "output":
        graph["9"]["class_type"] = "SaveImage"
    graph.update(copy.deepcopy(extra))
    with pytest.raises(WorkflowError) as info:
        parse_workflow(graph)
    message = str(info.value)
    assert f"node_ids.{role}" in message
    for node_id in extra:
        assert f"node {node_id} (" in message


def test_websocket_output_is_preferred_among_several_outputs():
    graph = _user_graph()
    graph["14"] = {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "x"}}
    assert parse_workflow(graph).roles["output"] == "9"


@pytest.mark.parametrize("data, needle", [
    ({"nodes": [], "links": [], "version": 0.4}, r"Export \(API\)"),
    ({"last_node_id": 9, "last_link_id": 9, "nodes": [], "links": []}, r"Export \(API\)"),
    ({"id": "4b1c0a52", "revision": 0, "last_node_id": 9, "nodes": [], "links": []}, r"Export \(API\)"),
    ({"prompt": {"nodes": [{"id": 1, "type": "LoadImage"}], "links": []}}, r"Export \(API\)"),
    ([], "JSON object"),
    ({}, "JSON object"),
    ("text", "JSON object"),
    ({"1": {"inputs": {}}}, "class_type"),
    ({"1": {"class_type": "LoadImage", "inputs": []}}, "inputs"),
    ({"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}}}, "no image output"),
])
def test_unusable_workflows_are_explained(data, needle):
    with pytest.raises(WorkflowError, match=needle):
        parse_workflow(data)


@pytest.mark.parametrize("node_ids, needle", [
    ({"colour": "3"}, "unknown role"),
    ({"image": "99"}, "no node '99'"),
    ({"positive": "3"}, "no text input"),
])
def test_bad_node_ids_are_explained(node_ids, needle):
    with pytest.raises(WorkflowError, match=needle):
        parse_workflow(_user_graph(), node_ids=node_ids)


def test_load_workflow_reports_missing_and_broken_files(tmp_path):
    with pytest.raises(WorkflowError, match="cannot read"):
        load_workflow(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(WorkflowError, match="not valid JSON"):
        load_workflow(bad)


@pytest.mark.parametrize("depth", [100_000, 900], ids=["too-deep-to-decode", "too-deep-to-copy"])
def test_load_workflow_says_a_deeply_nested_file_is_nested_too_deeply(tmp_path, depth):
    """Not a RecursionError traceback: json.loads and copy.deepcopy both recurse per level."""
    graph = _user_graph()
    graph["3"]["inputs"]["deep"] = "@"
    path = tmp_path / "deep.json"
    path.write_text(json.dumps(graph).replace('"@"', "[" * depth + "]" * depth))
    with pytest.raises(WorkflowError, match="nested too deeply"):
        load_workflow(path)


def test_load_workflow_reads_a_saved_prompt_body(tmp_path):
    path = tmp_path / "body.json"
    path.write_text(json.dumps({"prompt": _user_graph(), "client_id": "x"}))
    assert load_workflow(path).roles["sampler"] == "3"


def test_patch_sets_every_role_and_leaves_the_template_alone():
    before = IMG2IMG.graph
    graph = IMG2IMG.patch(image="reverie/k.png", positive="sky", negative="", seed=2 ** 64 - 1, denoise=0.3,
                          steps=5, cfg=4.5, sampler="dpmpp_2m", scheduler="karras", checkpoint="m.safetensors")
    assert graph["10"]["inputs"]["image"] == "reverie/k.png"
    assert graph["6"]["inputs"]["text"] == "sky" and graph["7"]["inputs"]["text"] == ""
    ks = graph["3"]["inputs"]
    assert (ks["seed"], ks["denoise"], ks["steps"], ks["cfg"], ks["sampler_name"], ks["scheduler"]) == \
        (2 ** 64 - 1, 0.3, 5, 4.5, "dpmpp_2m", "karras")
    assert graph["4"]["inputs"]["ckpt_name"] == "m.safetensors"
    assert IMG2IMG.graph == before


def test_patch_sets_size_on_txt2img():
    graph = load_workflow("builtin:txt2img").patch(width=64, height=48)
    assert (graph["5"]["inputs"]["width"], graph["5"]["inputs"]["height"]) == (64, 48)


@pytest.mark.parametrize("kwargs", [
    {"seed": -1}, {"seed": 2 ** 64}, {"seed": 1.5}, {"seed": True}, {"denoise": 1.01}, {"denoise": -0.1},
    {"denoise": float("nan")}, {"denoise": "0.5"}, {"steps": 0}, {"cfg": 101}, {"width": 100}, {"height": 0},
    {"image": ""}, {"sampler": ""}, {"positive": 3}, {"checkpoint": 7},
])
def test_patch_rejects_invalid_values(kwargs):
    with pytest.raises(WorkflowError):
        IMG2IMG.patch(**kwargs)


def test_patch_with_an_image_needs_a_load_image_node():
    with pytest.raises(WorkflowError, match="LoadImage"):
        load_workflow("builtin:txt2img").patch(image="x.png")


def test_output_swaps_between_websocket_and_save_image():
    saved = IMG2IMG.with_save_output()
    assert saved.graph["9"] == {"class_type": "SaveImage", "inputs": {"images": ["8", 0],
                                "filename_prefix": "reverie/keyframe"}, "_meta": {"title": "Reverie Output"}}
    back = saved.with_websocket_output()
    assert back.graph["9"]["class_type"] == "SaveImageWebsocket" and "filename_prefix" not in back.graph["9"]["inputs"]
    assert IMG2IMG.output_class == "SaveImageWebsocket"


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
                     max_leaves=20)
_nodes = st.dictionaries(
    st.sampled_from(["1", "2", "3", "4"]),
    st.fixed_dictionaries({"class_type": st.sampled_from(["LoadImage", "KSampler", "SaveImage", "CLIPTextEncode",
                                                          "SaveImageWebsocket", "X"]),
                           "inputs": st.dictionaries(st.sampled_from(["image", "seed", "text", "images", "positive",
                                                                      "denoise", "ckpt_name"]),
                                                     _json | st.tuples(st.sampled_from(["1", "2", "3", "9"]),
                                                                       st.integers(0, 2)).map(list), max_size=4)}),
    max_size=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_json | _nodes, node_ids=st.none() | st.dictionaries(st.sampled_from(["image", "sampler", "x"]),
                                                                  st.sampled_from(["1", "2", 3]), max_size=2))
def test_any_json_gives_a_workflow_or_a_workflow_error(data, node_ids):
    try:
        wf = parse_workflow(data, node_ids=node_ids)
    except WorkflowError:
        return
    assert isinstance(wf, Workflow) and wf.output_node in wf.graph
    wf.patch(seed=1, positive="p")
