"""backend/status.py: status.json / status.txt / status.js agree and stay safe for their readers."""

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from backend.status import (RAINMETER_REGEXP, STATUS_KEYS, StatusWriter, format_txt, new_status,
                            validate_status)

HOSTILE = 'dream "quoted" \\ back\nslash\r\n</script><script>alert(1)</script>\u2028\u2029\x00tab\there =x= |'


def rainmeter_to_python(pattern: str) -> re.Pattern:
    """Translate a Rainmeter (PCRE) RegExp with (?siU) to Python: U makes quantifiers lazy."""
    assert pattern.startswith("(?siU)")
    return re.compile(pattern[len("(?siU)"):].replace("(.*)", "(.*?)"), re.S | re.I)


def read_js(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    prefix, suffix = "window.REVERIE_STATUS = ", ";\n"
    assert text.startswith(prefix) and text.endswith(suffix)
    return json.loads(text[len(prefix):-len(suffix)])


def written(tmp_path, **fields):
    StatusWriter(tmp_path).write(new_status(**fields))
    return (json.loads((tmp_path / "status.json").read_text(encoding="utf-8")),
            (tmp_path / "status.txt").read_text(encoding="utf-8"), read_js(tmp_path / "status.js"))


def test_new_status_has_every_contract_key():
    status = new_status(state="live", frame=3)
    assert tuple(status) == STATUS_KEYS and validate_status(status) == []
    assert status["updated"] > 1e9


def test_new_status_rejects_a_misspelt_key():
    with pytest.raises(TypeError, match="frame_kind"):
        new_status(frame_knd="keyframe")


def test_writer_rejects_a_status_missing_keys_or_with_an_unknown_state(tmp_path):
    with pytest.raises(ValueError, match="missing key: prompt"):
        StatusWriter(tmp_path).write({k: v for k, v in new_status().items() if k != "prompt"})
    with pytest.raises(ValueError, match="state must be one of"):
        StatusWriter(tmp_path).write(new_status(state="dreaming"))
    assert not (tmp_path / "status.json").exists()


def test_three_files_carry_the_same_values(tmp_path):
    data, txt, js = written(tmp_path, state="live", frame=41, frame_kind="inbetween", segment=2, position=5,
                            segment_frames=11, fps=9.87654, stalls=1, prompt="a cat", comfyui="connected",
                            frame_file="frames/frame_2.png")
    assert data == js
    assert list(data) == list(STATUS_KEYS)
    lines = dict(line.split("=", 1) for line in txt.splitlines())
    assert list(lines) == list(STATUS_KEYS)
    assert lines["frame"] == "41" and lines["fps"] == "9.877" and lines["frame_file"] == "frames/frame_2.png"
    assert data["fps"] == pytest.approx(9.87654) and data["state"] == "live"
    assert (tmp_path / "status.txt").read_bytes()[:3] != b"\xef\xbb\xbf"  # no BOM


def test_txt_parses_with_the_documented_rainmeter_regexp(tmp_path):
    _, txt, _ = written(tmp_path, state="paused", frame=7, prompt="misty forest", frame_file="frames/frame_1.png")
    match = rainmeter_to_python(RAINMETER_REGEXP).match(txt)
    assert match is not None
    values = dict(zip(STATUS_KEYS, match.groups()))
    assert values["state"] == "paused" and values["frame"] == "7" and values["prompt"] == "misty forest"
    assert values["frame_file"] == "frames/frame_1.png"  # StringIndex 17
    single = rainmeter_to_python(r"(?siU)frame_file=(.*)\n").search(txt)
    assert single.group(1) == "frames/frame_1.png"


def test_hostile_prompt_stays_on_one_line_and_cannot_break_the_page(tmp_path):
    data, txt, js = written(tmp_path, prompt=HOSTILE, last_error="boom\nTraceback: line 2")
    assert data["prompt"] == HOSTILE and js["prompt"] == HOSTILE  # JSON keeps the exact text
    assert len(txt.splitlines()) == len(STATUS_KEYS)
    match = rainmeter_to_python(RAINMETER_REGEXP).match(txt)
    prompt = dict(zip(STATUS_KEYS, match.groups()))["prompt"]
    assert "\n" not in prompt and "\r" not in prompt and "\u2028" not in prompt and "\x00" not in prompt
    assert prompt.startswith('dream "quoted"')
    js_text = (tmp_path / "status.js").read_text(encoding="utf-8")
    assert "</script" not in js_text.lower() and "\u2028" not in js_text and js_text.isascii()
    assert js_text.count("\n") == 1


def test_numpy_numbers_paths_and_non_finite_floats_are_written_plainly(tmp_path):
    ring = tmp_path / "frames" / "frame_0.png"
    data, txt, _ = written(tmp_path, frame=np.int64(5), fps=np.float32(9.5), keyframe_latency=float("inf"),
                           frame_file=ring)
    assert data["frame"] == 5 and data["fps"] == 9.5 and data["keyframe_latency"] is None
    assert data["frame_file"] == "frames/frame_0.png"
    assert "keyframe_latency=\n" in txt


def test_extra_keys_follow_the_fixed_ones(tmp_path):
    status = new_status()
    status["fps_cap"] = 12.5
    StatusWriter(tmp_path).write(status)
    lines = (tmp_path / "status.txt").read_text(encoding="utf-8").splitlines()
    assert lines[len(STATUS_KEYS)] == "fps_cap=12.500"
    assert rainmeter_to_python(RAINMETER_REGEXP).match(format_txt(status)) is not None


def test_status_writer_recreates_a_deleted_output_folder(tmp_path):
    out = tmp_path / "gone"
    StatusWriter(out).write(new_status())
    assert sorted(p.name for p in out.iterdir()) == ["status.js", "status.json", "status.txt"]


# A corrupt image whose name is not UTF-8, as FolderSource sees it on Linux: os.fsdecode turns the
# bytes it cannot decode into lone surrogates (U+DC80..U+DCFF).
UNDECODABLE = "caf\udce9 \udcff.png"


def test_the_undecodable_name_is_what_fsdecode_gives_for_latin1_bytes():
    if os.name != "nt":  # Windows file names are UTF-16: no undecodable bytes there
        assert os.fsdecode(b"caf\xe9 \xff.png") == UNDECODABLE


def test_a_file_name_that_is_not_utf8_is_written_escaped_in_all_three_files(tmp_path):
    data, txt, js = written(tmp_path, state="live", prompt=f"from {UNDECODABLE}",
                            last_error=f"cannot read {UNDECODABLE}: cannot identify image file \ud800")
    for text in (data["last_error"], js["last_error"], dict(ln.split("=", 1) for ln in txt.splitlines())["last_error"]):
        assert text == "cannot read caf\\xe9 \\xff.png: cannot identify image file \\ud800"
    assert data["prompt"] == js["prompt"] == "from caf\\xe9 \\xff.png"


def test_a_huge_string_is_cut_and_every_file_still_written(tmp_path):
    from backend.status import MAX_TEXT

    data, txt, js = written(tmp_path, last_error="x" * 10_000_000)
    assert len(data["last_error"]) == MAX_TEXT and data["last_error"].endswith("...")
    assert js == data and len(txt) < 4 * MAX_TEXT


def test_hostile_keys_in_a_quality_dict_are_written_safely(tmp_path):
    data, txt, js = written(tmp_path, quality={f"k\udcff{UNDECODABLE}": 1.0, "line\nbreak": 2})
    assert data["quality"] == js["quality"] == {"k\\xffcaf\\xe9 \\xff.png": 1.0, "line\nbreak": 2}


def test_quality_is_a_nested_dict_in_json_and_js_and_left_out_of_txt(tmp_path):
    quality = {"sharpness": 0.5, "novelty": np.float32(0.25), "colorfulness": float("nan"), "frames": 3}
    data, txt, js = written(tmp_path, state="live", quality=quality)
    assert data["quality"] == js["quality"] == {"sharpness": 0.5, "novelty": 0.25, "colorfulness": None, "frames": 3}
    assert "quality" not in txt
    assert [line.split("=", 1)[0] for line in txt.splitlines()] == list(STATUS_KEYS)


def test_pause_reason_is_a_fixed_txt_key_and_the_optional_fields_follow_it(tmp_path):
    data, txt, js = written(tmp_path, state="paused", pause_reason="skin", comfyui_server="http://127.0.0.1:8188",
                            config_problem="display.fps must be > 0")
    keys = [line.split("=", 1)[0] for line in txt.splitlines()]
    assert keys == [*STATUS_KEYS, "comfyui_server", "config_problem"]
    assert STATUS_KEYS[19] == "pause_reason"  # StringIndex 20 in RAINMETER_REGEXP
    match = rainmeter_to_python(RAINMETER_REGEXP).match(txt)
    assert dict(zip(STATUS_KEYS, match.groups()))["pause_reason"] == "skin"
    assert data == js and data["pause_reason"] == "skin" and data["comfyui_server"] == "http://127.0.0.1:8188"
    assert data["config_problem"] == "display.fps must be > 0"


def test_optional_fields_are_absent_unless_given(tmp_path):
    data, _, _ = written(tmp_path)
    assert data["pause_reason"] == "" and not {"quality", "comfyui_server", "config_problem"} & set(data)


@pytest.mark.parametrize("fields, message", [
    ({"quality": [1, 2]}, "quality must be a dict"),
    ({"quality": {"metrics": {"sharpness": object()}}}, "quality['metrics']['sharpness'] is a object"),
    ({"quality": {"events": {3: 1}}}, "quality['events'][3] has a key that is not a str"),
    ({"quality": {"deep": [[[[[[[[[1]]]]]]]]]}}, "nested more than 8 levels"),
    ({"pause_reason": None}, "pause_reason must be a str"),
    ({"comfyui_server": 8188}, "comfyui_server must be a str"),
    ({"config_problem": ["a"]}, "config_problem must be a str"),
    ({"comfyui": "connecting"}, "comfyui must be one of"),
])
def test_validation_names_optional_fields_of_the_wrong_type(fields, message):
    problems = validate_status(new_status(**fields))
    assert any(message in p for p in problems), problems


def test_the_dreams_nested_quality_tree_is_valid_and_written_whole(tmp_path):
    quality = {"control": "grounded", "keyframes": 12, "anchor_age": 3, "metrics": {"sharpness": 0.41, "contrast": None},
               "novelty": np.float64(0.2), "deviation": {"sharpness": -0.1}, "events": {"anchor": 1, "collapse": 0},
               "last_event": "", "cost_ms": {"observe": 1.25}, "flags": [True, False]}
    assert validate_status(new_status(quality=quality)) == []
    data, _, js = written(tmp_path, quality=quality)
    assert data["quality"] == js["quality"] == {**quality, "novelty": 0.2}


def test_comfyui_starting_is_a_valid_state():
    assert validate_status(new_status(comfyui="starting")) == []
