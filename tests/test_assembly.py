"""build_source's ComfyUI side: it connects only to the configured URL (discovery is a hint in
the log, never a switch) and warns when that URL is plain http to another machine."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from backend.assembly import build_source, warn_if_unencrypted
from backend.config import parse_config
from tests.fake_comfyui import FakeComfyUI


def _free_port(low: int, high: int) -> int:
    for port in range(low, high):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip(f"no free port in 127.0.0.1:{low}..{high}")


def comfy_config(tmp_path, url: str):
    return parse_config({"comfyui": {"url": url, "request_timeout": 1, "job_timeout": 10},
                         "generation": {"resolution": [64, 64]}}, base_dir=tmp_path)


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("url", ["http://192.168.1.20:8188", "http://comfy.lan:8188", "HTTP://10.0.0.5:8188/",
                                 "http://[2001:db8::1]:8188"])
def test_plain_http_to_another_machine_is_warned_about(url, caplog):
    with caplog.at_level(logging.WARNING, logger="backend.assembly"):
        warn_if_unencrypted(url)
    warned, = warnings_of(caplog)
    assert "unencrypted" in warned and "no authentication" in warned and url in warned


@pytest.mark.parametrize("url", ["http://127.0.0.1:8188", "http://127.3.4.5:8000", "http://[::1]:8188",
                                 "http://localhost:8188", "https://comfy.example.com", "https://192.168.1.20:8188"])
def test_loopback_and_https_urls_are_not_warned_about(url, caplog):
    with caplog.at_level(logging.WARNING, logger="backend.assembly"):
        warn_if_unencrypted(url)
    assert warnings_of(caplog) == []


def test_a_configured_comfyui_down_at_start_is_waited_for_even_when_another_server_answers(tmp_path, caplog):
    configured = f"http://127.0.0.1:{_free_port(9100, 9200)}"
    with FakeComfyUI(root=tmp_path / "server", port=_free_port(8000, 8011)):
        with caplog.at_level(logging.WARNING):
            source, client = build_source(comfy_config(tmp_path, configured))
        try:
            assert client.url == configured and source.state == "starting"
        finally:
            source.close()
    hint = [w for w in warnings_of(caplog) if "keeps waiting" in w]
    assert hint and configured in hint[0] and "set comfyui.url" in hint[0]   # found server: only suggested


def test_a_configured_comfyui_that_is_up_is_used_without_warnings(tmp_path, caplog):
    with FakeComfyUI(root=tmp_path / "server") as fake:
        with caplog.at_level(logging.WARNING):
            source, client = build_source(comfy_config(tmp_path, fake.url))
        try:
            assert client.url == fake.url and source.state == "connected"
        finally:
            source.close()
    assert warnings_of(caplog) == []


def test_an_img2img_workflow_without_load_image_is_refused_at_start(tmp_path):
    from backend.assembly import UserError
    workflow = tmp_path / "no_load_image.json"
    workflow.write_text((Path(__file__).parents[1] / "backend" / "comfyui" / "workflows" / "txt2img_sd15.json")
                        .read_text(encoding="utf-8"), encoding="utf-8")
    config = parse_config({"comfyui": {"url": "http://127.0.0.1:9", "workflow": str(workflow)},
                           "generation": {"resolution": [64, 64]}}, base_dir=tmp_path)
    with pytest.raises(UserError) as info:
        build_source(config)
    message = str(info.value)
    assert "no LoadImage node" in message and message.endswith("set comfyui.node_ids.image.") and "\n" not in message


def test_an_old_server_without_the_models_route_starts_without_a_traceback(tmp_path, caplog):
    with FakeComfyUI(root=tmp_path / "server") as fake:
        fake.models_status = 404
        with caplog.at_level(logging.WARNING):
            source, client = build_source(comfy_config(tmp_path, fake.url))
        try:
            assert source.state == "connected"
        finally:
            source.close()
    assert warnings_of(caplog) == []


def test_workflow_vae_is_the_configured_checkpoint_else_the_workflows_own(tmp_path):
    from backend.assembly import workflow_vae

    assert workflow_vae(parse_config({"comfyui": {"checkpoint": "mine.safetensors"}})) == ("mine.safetensors", None)
    assert workflow_vae(parse_config({})) == ("v1-5-pruned-emaonly.safetensors", None)
    assert workflow_vae(parse_config({"keyframes": {"source": "folder", "folder": str(tmp_path)}})) == (None, None)


def test_workflow_vae_names_the_file_of_a_vaeloader_in_the_workflow(tmp_path):
    import json

    from backend.assembly import workflow_vae

    graph = json.loads((Path(__file__).resolve().parent.parent / "backend/comfyui/workflows/img2img_sd15.json").read_text())
    graph["99"] = {"class_type": "VAELoader", "inputs": {"vae_name": "vae-ft-mse-840000.safetensors"}}
    (tmp_path / "wf.json").write_text(json.dumps(graph))
    config = parse_config({"comfyui": {"workflow": "wf.json"}}, base_dir=tmp_path)
    assert workflow_vae(config) == ("v1-5-pruned-emaonly.safetensors", "vae-ft-mse-840000.safetensors")


def test_schedule_settings_carry_every_schedule_value_of_the_config():
    from backend.assembly import schedule_settings

    config = parse_config({
        "generation": {"mode": "img2img", "resolution": [320, 192], "hybrid": {
            "interpolation_frames": 7, "use_vae_interpolation": False, "interpolation_method": "linear",
            "easing": "cosine"}},
        "display": {"fps": 3.5, "show_raw_keyframes": True}, "vae": {"max_batch": 5}})
    settings = schedule_settings(config)
    assert (settings.resolution, settings.mode, settings.interpolation_frames) == ((320, 192), "img2img", 7)
    assert (settings.use_vae_interpolation, settings.interpolation_method, settings.easing) == (False, "linear", "cosine")
    assert (settings.show_raw_keyframes, settings.fps, settings.max_batch) == (True, 3.5, 5)
