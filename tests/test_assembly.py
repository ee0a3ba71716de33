"""build_source's ComfyUI side: it connects only to the configured URL (discovery is a hint in
the log, never a switch) and warns when that URL is plain http to another machine."""

from __future__ import annotations

import logging
import re
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
    assert "unencrypted" in warned and "ComfyUI has no authentication" in warned and url in warned


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
    assert f"Reverie keeps waiting for {configured} (set comfyui.url: http://127.0.0.1:" in hint[0]
    found = re.fullmatch(rf"no ComfyUI at {re.escape(configured)} yet, but one answers at (http://127\.0\.0\.1:\d+); "
                         rf"Reverie keeps waiting for {re.escape(configured)} \(set comfyui\.url: (\S+) to use the "
                         r"other one\)", hint[0])
    assert found and found.group(1) == found.group(2)
    assert f"ComfyUI is not reachable at {configured}; waiting for it (the picture stays up)" in warnings_of(caplog)


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


def test_build_source_passes_every_comfyui_and_keyframe_setting_on(tmp_path):
    from PIL import Image

    Image.new("RGB", (90, 70), "blue").save(tmp_path / "start.png")
    config = parse_config({
        "comfyui": {"url": "http://127.0.0.1:9", "request_timeout": 2.5, "job_timeout": 42,
                    "checkpoint": "mine.safetensors"},
        "keyframes": {"steps": 9, "cfg": 3.5, "sampler": "dpmpp_2m", "scheduler": "karras", "prompt_period": 4,
                      "start_image": "start.png", "seed": {"policy": "increment", "value": 11}},
        "generation": {"resolution": [96, 64], "hybrid": {"keyframe_denoise": 0.3}}}, base_dir=tmp_path)
    source, client = build_source(config)
    try:
        generator = source.generator
        assert source.client is client and client.url == "http://127.0.0.1:9"
        assert (client.request_timeout, client.jobs.job_timeout) == (2.5, 42.0)
        assert generator.client is client and generator.checkpoint == "mine.safetensors"
        assert (generator.steps, generator.cfg, generator.sampler, generator.scheduler) == (9, 3.5, "dpmpp_2m", "karras")
        assert (generator.width, generator.height) == (96, 64)
        assert "image" in generator.img2img.roles and generator.txt2img.roles.get("image") is None
        assert source.start_image.size == (96, 64) and source.denoise == 0.3
        assert (source.seeds.policy, source.rotation.period) == ("increment", 4)
    finally:
        source.close()


def test_build_source_gives_a_folder_source_fitted_to_the_resolution_with_the_start_image_first(tmp_path):
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (50, 50), "red").save(tmp_path / "imgs" / "a.png")
    Image.new("RGB", (30, 90), "green").save(tmp_path / "start.png")
    config = parse_config({"keyframes": {"source": "folder", "folder": "imgs", "start_image": "start.png"},
                           "generation": {"resolution": [96, 64]}}, base_dir=tmp_path)
    source, client = build_source(config)
    first, second = source.next_keyframe(None), source.next_keyframe(None)
    assert client is None and (first.origin, second.origin) == ("start_image", "a.png")
    assert first.image.size == second.image.size == (96, 64)


def test_an_unusable_workflow_file_is_one_user_error_naming_it(tmp_path):
    from backend.assembly import UserError

    (tmp_path / "wf.json").write_text("{not json")
    config = parse_config({"comfyui": {"url": "http://127.0.0.1:9", "workflow": "wf.json"}}, base_dir=tmp_path)
    with pytest.raises(UserError) as info:
        build_source(config)
    assert str(info.value).startswith("The ComfyUI workflow cannot be used: workflow ") and "not valid JSON" in str(info.value)


def two_checkpoint_workflow(tmp_path) -> Path:
    import json

    graph = json.loads((Path(__file__).resolve().parent.parent / "backend/comfyui/workflows/img2img_sd15.json").read_text())
    graph["50"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "other.safetensors"}}
    path = tmp_path / "two.json"
    path.write_text(json.dumps(graph))
    return path


def test_workflow_vae_and_build_source_follow_the_configured_node_ids(tmp_path):
    from backend.assembly import workflow_vae

    workflow = two_checkpoint_workflow(tmp_path)
    config = parse_config({"comfyui": {"url": "http://127.0.0.1:9", "workflow": str(workflow),
                                       "txt2img_workflow": str(workflow), "node_ids": {"checkpoint": "50"}}})
    assert workflow_vae(config) == ("other.safetensors", None)
    source, _ = build_source(config)
    try:
        assert source.generator.img2img.roles["checkpoint"] == "50" == source.generator.txt2img.roles["checkpoint"]
    finally:
        source.close()


