"""builtin:img2img_ipadapter through the fake ComfyUI: the reference upload and weight in the
graph, one upload per reference, and the preflight sentences for missing nodes and models."""

from __future__ import annotations

import pytest
from PIL import Image

from backend.comfyui.errors import WorkflowRejected
from backend.comfyui.ipadapter import VIT_H
from backend.comfyui.workflow import load_workflow
from tests.comfyui.conftest import keyframe_generator, record_jobs

SOURCE = "builtin:img2img_ipadapter"
PLUS = "ip-adapter-plus_sd15.safetensors"


def ipadapter_generator(client, **overrides):
    return keyframe_generator(client, img2img=load_workflow(SOURCE), upload_tag="t1", **overrides)


@pytest.fixture
def equipped(fake):
    fake.ipadapter_nodes = True
    fake.model_files = {"ipadapter": [PLUS], "clip_vision": [VIT_H]}
    return fake


def stored(fake, name: str) -> Image.Image:
    with Image.open(fake.root / "input" / name) as im:
        return im.convert("RGB").copy()


def nodes_of(job, cls: str) -> list[dict]:
    return [node for node in job.prompt.values() if node["class_type"] == cls]


def reference_input(job) -> str:
    ipa = nodes_of(job, "IPAdapterAdvanced")[0]
    return job.prompt[ipa["inputs"]["image"][0]]["inputs"]["image"]


def test_the_graph_sent_carries_the_uploaded_reference_and_its_weight(equipped, client, picture):
    jobs = record_jobs(equipped)
    reference = Image.new("RGB", (32, 32), (200, 30, 90))
    ipadapter_generator(client).generate_keyframe(picture, "sky", "", 1, 0.5, reference, 0.7)
    (job,) = jobs
    assert reference_input(job) == "reverie/keyframe_t1_reference.png"
    assert nodes_of(job, "IPAdapterAdvanced")[0]["inputs"]["weight"] == 0.7
    assert stored(equipped, "reverie/keyframe_t1_reference.png").getpixel((3, 3)) == (200, 30, 90)


def test_the_reference_is_uploaded_once_while_it_stays_the_same(equipped, client, picture):
    generator = ipadapter_generator(client)
    reference = Image.new("RGB", (32, 32), (200, 30, 90))
    generator.generate_keyframe(picture, "sky", "", 1, 0.5, reference, 0.7)
    # a marker in the server's copy survives as long as Reverie does not upload the reference again
    Image.new("RGB", (32, 32), (1, 2, 3)).save(equipped.root / "input" / "reverie" / "keyframe_t1_reference.png")
    generator.generate_keyframe(picture, "sky", "", 2, 0.5, reference, 0.7)
    assert stored(equipped, "reverie/keyframe_t1_reference.png").getpixel((0, 0)) == (1, 2, 3)
    generator.generate_keyframe(picture, "sky", "", 3, 0.5, Image.new("RGB", (32, 32), (9, 99, 199)), 0.7)
    assert stored(equipped, "reverie/keyframe_t1_reference.png").getpixel((0, 0)) == (9, 99, 199)


def test_without_a_reference_the_graph_conditions_on_its_input_at_weight_zero(equipped, client, picture):
    jobs = record_jobs(equipped)
    ipadapter_generator(client).generate_keyframe(picture, "sky", "", 1, 0.5)
    (job,) = jobs
    assert reference_input(job) == job.prompt["10"]["inputs"]["image"]
    assert nodes_of(job, "IPAdapterAdvanced")[0]["inputs"]["weight"] == 0.0


def test_an_ordinary_workflow_ignores_the_reference(equipped, client, picture):
    jobs = record_jobs(equipped)
    keyframe_generator(client, upload_tag="t1").generate_keyframe(
        picture, "sky", "", 1, 0.5, Image.new("RGB", (32, 32)), 0.7)
    (job,) = jobs
    assert not nodes_of(job, "IPAdapterAdvanced") and len(nodes_of(job, "LoadImage")) == 1
    assert not (equipped.root / "input" / "reverie" / "keyframe_t1_reference.png").exists()


MISSING_NODES = (f"{SOURCE}: ComfyUI has no IP-Adapter node IPAdapterAdvanced, IPAdapterUnifiedLoader: install "
                 f"the ComfyUI_IPAdapter_plus custom nodes (ComfyUI Manager, or git clone "
                 f"https://github.com/cubiq/ComfyUI_IPAdapter_plus into ComfyUI/custom_nodes) and restart ComfyUI")


def test_preflight_names_the_missing_ipadapter_nodes_and_the_package_that_provides_them(fake, client):
    with pytest.raises(WorkflowRejected) as caught:
        ipadapter_generator(client).preflight()
    assert caught.value.lines == [MISSING_NODES]


def missing_model(folder: str, name: str, has: str = "no files") -> str:
    return (f"{SOURCE}: the IP-Adapter preset 'PLUS (high strength)' needs {name} in ComfyUI's models/{folder} "
            f"folder, which has {has}: download it there (see the ComfyUI_IPAdapter_plus README) and restart ComfyUI")


def test_preflight_names_each_model_file_the_preset_needs_and_the_server_lacks(equipped, client):
    equipped.model_files = {"ipadapter": ["ip-adapter_sd15.safetensors"], "clip_vision": []}   # STANDARD's, not PLUS's
    with pytest.raises(WorkflowRejected) as caught:
        ipadapter_generator(client).preflight()
    assert caught.value.lines == [missing_model("ipadapter", PLUS, "ip-adapter_sd15.safetensors"),
                                  missing_model("clip_vision", VIT_H)]


def test_preflight_reads_the_model_folders_from_object_info_on_a_server_without_models_routes(equipped, client):
    equipped.model_routes = False
    equipped.model_files = {"ipadapter": [PLUS], "clip_vision": []}
    with pytest.raises(WorkflowRejected) as caught:
        ipadapter_generator(client).preflight()
    assert caught.value.lines == [missing_model("clip_vision", VIT_H)]


def test_preflight_passes_when_the_nodes_and_the_preset_models_are_there(equipped, client):
    equipped.model_files = {"ipadapter": ["sd15/IP-Adapter-Plus_SD15.bin"], "clip_vision": ["sd1.5/model.safetensors"]}
    ipadapter_generator(client).preflight()


def test_an_untitled_ipadapter_export_finds_the_reference_loader_through_the_adapters_image_link():
    from backend.comfyui.workflow import parse_workflow

    graph = load_workflow(SOURCE).graph
    for node in graph.values():
        node.pop("_meta", None)
    roles = parse_workflow(graph).roles
    assert (roles["image"], roles["reference"], roles["ipadapter"]) == ("10", "20", "22")


def test_a_reference_weight_outside_the_adapters_range_is_refused():
    from backend.comfyui.workflow import WorkflowError

    with pytest.raises(WorkflowError, match=r"reference_weight must be a number in \[-1.0, 5.0\], got 7"):
        load_workflow(SOURCE).patch(reference="reverie/r.png", reference_weight=7)
