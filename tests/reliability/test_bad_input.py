"""Bad input never produces a traceback: random bytes as the config file and as a workflow file,
a folder source full of broken, odd-sized and odd-mode images, and command-line misuse (each one a
clear message and exit code 2)."""

from __future__ import annotations

import os
import struct
import time
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from backend.config import Config, ConfigError, load_config
from backend.folder_source import FolderSource
from backend.frames import KeyframeSourceError
from tests.reliability.conftest import run_cli

# -- random files at the two loaders ------------------------------------------------------------

yaml_bytes = st.one_of(
    st.binary(max_size=200),
    st.text(alphabet=st.sampled_from(list("abcdefgimnoprstuvy:-[]{},.'\"&*!|>#@%? \n\t0123456789\\~")),
            max_size=200).map(str.encode),
    st.sampled_from(["generation", "display", "fps", "resolution", "hybrid", "&a [1]", "*a", "!!python/object:os.system",
                     "!!binary", "<<: *a", "\xff\xfe", "\ufeff", "---", "..."]).map(lambda s: s.encode("utf-8")),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(data=st.lists(yaml_bytes, min_size=1, max_size=6).map(b"\n".join))
def test_any_bytes_as_the_config_file_give_a_config_or_one_config_error(tmp_path, data):
    path = tmp_path / "config.yaml"
    path.write_bytes(data)
    try:
        assert isinstance(load_config(path), Config)
    except ConfigError as error:
        assert error.problems and str(path) in str(error)


def test_a_yaml_alias_bomb_in_the_config_is_rejected_quickly():  # took 9 minutes before show() used reprlib
    """Nine levels of nine aliases: 387 million list items if anything walks or repr()s it all."""
    from backend.config import parse_config_text

    levels = ["  - &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"  - &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    text = "anchors:\n" + "\n".join(levels) + "\ndisplay: {fps: *a8, ring_size: *a8}\ngeneration: {resolution: *a8}\n"
    started = time.monotonic()
    with pytest.raises(ConfigError) as error:
        parse_config_text(text)
    assert time.monotonic() - started < 5.0
    assert len(str(error.value)) < 2000 and "display.fps" in str(error.value)


json_text = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["class_type", "inputs", "1", "2", "nodes", "links", "prompt", "image", "_meta"]) |
        st.text(max_size=4), inner, max_size=4), max_leaves=20)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=200), json_text.map(lambda v: __import__("json").dumps(v).encode())))
def test_any_bytes_as_a_workflow_file_give_a_workflow_or_one_workflow_error(tmp_path, data):
    from backend.comfyui.workflow import Workflow, WorkflowError, load_workflow

    path = tmp_path / "workflow.json"
    path.write_bytes(data)
    try:
        assert isinstance(load_workflow(path), Workflow)
    except WorkflowError as error:
        assert str(error)


def test_a_deeply_nested_workflow_file_gives_a_workflow_error(tmp_path):
    from backend.comfyui.workflow import WorkflowError, load_workflow

    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(WorkflowError):
        load_workflow(path)


# -- the folder source ---------------------------------------------------------------------------

