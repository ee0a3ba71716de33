"""`render` command: each bad input is one sentence on stderr, exit 2, and no video written."""

from __future__ import annotations

import pytest

from backend.render.cli import main
from tests.fake_comfyui import FakeComfyUI
from tests.real_comfyui.server import free_port


@pytest.fixture(scope="module")
def fake():
    with FakeComfyUI(checkpoints=["v1-5-pruned-emaonly.safetensors", "flux1-dev.safetensors",
                                  "sd3.5_medium.safetensors"]) as server:
        yield server


def _args(tmp_path, url, *extra):
    config = tmp_path / "config.yaml"
    config.write_text("{}\n")
    return ["--seeds", "1", "2", "--url", url, "--config", str(config), "--quiet",
            "--output", str(tmp_path / "out" / "walk.mp4"), *extra]


def _fails(capsys, tmp_path, argv, *needles):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("reverie render: "), err   # one sentence, no traceback
    for needle in needles:
        assert needle in err, err
    assert not (tmp_path / "out" / "walk.mp4").exists()
    return err


def test_one_seed_is_refused(fake, tmp_path, capsys):
    argv = _args(tmp_path, fake.url)
    argv[1:3] = ["7"]
    _fails(capsys, tmp_path, argv, "two or more seeds")


def test_fewer_than_two_frames_per_leg_is_refused(fake, tmp_path, capsys):
    _fails(capsys, tmp_path, _args(tmp_path, fake.url, "--frames", "1"), "--frames must be at least 2")


def test_an_output_folder_that_cannot_be_made_is_refused(fake, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    argv = _args(tmp_path, fake.url) + ["--output", str(blocker / "walk.mp4")]
    _fails(capsys, tmp_path, argv, "cannot write to", "choose another --output")


def test_an_output_that_is_neither_mp4_nor_a_folder_is_refused(fake, tmp_path, capsys):
    _fails(capsys, tmp_path, _args(tmp_path, fake.url) + ["--output", str(tmp_path / "walk.avi")], ".mp4 file")


def test_resume_without_pngs_is_refused(fake, tmp_path, capsys):
    _fails(capsys, tmp_path, _args(tmp_path, fake.url, "--resume", "--no-png"), "--resume", "--no-png")


def test_a_codec_pyav_lacks_is_refused(fake, tmp_path, capsys):
    pytest.importorskip("av", reason="PyAV is not installed (pip install av)")
    _fails(capsys, tmp_path, _args(tmp_path, fake.url, "--codec", "no-such-codec"), "cannot encode 'no-such-codec'")


def test_an_unknown_checkpoint_is_refused_with_the_names_the_server_has(fake, tmp_path, capsys):
    _fails(capsys, tmp_path, _args(tmp_path, fake.url, "--checkpoint", "nope.safetensors"),
           "'nope.safetensors' is not on", "v1-5-pruned-emaonly.safetensors, flux1-dev.safetensors")


@pytest.mark.parametrize("checkpoint,label", [("flux1-dev.safetensors", "FLUX"), ("sd3.5_medium.safetensors", "SD 3.x")])
def test_a_flow_matching_checkpoint_is_refused_naming_its_family(fake, tmp_path, capsys, checkpoint, label):
    _fails(capsys, tmp_path, _args(tmp_path, fake.url, "--checkpoint", checkpoint),
           f"looks like {label}", "flow-matching", "SD 1.x, SD 2.x or SDXL")


def test_family_can_be_forced_when_the_name_misleads(fake, tmp_path, capsys):
    _fails(capsys, tmp_path, _args(tmp_path, fake.url, "--checkpoint", "v1-5-pruned-emaonly.safetensors",
                                   "--family", "flux"), "looks like FLUX (--family)")


def test_a_server_without_loadlatent_is_refused_naming_the_nodes(fake, tmp_path, capsys):
    _fails(capsys, tmp_path, _args(tmp_path, fake.url), "lacks the core node(s) LoadLatent, KSamplerAdvanced")


def test_no_server_answering_is_refused(tmp_path, capsys):
    _fails(capsys, tmp_path, _args(tmp_path, f"http://127.0.0.1:{free_port()}"), "no ComfyUI answers at")


def test_an_img2img_workflow_is_refused(fake, tmp_path, capsys):
    _fails(capsys, tmp_path, _args(tmp_path, fake.url, "--workflow", "builtin:img2img"), "img2img workflow")


def test_argparse_errors_exit_2_too(tmp_path):
    with pytest.raises(SystemExit) as caught:
        main(["--seeds", "1", "2", "--resolution", "100x100"])
    assert caught.value.code == 2