def test_build_encoder_is_none_without_a_vae_and_a_user_error_when_weights_are_missing(tmp_path):
    from backend.assembly import UserError, build_encoder, needs_vae

    crossfade = parse_config({"generation": {"hybrid": {"use_vae_interpolation": False}}})
    img2img = parse_config({"generation": {"mode": "img2img"}})
    assert (needs_vae(crossfade), needs_vae(img2img), needs_vae(parse_config({}))) == (False, False, True)
    assert build_encoder(crossfade) is None
    config = parse_config({"vae": {"kind": "tiny", "source": str(tmp_path / "nope_encoder.pth")}})
    with pytest.raises(UserError) as info:
        build_encoder(config)
    assert str(info.value).startswith("Get the tiny VAE (TAESD)") and "does not exist" in str(info.value)


def test_build_encoder_loads_the_configured_tiny_pair(tmp_path):
    import torch

    from backend.assembly import build_encoder
    from backend.interpolation.taesd import build_decoder
    from backend.interpolation.taesd import build_encoder as tiny_encoder

    torch.save(tiny_encoder(4, False).state_dict(), tmp_path / "taesd_encoder.pth")
    torch.save(build_decoder(4, False).state_dict(), tmp_path / "taesd_decoder.pth")
    encoder = build_encoder(parse_config({"vae": {"kind": "tiny", "source": str(tmp_path), "device": "cpu",
                                                  "max_batch": 3}}))
    assert (encoder.kind, encoder.family, encoder.runner.max_batch) == ("tiny", "sd1", 3)