def png_claiming(width: int, height: int) -> bytes:
    """A few hundred bytes whose header claims width x height (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def gradient(mode: str, size: tuple[int, int]) -> Image.Image:
    ramp = np.linspace(0.0, 1.0, size[0] * size[1]).reshape(size[1], size[0])
    if mode in ("I;16", "I"):
        return Image.fromarray((ramp * 65535).astype(np.uint16 if mode == "I;16" else np.int32))
    if mode == "F":
        return Image.fromarray((ramp * 255).astype(np.float32))
    rgb = Image.fromarray(np.stack([ramp * 255] * 3, -1).astype(np.uint8), "RGB")
    return rgb.convert(mode)


ODD_IMAGES = {
    "1x1.png": ("RGB", (1, 1)), "1x300.png": ("RGB", (1, 300)), "300x1.png": ("RGB", (300, 1)),
    "7x13.png": ("RGB", (7, 13)), "gray.png": ("L", (50, 40)), "gray_alpha.png": ("LA", (40, 50)),
    "palette.gif": ("P", (33, 33)), "rgba.png": ("RGBA", (64, 64)), "bw.bmp": ("1", (65, 63)),
    "cmyk.tiff": ("CMYK", (30, 30)), "int32.tiff": ("I", (30, 30)), "float.tiff": ("F", (30, 30)),
    "sixteen.png": ("I;16", (64, 64)), "photo.jpg": ("RGB", (120, 80)), "pic.webp": ("RGB", (80, 120)),
}


def test_odd_sizes_and_modes_in_the_image_folder_all_become_frame_sized_rgb(tmp_path):
    for name, (mode, size) in ODD_IMAGES.items():
        gradient(mode, size).save(tmp_path / name)
    source = FolderSource(tmp_path, (64, 48))
    names = set()
    for _ in ODD_IMAGES:
        keyframe = source.next_keyframe(None)
        assert keyframe.image.mode == "RGB" and keyframe.image.size == (64, 48), keyframe.origin
        names.add(keyframe.origin)
    assert names == set(ODD_IMAGES)


def test_a_16_bit_image_keeps_its_tones(tmp_path):
    gradient("I;16", (64, 64)).save(tmp_path / "sixteen.png")
    pixels = np.asarray(FolderSource(tmp_path, (64, 64)).next_keyframe(None).image).astype(float)
    assert 100 < pixels.mean() < 155 and pixels.min() < 30


def test_broken_and_unreadable_files_are_skipped_and_the_good_ones_used(tmp_path):
    Image.new("RGB", (64, 64), (10, 200, 30)).save(tmp_path / "good.png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "garbage.jpg").write_bytes(os.urandom(500))
    good = (tmp_path / "good.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.png")  # opening it would block forever: must never be opened
    (tmp_path / "notes.txt").write_text("not an image")
    source = FolderSource(tmp_path, (64, 64))
    for _ in range(3):
        keyframe = source.next_keyframe(None)
        assert keyframe.origin == "good.png"
        assert np.asarray(keyframe.image)[0, 0].tolist() == [10, 200, 30]


def test_a_decompression_bomb_in_the_folder_is_skipped(tmp_path):
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "a_good.png")
    (tmp_path / "b_bomb.png").write_bytes(png_claiming(50_000, 50_000))
    source = FolderSource(tmp_path, (64, 64))
    assert [source.next_keyframe(None).origin for _ in range(3)] == ["a_good.png"] * 3


def test_a_folder_with_no_images_or_only_broken_ones_is_one_clear_error(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(KeyframeSourceError, match="No images found"):
        FolderSource(tmp_path, (64, 64))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    source = FolderSource(tmp_path, (64, 64))
    with pytest.raises(KeyframeSourceError, match="could be read"):
        source.next_keyframe(None)


def test_a_folder_of_only_broken_images_exits_2_in_one_sentence(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "config.yaml").write_text("keyframes: {source: folder, folder: imgs}\ngeneration: {resolution: [64, 64]}\n"
                                          "vae: {kind: tiny, source: nowhere}\n"
                                          "display: {output_dir: out}\nlogging: {file: null}\ncontrol: {file: null}\n")
    done = run_cli(tmp_path, "--config", "config.yaml", "--max-frames", "1")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "out" / "current_frame.png").exists()


# -- the command line ------------------------------------------------------------------------------

@pytest.mark.parametrize("args, says", [
    (["--nope"], "unrecognized arguments: --nope"),
    (["--max-frames", "-1"], "--max-frames"),
    (["--max-frames", "0"], "--max-frames"),
    (["--max-frames", "abc"], "--max-frames"),
    (["--max-frames", "1e3"], "--max-frames"),
    (["--max-frames"], "expected one argument"),
    (["--config"], "expected one argument"),
    (["--config", "missing.yaml"], "config file not found"),
    (["--config", "."], "this is a folder, not a config file"),
    (["--config", "latin1.yaml"], "line 1: not UTF-8 text (byte 0xe9); save the file as UTF-8"),
    (["--fps", "abc"], "--fps"),
    (["--fps", "nan"], "--fps"),
    (["--fps", "1000"], "--fps"),
    (["--source", "web"], "--source"),
    (["--folder", "no_such_folder"], "--folder: no such folder: no_such_folder"),
    (["--max-frames", "3", "extra"], "unrecognized arguments"),
])
def test_command_line_misuse_exits_2_with_one_clear_message_and_no_traceback(tmp_path, args, says):
    (tmp_path / "config.yaml").write_text("display: {output_dir: out}\nlogging: {file: null}\n")
    (tmp_path / "latin1.yaml").write_bytes("display: {fps: 5}  # caf\xe9\n".encode("latin-1"))
    if args[:1] not in (["--config"],) and "--config" not in args:
        args = [*args, "--config", "config.yaml"]
    done = run_cli(tmp_path, *args, timeout=60)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert says in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    # argparse: its usage lines, then one "reverie: error: ..." line; our own errors: one sentence
    # (a config error may add its key path on a second line)
    other = [line for line in lines if not line.startswith(("usage: ", " "))]
    assert len(other) <= 2, lines
    assert says in lines[-1] or says in lines[-2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "latin1.yaml"]  # nothing written


@pytest.mark.parametrize("setting, says", [
    ("display: {output_dir: taken.txt}", "display.output_dir: is a file, not a folder"),
    ("display: {output_dir: taken.txt/sub}", "display.output_dir: cannot write to"),
    ("logging: {file: logs}", "logging.file: is a folder, not a file"),
    ("logging: {file: taken.txt/reverie.log}", "logging.file: cannot write to"),
])
def test_an_output_folder_or_log_file_that_cannot_be_written_exits_2_in_one_sentence(tmp_path, setting, says):
    (tmp_path / "taken.txt").write_text("a file")
    (tmp_path / "logs").mkdir()
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (64, 64), "red").save(tmp_path / "imgs" / "a.png")
    base = {"display": "display: {output_dir: out}", "logging": "logging: {file: null}"}
    base[setting.split(":")[0]] = setting
    (tmp_path / "config.yaml").write_text("\n".join([*base.values(), "control: {file: null}",
                                                    "keyframes: {source: folder, folder: imgs}", ""]))
    done = run_cli(tmp_path, "--config", "config.yaml", "--max-frames", "3")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    problem, = [line for line in done.stderr.splitlines() if line.startswith("  - ")]
    assert says in problem


@pytest.mark.parametrize("start, says", [("start.png", "start image"), ("pictures", "is a folder, not a file")])
def test_a_corrupt_or_folder_start_image_in_folder_mode_exits_2_in_one_sentence(tmp_path, start, says):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "pictures").mkdir()
    Image.new("RGB", (64, 64), "red").save(tmp_path / "imgs" / "a.png")
    (tmp_path / "start.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "config.yaml").write_text(f"keyframes: {{source: folder, folder: imgs, start_image: {start}}}\n"
                                          "generation: {resolution: [64, 64]}\ndisplay: {output_dir: out}\n"
                                          "logging: {file: null}\ncontrol: {file: null}\n")
    done = run_cli(tmp_path, "--config", "config.yaml", "--max-frames", "1")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert says in done.stderr and not (tmp_path / "out" / "current_frame.png").exists()
