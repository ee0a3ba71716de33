"""builtin:img2img_ipadapter's requirements in `--check` and in the start-up error, and the
dream's reference reaching the generator through ComfyUISource."""

from __future__ import annotations

import pytest
from PIL import Image

from backend.comfyui.ipadapter import VIT_H
from backend.comfyui.workflow import load_workflow
from backend.dream.dream import InputPlan
from tests.comfyui.conftest import comfy_source, keyframe_generator, record_jobs
from tests.fake_comfyui import FakeComfyUI

NODES_SENTENCE = ("builtin:img2img_ipadapter: ComfyUI has no IP-Adapter node IPAdapterAdvanced, "
                  "IPAdapterUnifiedLoader: install the ComfyUI_IPAdapter_plus custom nodes")


def ipadapter_config(server, tmp_path):
    from backend.config import parse_config

    return parse_config({"comfyui": {"url": server.url, "request_timeout": 2, "workflow": "builtin:img2img_ipadapter"},
                         "generation": {"resolution": [64, 64]}}, base_dir=tmp_path)


def test_check_fails_naming_the_missing_ipadapter_nodes(tmp_path, capsys):
    from backend.doctor import Report, check_comfyui

    with FakeComfyUI(root=tmp_path / "server") as server:
        report = Report()
        check_comfyui(report, ipadapter_config(server, tmp_path))
    out = capsys.readouterr().out
    assert report.failed == 1, out
    assert NODES_SENTENCE in out and "ComfyUI accepts the workflows" not in out


def test_check_says_the_ipadapter_needs_are_met_when_nodes_and_models_are_there(tmp_path, capsys):
    from backend.doctor import Report, check_comfyui

    with FakeComfyUI(root=tmp_path / "server") as server:
        server.ipadapter_nodes = True
        server.model_files = {"ipadapter": ["ip-adapter-plus_sd15.safetensors"], "clip_vision": [VIT_H]}
        report = Report()
        check_comfyui(report, ipadapter_config(server, tmp_path))
    out = capsys.readouterr().out
    assert report.failed == 0, out
    assert "[ ok ] the IP-Adapter nodes and the model files for PLUS (high strength) are on the server" in out


def test_the_start_up_error_names_the_missing_preset_model(tmp_path):
    from backend.assembly import UserError, build_source

    with FakeComfyUI(root=tmp_path / "server") as server:
        server.ipadapter_nodes = True
        server.model_files = {"ipadapter": [], "clip_vision": [VIT_H]}
        with pytest.raises(UserError) as caught:
            build_source(ipadapter_config(server, tmp_path))
    message = str(caught.value)
    assert ("the IP-Adapter preset 'PLUS (high strength)' needs ip-adapter-plus_sd15.safetensors in ComfyUI's "
            "models/ipadapter folder, which has no files: download it there") in message
    assert message.endswith("restart ComfyUI.") and "\n" not in message


class ReferenceDream:
    """A dream whose plan carries a reference, like backend.dream.Dream with references set."""

    def __init__(self, reference: Image.Image) -> None:
        self.reference = reference

    def plan_input(self, previous):
        return InputPlan(previous.image, None, False, "", self.reference, 0.55)

    def check_blank(self, image):
        return ""

    def keyframe_made(self, keyframe):
        pass

    def prompt_changed(self):
        pass


def test_the_dreams_reference_and_weight_reach_the_ipadapter_graph(fake, client, picture):
    fake.ipadapter_nodes = True
    fake.model_files = {"ipadapter": ["ip-adapter-plus_sd15.safetensors"], "clip_vision": [VIT_H]}
    jobs = record_jobs(fake)
    generator = keyframe_generator(client, img2img=load_workflow("builtin:img2img_ipadapter"))
    source = comfy_source(client, generator=generator)
    source.dream = ReferenceDream(Image.new("RGB", (32, 32), (10, 200, 40)))
    try:
        source.next_keyframe(picture)
    finally:
        source.close()
    (job,) = jobs
    ipa = next(n for n in job.prompt.values() if n["class_type"] == "IPAdapterAdvanced")
    assert ipa["inputs"]["weight"] == 0.55
    name = job.prompt[ipa["inputs"]["image"][0]]["inputs"]["image"]
    with Image.open(fake.root / "input" / name) as stored:
        assert stored.convert("RGB").getpixel((5, 5)) == (10, 200, 40)