def test_a_vae_file_that_is_not_a_vae_is_a_user_error_saying_to_check_the_vae_section(tmp_path):
    from backend.assembly import UserError, build_encoder

    (tmp_path / "x.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError) as info:
        build_encoder(parse_config({"vae": {"kind": "kl", "source": str(tmp_path / "x.safetensors"), "device": "cpu"}}))
    assert "x.safetensors" in str(info.value)


def test_one_sentence_joins_a_rejection_summary_and_its_lines():
    from backend.assembly import _one_sentence

    class Rejected(Exception):
        summary = "ComfyUI refused the workflow:"
        lines = ["checkpoint x not found", "sampler y unknown"]

    assert _one_sentence(Rejected()) == "ComfyUI refused the workflow: checkpoint x not found; sampler y unknown."
    assert _one_sentence(ValueError("first line.\nsecond")) == "first line."


def test_build_encoder_takes_the_vae_of_the_checkpoint_comfyui_is_told_to_use(tmp_path, monkeypatch):
    from backend.assembly import build_encoder
    from tests.test_doctor import write_checkpoint

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "models" / "checkpoints"
    folder.mkdir(parents=True)
    write_checkpoint(folder / "a_first.safetensors", 1)
    write_checkpoint(folder / "b_used.safetensors", 2)
    encoder = build_encoder(parse_config({"vae": {"kind": "kl", "device": "cpu", "comfyui_dir": str(tmp_path)},
                                          "comfyui": {"checkpoint": "b_used.safetensors"}}))
    assert "b_used.safetensors" in encoder.source and "a_first" not in encoder.source


# -- the dream (contract C3), upload names per instance and several servers (C2) ------------------

NO_VAE = {"generation": {"resolution": [64, 64], "hybrid": {"use_vae_interpolation": False}}}

def test_the_assembly_hands_one_dream_to_the_comfyui_source_and_to_the_daemon(tmp_path):
    from backend.dream.dream import Dream
    from backend.parts import Assembly

    config = parse_config({"comfyui": {"url": "http://127.0.0.1:9", "request_timeout": 1},
                           "dream": {"anchor_every": 5}, **NO_VAE}, base_dir=tmp_path)
    assembly = Assembly(config)
    source, client, encoder = assembly(config)
    try:
        assert isinstance(assembly.dream, Dream) and source.dream is assembly.dream
        assert assembly.dream.settings == config.dream and assembly.dream.steering
        assert assembly.dream._log.path == tmp_path / "output" / "quality.csv"
    finally:
        source.close()


def test_build_parts_without_a_dream_gives_an_unsteered_source(tmp_path):
    from backend.parts import build_parts

    config = parse_config({"comfyui": {"url": "http://127.0.0.1:9", "request_timeout": 1}, **NO_VAE},
                          base_dir=tmp_path)
    source = build_parts(config).source
    try:
        assert source.dream is None
    finally:
        source.close()


def test_a_folder_source_is_measured_into_quality_csv_but_never_steered(tmp_path):
    import numpy as np
    from PIL import Image

    from backend.frames import Keyframe
    from backend.parts import Assembly

    (tmp_path / "imgs").mkdir()
    for name, colour in (("a.png", (200, 40, 40)), ("b.png", (40, 40, 200))):
        Image.new("RGB", (64, 64), colour).save(tmp_path / "imgs" / name)
    config = parse_config({"keyframes": {"source": "folder", "folder": "imgs"},
                           "dream": {"control": True, "references": ["missing.png"]}, **NO_VAE}, base_dir=tmp_path)
    assembly = Assembly(config)   # references steer a ComfyUI loop only: not read for a folder
    dream = assembly.dream
    assert not dream.steering and not dream.settings.control
    dream.update(config.dream)    # a live edit cannot switch steering on either
    assert not dream.settings.control
    source = assembly(config).source
    for i in range(3):
        keyframe = source.next_keyframe(None)
        assert isinstance(keyframe, Keyframe)
        dream.observe(keyframe, np.full((4, 8, 8), float(i), np.float32))
    rows = (tmp_path / "output" / "quality.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 4 and rows[0].startswith("time,keyframe,origin")
    status = dream.status_fields()
    assert status["keyframes"] == 3 and status["control"] is False and status["events"]["collapse"] == 0


def test_bad_reference_images_stop_the_start_with_every_one_named(tmp_path):
    from backend.assembly import UserError
    from backend.parts import Assembly

    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.png").write_text("not a picture", encoding="utf-8")
    config = parse_config({"comfyui": {"url": "http://127.0.0.1:9"},
                           "dream": {"references": ["gone.png", "empty", "notes.png"]}}, base_dir=tmp_path)
    with pytest.raises(UserError) as info:
        Assembly(config)
    message = str(info.value)
    assert message.startswith("Bad reference images (fix or remove them in dream.references): ")
    assert "gone.png: no such file or folder" in message and "empty: the folder has no images" in message
    assert "notes.png: not an image Pillow can read" in message and "\n" not in message


def test_good_reference_images_become_the_dreams_anchors(tmp_path):
    from PIL import Image

    from backend.parts import Assembly

    (tmp_path / "refs").mkdir()
    Image.new("RGB", (32, 32), "orange").save(tmp_path / "refs" / "one.png")
    Image.new("RGB", (32, 32), "teal").save(tmp_path / "refs" / "two.bmp")
    config = parse_config({"comfyui": {"url": "http://127.0.0.1:9"}, "dream": {"references": ["refs"]}},
                          base_dir=tmp_path)
    walk = Assembly(config).dream._walk
    assert [im.getpixel((0, 0)) for im in walk.references] == [(255, 165, 0), (0, 128, 128)]


def test_uploads_are_named_per_output_folder_so_two_daemons_can_share_one_comfyui(tmp_path):
    from backend.desktop.instance_lock import instance_tag

    names = []
    for folder in ("out_a", "out_b"):
        config = parse_config({"comfyui": {"url": "http://127.0.0.1:9", "request_timeout": 1},
                               "display": {"output_dir": folder}}, base_dir=tmp_path)
        source, _client = build_source(config)
        try:
            names.append(source.generator.upload_prefix)
        finally:
            source.close()
        assert names[-1] == f"keyframe_{instance_tag(tmp_path / folder)}_"
    assert names[0] != names[1]


def test_one_url_gets_a_plain_client(tmp_path):
    from backend.assembly import build_client
    from backend.comfyui.client import ComfyClient

    config = parse_config({"comfyui": {"url": ["http://127.0.0.1:9"], "request_timeout": 1.5}}, base_dir=tmp_path)
    client = build_client(config)
    try:
        assert type(client) is ComfyClient and client.url == "http://127.0.0.1:9"
    finally:
        client.close()


def test_several_urls_get_a_failover_client_over_all_of_them_in_order(tmp_path):
    failover = pytest.importorskip("backend.comfyui.failover")
    from backend.assembly import build_client

    urls = ["http://127.0.0.1:9", "http://127.0.0.1:10"]
    config = parse_config({"comfyui": {"url": urls, "request_timeout": 1.5, "job_timeout": 20}}, base_dir=tmp_path)
    client = build_client(config)
    try:
        assert isinstance(client, failover.FailoverClient)
        assert list(client.urls) == urls and client.current_url == urls[0]
    finally:
        client.close()
    source, client = build_source(config)
    try:
        assert source.client is client and source.generator.client is client
        assert isinstance(client, failover.FailoverClient)
    finally:
        source.close()



def test_a_fixed_seed_without_the_anchor_walk_is_warned_about_at_start(tmp_path, caplog):
    from backend.assembly import build_dream

    fixed = {"keyframes": {"seed": {"policy": "fixed"}}}
    with caplog.at_level(logging.WARNING, logger="backend.assembly"):
        build_dream(parse_config({**fixed, "dream": {"anchor_every": 16}}, base_dir=tmp_path))
        assert warnings_of(caplog) == []
        build_dream(parse_config({**fixed, "dream": {"anchor_every": 0}}, base_dir=tmp_path))
    warned, = warnings_of(caplog)
    assert warned.startswith("keyframes.seed.policy is fixed and the anchor walk is off")


# -- exact behaviour the mutation run found untested (issue 11) -------------------------------------

class Preflighting:
    """A keyframe generator whose preflight raises `error` (None: ComfyUI accepts the workflow)."""

    def __init__(self, error=None):
        self.error = error

    def preflight(self):
        if self.error is not None:
            raise self.error


class Closable:
    def __init__(self, url="http://127.0.0.1:9", current_url=None):
        self.url, self.closed = url, False
        if current_url is not None:
            self.current_url = current_url

    def close(self):
        self.closed = True


def test_preflight_is_ready_when_accepted_and_not_ready_when_comfyui_does_not_answer():
    from backend.assembly import _preflight
    from backend.comfyui.errors import ComfyUnavailable

    client = Closable()
    assert _preflight(client, Preflighting()) is True
    assert _preflight(client, Preflighting(ComfyUnavailable("refused"))) is False
    assert not client.closed


def test_a_rejected_workflow_closes_the_client_and_is_one_sentence():
    from backend.assembly import UserError, _preflight
    from backend.comfyui.errors import WorkflowRejected

    client = Closable()
    with pytest.raises(UserError) as info:
        _preflight(client, Preflighting(WorkflowRejected("ComfyUI refused the workflow:", ["no checkpoint x"])))
    assert str(info.value) == "ComfyUI refused the workflow: no checkpoint x." and client.closed


@pytest.mark.parametrize("current", [None, "http://127.0.0.1:10"])
def test_an_unexpected_answer_is_warned_about_with_the_server_in_use_and_not_ready(current, caplog):
    from backend.assembly import _preflight
    from backend.comfyui.errors import ComfyError

    client = Closable(current_url=current)
    with caplog.at_level(logging.WARNING, logger="backend.assembly"):
        assert _preflight(client, Preflighting(ComfyError("HTTP 500 from /object_info"))) is False
    assert warnings_of(caplog) == [
        f"could not check the workflow against ComfyUI at {current or client.url} (HTTP 500 from /object_info); "
        "it is checked again before the first keyframe"]
    assert not client.closed


def test_a_checkpoint_comfyui_lacks_stops_the_start_with_the_client_closed(tmp_path):
    from backend.assembly import UserError

    with FakeComfyUI(root=tmp_path / "server") as fake:
        config = parse_config({"comfyui": {"url": fake.url, "request_timeout": 2, "checkpoint": "absent.safetensors"},
                               "generation": {"resolution": [64, 64]}}, base_dir=tmp_path)
        with pytest.raises(UserError) as info:
            build_source(config)
    message = str(info.value)
    assert "absent.safetensors" in message and message.endswith(".") and "\n" not in message


def test_several_unreachable_urls_are_each_checked_for_encryption_and_named_in_the_wait_warning(tmp_path, caplog):
    # 0.0.0.0 is not loopback to _is_loopback, but a connection to it fails at once on every platform
    urls = ["http://127.0.0.1:9", "http://0.0.0.0:9"]
    config = parse_config({"comfyui": {"url": urls, "request_timeout": 1}, **NO_VAE}, base_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="backend.assembly"):
        source, client = build_source(config)
    try:
        assert source.state == "starting"
    finally:
        source.close()
    warned = warnings_of(caplog)
    assert [w for w in warned if "plain http" in w] == [
        "comfyui.url http://0.0.0.0:9 is plain http to another machine: prompts and images cross the network "
        "unencrypted and ComfyUI has no authentication (anyone on that network can use the server); prefer "
        "ComfyUI on this machine or an https/SSH tunnel"]
    assert ("ComfyUI is not reachable at http://127.0.0.1:9 or http://0.0.0.0:9; waiting for it "
            "(the picture stays up)") in warned


@pytest.mark.parametrize("host", ["localhost.", "LOCALHOST", "::ffff:127.0.0.1", "::ffff:127.8.9.10", "127.0.0.1", "::1"])
def test_loopback_names_include_the_trailing_dot_and_ipv4_mapped_ipv6(host):
    from backend.assembly import _is_loopback

    assert _is_loopback(host)


@pytest.mark.parametrize("host", ["", ".localhost", "localhost.lan", "::ffff:192.168.1.2", "10.0.0.1", "comfy"])
def test_other_hosts_are_not_loopback(host):
    from backend.assembly import _is_loopback

    assert not _is_loopback(host)


def test_an_ipv4_mapped_loopback_url_is_not_warned_about(caplog):
    with caplog.at_level(logging.WARNING, logger="backend.assembly"):
        warn_if_unencrypted("http://[::ffff:127.0.0.1]:8188")
        warn_if_unencrypted("http://localhost.:8188")
    assert warnings_of(caplog) == []


def test_several_urls_pass_the_timeouts_to_every_server_of_the_failover(tmp_path):
    pytest.importorskip("backend.comfyui.failover")
    from backend.assembly import build_client

    urls = ["http://127.0.0.1:9", "http://127.0.0.1:10"]
    client = build_client(parse_config({"comfyui": {"url": urls, "request_timeout": 1.5, "job_timeout": 20}},
                                       base_dir=tmp_path))
    try:
        assert [(c.request_timeout, c.jobs.job_timeout) for c in client.clients] == [(1.5, 20.0), (1.5, 20.0)]
    finally:
        client.close()


def test_without_the_failover_module_several_urls_use_the_first_and_say_so(tmp_path, caplog, monkeypatch):
    import sys

    from backend.assembly import build_client
    from backend.comfyui.client import ComfyClient

    monkeypatch.setitem(sys.modules, "backend.comfyui.failover", None)   # import of it raises ImportError
    urls = ["http://127.0.0.1:9", "http://127.0.0.1:10"]
    config = parse_config({"comfyui": {"url": urls, "request_timeout": 1.5, "job_timeout": 20}}, base_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="backend.assembly"):
        client = build_client(config)
    try:
        assert type(client) is ComfyClient and client.url == urls[0]
        assert (client.request_timeout, client.jobs.job_timeout) == (1.5, 20.0)
    finally:
        client.close()
    assert warnings_of(caplog) == [
        "comfyui.url lists 2 servers but this Reverie has no failover; using http://127.0.0.1:9 only"]


def test_build_encoder_passes_every_vae_setting_and_the_workflows_vae_to_the_loader(tmp_path, monkeypatch):
    from backend.assembly import build_encoder
    from backend.interpolation.latent_encoder import LatentEncoder

    calls = []
    monkeypatch.setattr(LatentEncoder, "load", classmethod(lambda cls, **kwargs: calls.append(kwargs) or "loaded"))
    config = parse_config({"vae": {"kind": "kl", "source": str(tmp_path / "v.safetensors"), "family": "sdxl",
                                   "device": "cpu", "dtype": "float32", "comfyui_dir": str(tmp_path),
                                   "max_batch": 3, "models_dir": str(tmp_path / "models")},
                           "comfyui": {"checkpoint": "mine.safetensors"}}, base_dir=tmp_path)
    assert build_encoder(config) == "loaded"
    vae = config.vae
    assert calls == [dict(kind="kl", source=vae.source, family="sdxl", device="cpu", dtype="float32",
                          comfyui_dir=vae.comfyui_dir, max_batch=3, checkpoint="mine.safetensors", vae_file=None,
                          models_dir=vae.models_dir)]
    assert vae.models_dir is not None and vae.comfyui_dir is not None


def test_a_vae_that_fails_to_load_is_a_user_error_with_the_reason_and_the_fix(tmp_path, monkeypatch):
    from backend.assembly import UserError, build_encoder
    from backend.interpolation.latent_encoder import LatentEncoder

    def broken(cls, **kwargs):
        raise RuntimeError("size mismatch")

    monkeypatch.setattr(LatentEncoder, "load", classmethod(broken))
    with pytest.raises(UserError) as info:
        build_encoder(parse_config({}, base_dir=tmp_path))
    assert str(info.value) == "The VAE could not be loaded (size mismatch); check the vae section of the config."


@pytest.mark.parametrize("name", ["", ["4", 0]])
def test_a_vaeloader_without_a_file_name_gives_no_vae_file(tmp_path, name):
    import json

    from backend.assembly import workflow_vae

    graph = json.loads((Path(__file__).resolve().parent.parent / "backend/comfyui/workflows/img2img_sd15.json").read_text())
    graph["99"] = {"class_type": "VAELoader", "inputs": {"vae_name": name}}
    (tmp_path / "wf.json").write_text(json.dumps(graph))
    assert workflow_vae(parse_config({"comfyui": {"workflow": "wf.json"}}, base_dir=tmp_path)) == (
        "v1-5-pruned-emaonly.safetensors", None)


def test_an_unreadable_start_image_is_one_user_error_naming_it(tmp_path):
    from backend.assembly import UserError, load_start_image

    bad = tmp_path / "start.png"
    bad.write_text("not a picture", encoding="utf-8")
    with pytest.raises(UserError) as info:
        load_start_image(bad, (64, 64))
    message = str(info.value)
    assert message.startswith(f"The start image {bad} cannot be read (") and message.endswith(
        "); fix keyframes.start_image.")
    assert load_start_image(None, (64, 64)) is None


def test_an_empty_image_folder_is_the_folder_sources_own_user_error(tmp_path):
    from backend.assembly import UserError

    (tmp_path / "imgs").mkdir()
    config = parse_config({"keyframes": {"source": "folder", "folder": "imgs"}, **NO_VAE}, base_dir=tmp_path)
    with pytest.raises(UserError) as info:
        build_source(config)
    assert str(info.value).startswith(f"No images found in {tmp_path / 'imgs'} (looked for ")


def test_the_seed_policy_keeps_the_configured_value():
    from backend.assembly import seed_policy

    seeds = seed_policy(parse_config({"keyframes": {"seed": {"policy": "increment", "value": 11}}}))
    assert (seeds.policy, seeds.value, seeds.next(), seeds.next()) == ("increment", 11, 11, 12)


def test_a_fixed_seed_on_a_folder_source_is_not_warned_about(tmp_path, caplog):
    from backend.assembly import build_dream

    (tmp_path / "imgs").mkdir()
    config = parse_config({"keyframes": {"source": "folder", "folder": "imgs", "seed": {"policy": "fixed"}},
                           "dream": {"anchor_every": 0}}, base_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="backend.assembly"):
        build_dream(config)
    assert warnings_of(caplog) == []


def test_one_sentence_trims_only_the_summarys_trailing_punctuation():
    from backend.assembly import _one_sentence
    from backend.comfyui.errors import WorkflowRejected

    assert _one_sentence(WorkflowRejected("unknown sampler X")) == "unknown sampler X."
    assert _one_sentence(WorkflowRejected("refused: ", ["a", "b"])) == "refused: a; b."


def test_the_start_looks_for_another_comfyui_on_the_likely_ports_only(tmp_path, caplog):
    configured = f"http://127.0.0.1:{_free_port(9100, 9200)}"
    with FakeComfyUI(root=tmp_path / "server", port=_free_port(8500, 8600)):   # a Desktop port, not a likely one
        with caplog.at_level(logging.WARNING):
            source, _client = build_source(comfy_config(tmp_path, configured))
        source.close()
    assert not [w for w in warnings_of(caplog) if "keeps waiting" in w and ":85" in w]


def test_build_encoder_passes_the_workflows_vaeloader_file_to_the_loader(tmp_path, monkeypatch):
    import json

    from backend.assembly import build_encoder
    from backend.interpolation.latent_encoder import LatentEncoder

    graph = json.loads((Path(__file__).resolve().parent.parent / "backend/comfyui/workflows/img2img_sd15.json").read_text())
    graph["99"] = {"class_type": "VAELoader", "inputs": {"vae_name": "vae-ft-mse-840000.safetensors"}}
    (tmp_path / "wf.json").write_text(json.dumps(graph))
    calls = []
    monkeypatch.setattr(LatentEncoder, "load", classmethod(lambda cls, **kwargs: calls.append(kwargs)))
    build_encoder(parse_config({"comfyui": {"workflow": "wf.json"}}, base_dir=tmp_path))
    assert [(c["checkpoint"], c["vae_file"]) for c in calls] == [
        ("v1-5-pruned-emaonly.safetensors", "vae-ft-mse-840000.safetensors")]
