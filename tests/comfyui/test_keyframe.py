"""KeyframeGenerator against the fake server: provenance, preflight, disk bounds, timing."""

from __future__ import annotations

import numpy as np
import pytest

from backend.comfyui.client import WorkflowRejected
from backend.comfyui.keyframe import KeyframeGenerator
from backend.frames import Keyframe
from backend.comfyui.workflow import load_workflow, parse_workflow
from tests.comfyui.conftest import invert_graph
from tests.fake_comfyui import FakeComfyUI, fake_sample, fake_txt2img


def _generator(client, **overrides) -> KeyframeGenerator:
    settings = dict(img2img=load_workflow("builtin:img2img"), txt2img=load_workflow("builtin:txt2img"),
                    checkpoint=None, steps=3, cfg=7.0, sampler="euler", scheduler="normal", width=64, height=48)
    settings.update(overrides)
    return KeyframeGenerator(client, **settings)


def test_img2img_keyframe_is_the_fake_sampler_of_the_input(client, picture):
    result = _generator(client).generate_keyframe(picture, "sky", "ugly", seed=11, denoise=0.4)
    assert isinstance(result, Keyframe) and result.prompt_id and result.generated
    assert (result.origin, result.prompt, result.negative, result.seed, result.denoise) == (
        "img2img", "sky", "ugly", 11, 0.4)
    assert np.array_equal(np.asarray(result.image), fake_sample(picture, 11, 0.4))


def test_txt2img_keyframe_has_the_configured_size_and_seed(client):
    result = _generator(client).generate_keyframe(None, "sky", "", seed=5, denoise=0.4)
    assert result.image.size == (64, 48) and (result.origin, result.denoise) == ("txt2img", None)
    assert np.array_equal(np.asarray(result.image), fake_txt2img(5, 64, 48))


def test_feedback_loop_keeps_comfyui_disk_bounded(fake, client, picture):
    gen = _generator(client)
    image = picture
    for seed in range(7):
        image = gen.generate_keyframe(image, "sky", "", seed=seed, denoise=0.5).image
    assert fake.file_counts() == {"input": 3, "output": 0, "temp": 0}
    assert fake.history == {}


def test_without_websocket_node_outputs_fall_back_to_save_image(tmp_path, picture):
    from backend.comfyui.client import ComfyClient
    with FakeComfyUI(root=tmp_path, websocket_node=False) as fake:
        client = ComfyClient(fake.url, poll_interval=0.3)
        result = _generator(client).generate_keyframe(picture, "sky", "", seed=3, denoise=0.5)
        assert np.array_equal(np.asarray(result.image), fake_sample(picture, 3, 0.5))
        assert [p.name for p in (tmp_path / "output" / "reverie").iterdir()] == ["keyframe_00001_.png"]
        client.close()


def test_a_silent_socket_switches_the_output_to_save_image_once_and_keeps_delivering(fake, client, picture,
                                                                                    caplog):
    gen = _generator(client)
    first = gen.generate_keyframe(picture, "sky", "", seed=1, denoise=0.5).image    # via SaveImageWebsocket
    assert fake.file_counts()["output"] == 0
    fake.silent_socket = True           # jobs still finish (history written), no frame ever arrives
    with caplog.at_level("WARNING", logger="backend.comfyui.keyframe"):
        second = gen.generate_keyframe(first, "sky", "", seed=2, denoise=0.5).image
        third = gen.generate_keyframe(second, "sky", "", seed=3, denoise=0.5).image
    assert np.array_equal(np.asarray(second), fake_sample(first, 2, 0.5))           # the same keyframe, retried
    assert np.array_equal(np.asarray(third), fake_sample(second, 3, 0.5))
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "SaveImage" in warned[0] and "grows" in warned[0]
    assert not gen.websocket_output and fake.file_counts()["output"] == 2 and fake.history == {}
    gen.preflight()                     # a later preflight keeps the fallback
    assert gen.img2img.graph[gen.img2img.output_node]["class_type"] == "SaveImage"


def test_the_websocket_output_is_tried_again_and_kept_once_its_images_arrive(fake, client, picture, caplog):
    gen = _generator(client, websocket_retry_every=3)
    fake.silent_socket = True
    image = picture
    with caplog.at_level("INFO", logger="backend.comfyui.keyframe"):
        for seed in range(1, 5):        # 1: lost, switch; 2, 3: SaveImage; 4: the try is lost too
            image = gen.generate_keyframe(image, "sky", "", seed=seed, denoise=0.5).image
        assert not gen.websocket_output and fake.file_counts()["output"] == 4
        fake.silent_socket = False      # the socket works again
        for seed in range(5, 8):        # 5, 6: SaveImage; 7: the try works, and is kept
            previous, image = image, gen.generate_keyframe(image, "sky", "", seed=seed, denoise=0.5).image
        assert np.array_equal(np.asarray(image), fake_sample(previous, 7, 0.5))
        assert gen.websocket_output and fake.file_counts()["output"] == 6
        gen.generate_keyframe(image, "sky", "", seed=8, denoise=0.5)
    assert fake.file_counts()["output"] == 6                  # back on SaveImageWebsocket: nothing on disk
    back = [r for r in caplog.records if "arrive again" in r.getMessage()]
    assert len(back) == 1 and back[0].levelname == "INFO"
    assert sum(1 for r in caplog.records if r.levelname == "WARNING") == 1


def test_a_server_restart_is_a_lost_job_not_a_reason_to_leave_the_websocket_output(fake, client, picture):
    from backend.comfyui.client import ImagesNotReceived, JobLost

    gen = _generator(client)
    gen.preflight()
    fake.latency, fake.kill_mid_run = 0.5, True
    with pytest.raises(JobLost) as info:
        gen.generate_keyframe(picture, "sky", "", seed=1, denoise=0.5)
    assert not isinstance(info.value, ImagesNotReceived) and gen.websocket_output


def test_latency_is_reported_in_seconds(fake, client, picture):
    fake.latency = 0.3
    result = _generator(client).generate_keyframe(picture, "sky", "", seed=1, denoise=0.5)
    assert 0.3 <= result.seconds < 3.0


@pytest.mark.parametrize("overrides, needle", [
    ({"checkpoint": "missing.safetensors"}, "available: v1-5-pruned-emaonly.safetensors"),
    ({"sampler": "Euler"}, "sampler_name 'Euler' is not offered by this ComfyUI; available: euler,"),
    ({"scheduler": "karras2"}, "scheduler 'karras2' is not offered by this ComfyUI; available: simple,"),
])
def test_preflight_names_the_available_choices(client, overrides, needle):
    with pytest.raises(WorkflowRejected) as info:
        _generator(client, **overrides).preflight()
    assert any(needle in line for line in info.value.lines)


def test_preflight_reports_an_empty_checkpoint_folder(tmp_path, picture):
    from backend.comfyui.client import ComfyClient
    with FakeComfyUI(root=tmp_path, checkpoints=[]) as fake:
        client = ComfyClient(fake.url)
        with pytest.raises(WorkflowRejected, match="none"):
            _generator(client).preflight()
        client.close()


def test_a_server_without_the_models_route_lists_checkpoints_from_object_info(fake, client):
    fake.models_status = 404                 # servers older than GET /models/checkpoints
    assert client.checkpoints() == fake.checkpoints
    with pytest.raises(WorkflowRejected) as info:
        _generator(client, checkpoint="missing.safetensors").preflight()
    assert any("available: v1-5-pruned-emaonly.safetensors" in line for line in info.value.lines)


def test_a_broken_checkpoint_list_skips_that_check_with_a_warning(fake, client, picture, caplog):
    fake.models_status = 500
    gen = _generator(client, checkpoint="v1-5-pruned-emaonly.safetensors")
    with caplog.at_level("WARNING", logger="backend.comfyui.keyframe"):
        gen.preflight()
    assert "skipping that check" in caplog.text and "HTTP 500" in caplog.text
    assert gen.generate_keyframe(picture, "sky", "", seed=1, denoise=0.5).image.size == picture.size


def test_preflight_reports_unknown_node_classes(client):
    graph = load_workflow("builtin:img2img").graph
    graph["20"] = {"class_type": "ETN_Fancy", "inputs": {}}
    with pytest.raises(WorkflowRejected, match="ETN_Fancy"):
        _generator(client, img2img=parse_workflow(graph)).preflight()


def test_a_model_free_user_workflow_runs_through_generate_keyframe(client, picture):
    wf = parse_workflow(invert_graph("placeholder.png"))
    result = _generator(client, img2img=wf, txt2img=wf).generate_keyframe(picture, "", "", seed=1, denoise=0.5)
    assert np.array_equal(np.asarray(result.image), 255 - np.asarray(picture))


def _blip_during_the_next_job(fake) -> None:
    """ComfyUI's listener goes away for a moment while the next (1 s) job runs."""
    import threading
    import time

    def blip() -> None:
        time.sleep(0.4)
        fake.refuse_connections = True
        time.sleep(0.5)
        fake.refuse_connections = False

    fake.latency = 1.0
    threading.Thread(target=blip, daemon=True).start()


def test_a_socket_that_drops_mid_job_loses_that_job_but_keeps_the_websocket_output(fake, client, picture):
    from backend.comfyui.client import ImagesNotReceived

    gen = _generator(client)
    first = gen.generate_keyframe(picture, "sky", "", seed=1, denoise=0.5).image
    _blip_during_the_next_job(fake)
    with pytest.raises(ImagesNotReceived) as info:
        gen.generate_keyframe(first, "sky", "", seed=2, denoise=0.5)
    assert info.value.socket_dropped and "dropped during the job" in str(info.value)
    assert gen.websocket_output and fake.file_counts()["output"] == 0   # nothing written to ComfyUI's disk
    fake.latency = 0.0
    again = gen.generate_keyframe(first, "sky", "", seed=2, denoise=0.5).image    # the caller's retry
    assert np.array_equal(np.asarray(again), fake_sample(first, 2, 0.5))
    assert gen.websocket_output and fake.file_counts()["output"] == 0


def test_a_socket_that_drops_during_every_job_does_switch_to_save_image(fake, client, picture):
    from backend.comfyui.client import ImagesNotReceived

    gen = _generator(client)
    first = gen.generate_keyframe(picture, "sky", "", seed=1, denoise=0.5).image
    _blip_during_the_next_job(fake)
    with pytest.raises(ImagesNotReceived):
        gen.generate_keyframe(first, "sky", "", seed=2, denoise=0.5)
    _blip_during_the_next_job(fake)     # again: a proxy that cuts the socket during every job
    second = gen.generate_keyframe(first, "sky", "", seed=2, denoise=0.5).image
    assert np.array_equal(np.asarray(second), fake_sample(first, 2, 0.5))
    assert not gen.websocket_output and fake.file_counts()["output"] == 1


def test_a_tagged_generator_uploads_under_names_of_its_own(fake, client, picture):
    gen = _generator(client, upload_tag="ab12cd34")
    image = picture
    for seed in range(4):
        image = gen.generate_keyframe(image, "sky", "", seed=seed, denoise=0.5).image
    names = sorted(p.name for p in (fake.root / "input" / "reverie").iterdir())
    assert names == ["keyframe_ab12cd34_0.png", "keyframe_ab12cd34_1.png", "keyframe_ab12cd34_2.png"]


def test_without_a_tag_the_upload_names_stay_as_before(fake, client, picture):
    _generator(client).generate_keyframe(picture, "sky", "", seed=1, denoise=0.5)
    assert [p.name for p in (fake.root / "input" / "reverie").iterdir()] == ["keyframe_0.png"]


@pytest.mark.parametrize("tag", ["../x", "a b", "a/b", "caf\u00e9", "x.png"])
def test_an_upload_tag_that_could_change_the_path_or_name_kind_is_refused(client, tag):
    with pytest.raises(ValueError, match="upload_tag"):
        _generator(client, upload_tag=tag)
