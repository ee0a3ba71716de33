"""backend/control.py through the file, written exactly the way Rainmeter's !WriteKeyValue writes it."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.control import MAX_STEP, COMMANDS, ControlFile, default_control_path, locate_control_file, rainmeter_skins_dir
from tests.rainmeter.rm_profile import write_key

TEMPLATE = Path(__file__).resolve().parent.parent / "rainmeter" / "Reverie" / "@Resources" / "Control.ini"
SETTLE = 0.05  # > Linux's coarse mtime tick, so equal (mtime, size) signatures cannot hide a write


class Skin:
    """The skin's side: in-memory counters (its [Variables]) and the writes one click makes.

    Mirrors the ContextAction of rainmeter/Reverie/Reverie.ini: every #Var# is resolved when the
    menu item is clicked, then ControlSeq, <Stem>Seq and <Stem>Count are written in that order."""

    def __init__(self, path: Path, **write_options) -> None:
        self.path = path
        self.vars = {"ControlSeq": 0, **{f"{s}Count": 0 for s in COMMANDS.values()}}
        self.write_options = write_options

    def click(self, command: str) -> None:
        stem = COMMANDS[command]
        seq, count = self.vars["ControlSeq"] + 1, self.vars[f"{stem}Count"] + 1
        self.vars["ControlSeq"], self.vars[f"{stem}Count"] = seq, count
        for key, value in (("ControlSeq", seq), (f"{stem}Seq", seq), (f"{stem}Count", count)):
            write_key(self.path, "Variables", key, str(value), **self.write_options)


@pytest.fixture
def control_ini(tmp_path: Path) -> Path:
    path = tmp_path / "Control.ini"
    shutil.copyfile(TEMPLATE, path)
    return path


def settled_poll(control: ControlFile) -> list[str]:
    """Poll once the last write has rested longer than `settle`."""
    time.sleep(SETTLE * 1.5)
    return control.poll()


def test_first_poll_is_a_baseline_that_applies_nothing(control_ini: Path) -> None:
    Skin(control_ini).click("pause")
    assert settled_poll(ControlFile(control_ini, settle=SETTLE)) == []


def test_a_baseline_taken_right_after_a_write_keeps_the_next_click(control_ini: Path) -> None:
    # The daemon starts a moment after the skin wrote the file: the baseline must be that file,
    # not the first settled read, which would already hold the click made meanwhile.
    control = ControlFile(control_ini, settle=30.0)  # nothing written here rests that long
    control.baseline()
    control.settle = SETTLE
    Skin(control_ini).click("quit")
    assert settled_poll(control) == ["quit"]


def test_a_click_is_returned_once(control_ini: Path) -> None:
    control, skin = ControlFile(control_ini, settle=SETTLE), Skin(control_ini)
    settled_poll(control)
    skin.click("next_prompt")
    assert settled_poll(control) == ["next_prompt"]
    assert settled_poll(control) == []


def test_every_command_name_round_trips(control_ini: Path) -> None:
    control, skin = ControlFile(control_ini, settle=SETTLE), Skin(control_ini)
    settled_poll(control)
    for name in COMMANDS:
        skin.click(name)
        assert settled_poll(control) == [name]


def test_clicks_between_two_polls_come_back_in_click_order(control_ini: Path) -> None:
    control, skin = ControlFile(control_ini, settle=SETTLE), Skin(control_ini)
    settled_poll(control)
    for name in ["resume", "new_keyframe", "next_prompt", "pause", "next_prompt", "next_prompt"]:
        skin.click(name)
    # repeats of one command share its last Seq, so they come back together at its last place
    assert settled_poll(control) == ["resume", "new_keyframe", "pause", "next_prompt", "next_prompt", "next_prompt"]


def test_a_restarted_daemon_does_not_reapply_old_commands(control_ini: Path) -> None:
    skin = Skin(control_ini)
    first = ControlFile(control_ini, settle=SETTLE)
    settled_poll(first)
    skin.click("quit")
    assert settled_poll(first) == ["quit"]
    second = ControlFile(control_ini, settle=SETTLE)
    assert settled_poll(second) == []
    skin.click("pause")
    assert settled_poll(second) == ["pause"]


def test_a_fresh_write_is_not_read_before_it_settles(control_ini: Path) -> None:
    control, skin = ControlFile(control_ini, settle=0.5), Skin(control_ini)
    os.utime(control_ini, (time.time() - 10, time.time() - 10))
    control.poll()
    skin.click("pause")
    assert control.poll() == []
    time.sleep(0.6)
    assert control.poll() == ["pause"]


def test_a_missing_file_is_tolerated_and_used_once_it_appears(tmp_path: Path) -> None:
    path = tmp_path / "Control.ini"
    control = ControlFile(path, settle=SETTLE)
    assert control.poll() == []
    shutil.copyfile(TEMPLATE, path)
    assert settled_poll(control) == []  # baseline
    Skin(path).click("toggle_pause")
    assert settled_poll(control) == ["toggle_pause"]


@pytest.mark.parametrize("content", [b"", b"[Variables]\r\nControlSeq=3\r\nPauseCount=1", b"\xff\xfe[\x00V\x00a"])
def test_empty_cut_off_or_odd_utf16_content_is_ignored_until_complete(control_ini: Path, content: bytes) -> None:
    control, skin = ControlFile(control_ini, settle=SETTLE), Skin(control_ini)
    settled_poll(control)
    skin.click("pause")
    full = control_ini.read_bytes()
    control_ini.write_bytes(content)
    assert settled_poll(control) == []
    control_ini.write_bytes(full)
    assert settled_poll(control) == ["pause"]


def test_a_utf16le_control_file_with_bom_is_read(control_ini: Path) -> None:
    control_ini.write_bytes(b"\xff\xfe" + control_ini.read_bytes().decode("ascii").encode("utf-16-le"))
    control, skin = ControlFile(control_ini, settle=SETTLE), Skin(control_ini)
    settled_poll(control)
    skin.click("new_keyframe")
    assert control_ini.read_bytes()[:2] == b"\xff\xfe"  # !WriteKeyValue keeps the encoding
    assert settled_poll(control) == ["new_keyframe"]


def test_a_counter_that_goes_down_rebaselines_without_applying(control_ini: Path) -> None:
    control, skin = ControlFile(control_ini, settle=SETTLE), Skin(control_ini)
    settled_poll(control)
    skin.click("pause")
    assert settled_poll(control) == ["pause"]
    shutil.copyfile(TEMPLATE, control_ini)  # skin reinstalled: counters back to zero
    assert settled_poll(control) == []
    Skin(control_ini).click("resume")
    assert settled_poll(control) == ["resume"]


def test_a_concurrent_writer_loses_and_duplicates_nothing(control_ini: Path) -> None:
    """The skin clicks while the daemon polls every 10 ms; the writer leaves the file empty
    and then half-written for a moment on every key, as Rainmeter's in-place rewrite does."""
    control = ControlFile(control_ini, settle=SETTLE)
    settled_poll(control)
    clicks = [list(COMMANDS)[i % len(COMMANDS)] for i in range(24)]
    skin = Skin(control_ini, pause_after_truncate=0.002, chunk=64)

    def clicker() -> None:
        for i, name in enumerate(clicks):
            skin.click(name)
            time.sleep(0.03 if i % 3 else 0.2)

    thread = threading.Thread(target=clicker)
    thread.start()
    received: list[str] = []
    while thread.is_alive():
        received += control.poll()
        time.sleep(0.01)
    thread.join()
    received += settled_poll(control)
    assert sorted(received) == sorted(clicks)
    assert len(received) == len(clicks)


def test_a_click_is_seen_within_a_second_when_polled_every_quarter_second(control_ini: Path) -> None:
    control, skin = ControlFile(control_ini), Skin(control_ini)  # default settle (0.15 s)
    time.sleep(0.2)
    control.poll()
    skin.click("next_prompt")
    start = time.monotonic()
    got: list[str] = []
    while not got and time.monotonic() - start < 2.0:
        time.sleep(0.25)
        got = control.poll()
    assert got == ["next_prompt"]
    assert time.monotonic() - start < 1.0


def test_skins_dir_comes_from_rainmeter_ini_skinpath_in_utf16(tmp_path: Path) -> None:
    rm_dir = tmp_path / "AppData" / "Rainmeter"
    rm_dir.mkdir(parents=True)
    ini = "[Rainmeter]\r\nSkinPath=" + str(tmp_path / "MySkins") + "\\\r\n"
    (rm_dir / "Rainmeter.ini").write_bytes(b"\xff\xfe" + ini.encode("utf-16-le"))
    env = {"APPDATA": str(tmp_path / "AppData"), "USERPROFILE": str(tmp_path)}
    assert rainmeter_skins_dir(env) == Path(str(tmp_path / "MySkins") + "\\")


def test_skins_dir_falls_back_to_documents_and_control_path_follows(tmp_path: Path) -> None:
    env = {"USERPROFILE": str(tmp_path)}
    assert rainmeter_skins_dir(env) is None and default_control_path(env) is None
    skins = tmp_path / "Documents" / "Rainmeter" / "Skins"
    skins.mkdir(parents=True)
    assert default_control_path(env) == skins / "Reverie" / "@Resources" / "Control.ini"


def test_locate_auto_finds_the_installed_skin_and_a_configured_path_is_used_as_given(tmp_path: Path) -> None:
    skins = tmp_path / "Documents" / "Rainmeter" / "Skins"
    skins.mkdir(parents=True)
    env = {"USERPROFILE": str(tmp_path)}
    configured = tmp_path / "portable" / "Control.ini"
    assert locate_control_file(None, env) is None
    assert locate_control_file("auto", env) == skins / "Reverie" / "@Resources" / "Control.ini"
    assert locate_control_file("auto", {}) is None
    assert locate_control_file(configured, env) == configured
    assert locate_control_file(configured, {}) == configured


# -- garbage in the file ---------------------------------------------------------------------------

def control_bytes(values: dict[str, str | None], *, sentinel: bool = True) -> bytes:
    """A control file with the template's keys, `values` overriding them (None drops the key)."""
    keys = {"ControlSeq": "0", **{f"{s}{k}": "0" for s in COMMANDS.values() for k in ("Count", "Seq")}}
    keys.update(values)
    lines = ["[Variables]", *(f"{k}={v}" for k, v in keys.items() if v is not None), ""]
    if sentinel:
        lines.append("[ControlEnd]")
    return ("\r\n".join(lines) + "\r\n").encode("cp1252", errors="replace")


class Writes:
    """Puts contents into the control file, each with its own mtime in the past, so every write is
    settled and distinct for ControlFile without sleeping."""

    def __init__(self, path: Path) -> None:
        self.path, self.ns = path, time.time_ns() - 100 * 10**9

    def put(self, data: bytes) -> None:
        self.path.write_bytes(data)
        self.ns += 10**6
        os.utime(self.path, ns=(self.ns, self.ns))


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "backend.control" and r.levelname == "WARNING"]


@pytest.mark.parametrize("bad", ["1e400", "inf", "-inf", "nan", "1e3", "2.5", "0x10", "9" * 400, "\u0663", ""])
def test_a_count_that_is_no_whole_number_is_ignored_with_one_log_line(tmp_path, caplog, bad) -> None:
    writes, control = Writes(tmp_path / "Control.ini"), ControlFile(tmp_path / "Control.ini")
    writes.put(control_bytes({"PauseCount": "1"}))
    assert control.poll() == []
    for _ in range(3):
        writes.put(control_bytes({"PauseCount": bad, "ControlSeq": str(time.time_ns())}))
        assert control.poll() == []
    assert len(warnings(caplog)) == 1
    assert "PauseCount=" in warnings(caplog)[0]


def test_a_negative_count_then_a_file_without_that_key_applies_nothing(tmp_path, caplog) -> None:
    """The count read well before the garbage stays the reference: 0 again is no click."""
    writes, control = Writes(tmp_path / "Control.ini"), ControlFile(tmp_path / "Control.ini")
    writes.put(control_bytes({}))
    control.poll()
    writes.put(control_bytes({"PauseCount": "-5"}))
    assert control.poll() == []
    writes.put(control_bytes({"PauseCount": None}))
    assert control.poll() == []
    writes.put(control_bytes({"PauseCount": "0"}))  # good again, as before the garbage: not five clicks
    assert control.poll() == []
    writes.put(control_bytes({"PauseCount": "1", "PauseSeq": "1"}))
    assert control.poll() == ["pause"]


def test_a_count_that_jumps_by_more_than_max_step_is_a_new_baseline_not_clicks(tmp_path) -> None:
    writes, control = Writes(tmp_path / "Control.ini"), ControlFile(tmp_path / "Control.ini")
    writes.put(control_bytes({"NextPromptCount": "3"}))
    control.poll()
    writes.put(control_bytes({"NextPromptCount": str(3 + MAX_STEP + 1)}))
    assert control.poll() == []
    writes.put(control_bytes({"NextPromptCount": str(3 + MAX_STEP + 3)}))
    assert control.poll() == ["next_prompt", "next_prompt"]


def test_a_click_after_garbage_counts_from_the_last_good_value(tmp_path) -> None:
    writes, control = Writes(tmp_path / "Control.ini"), ControlFile(tmp_path / "Control.ini")
    writes.put(control_bytes({"QuitCount": "2"}))
    control.poll()
    writes.put(control_bytes({"QuitCount": "x"}))
    assert control.poll() == []
    writes.put(control_bytes({"QuitCount": "3", "QuitSeq": "5"}))
    assert control.poll() == ["quit"]


def test_a_garbage_seq_is_logged_and_only_changes_the_order(tmp_path, caplog) -> None:
    writes, control = Writes(tmp_path / "Control.ini"), ControlFile(tmp_path / "Control.ini")
    writes.put(control_bytes({}))
    control.poll()
    writes.put(control_bytes({"PauseCount": "1", "PauseSeq": "../../etc/passwd", "ResumeCount": "1",
                              "ResumeSeq": "1e400", "NextPromptCount": "1", "NextPromptSeq": "7"}))
    assert control.poll() == ["pause", "resume", "next_prompt"]
    assert len(warnings(caplog)) == 1 and "PauseSeq='../../etc/passwd'" in warnings(caplog)[0]


def test_garbage_in_one_command_does_not_hide_a_click_of_another(tmp_path) -> None:
    writes, control = Writes(tmp_path / "Control.ini"), ControlFile(tmp_path / "Control.ini")
    writes.put(control_bytes({}))
    control.poll()
    writes.put(control_bytes({"QuitCount": "inf", "NewKeyframeCount": "1", "NewKeyframeSeq": "4"}))
    assert control.poll() == ["new_keyframe"]


def test_a_damaged_file_that_stays_is_logged_once_and_read_again_once_rewritten(tmp_path, caplog) -> None:
    writes, control = Writes(tmp_path / "Control.ini"), ControlFile(tmp_path / "Control.ini")
    writes.put(control_bytes({}))
    control.poll()
    writes.put(b"\x00garbage without the end section\x01" * 3)
    for _ in range(3):
        assert control.poll() == []
    assert len(warnings(caplog)) == 1 and "not a complete Reverie control file" in warnings(caplog)[0]
    writes.put(control_bytes({"ResumeCount": "1", "ResumeSeq": "1"}))
    assert control.poll() == ["resume"]


def _oracle_counts(data: bytes) -> dict[str, int] | None:
    """Independent of ControlFile's counting: the counts a readable file holds, a command left out
    when its Count is not what the skin writes; None when the file is not readable at all."""
    from backend.control import SENTINEL_SECTION, decode_ini_bytes, parse_ini

    text = decode_ini_bytes(data)
    sections = parse_ini(text) if text is not None else {}
    if SENTINEL_SECTION not in sections:
        return None
    variables = sections.get("variables", {})

    def whole(value: str | None) -> int | None:
        if value is None:
            return None
        head, _, tail = (value[1:] if value.startswith("+") else value).partition(".")
        if not (head.isascii() and head.isdigit() and len(head) <= 15 and set(tail) <= {"0"}):
            return None
        return int(head)

    counts = {name: whole(variables.get(stem.lower() + "count")) for name, stem in COMMANDS.items()}
    return {name: count for name, count in counts.items() if count is not None}


_values = st.one_of(
    st.integers(-3, 30).map(str),
    st.sampled_from(["1e400", "inf", "-inf", "nan", "-0", "+2", "3.0", "3.5", "1e2", "", "  ", "x", "9" * 20,
                     "999999999999999", "1000000000000000", "\u0663", "0x1"]),
    st.text(max_size=12),
    st.none(),
)
_stems = [f"{s}{k}" for s in COMMANDS.values() for k in ("Count", "Seq")]
_structured = st.builds(
    lambda values, sentinel, utf16: (lambda raw: b"\xff\xfe" + raw.decode("cp1252").encode("utf-16-le")
                                     if utf16 else raw)(control_bytes(values, sentinel=sentinel)),
    st.dictionaries(st.sampled_from(_stems), _values, max_size=6), st.sampled_from([True, True, True, False]),
    st.booleans())
_any_file = st.one_of(_structured, _structured, st.binary(max_size=400))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_any_file, min_size=1, max_size=8))
def test_any_bytes_never_raise_and_yield_exactly_the_sane_count_increases(files: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "Control.ini"
        writes, control = Writes(path), ControlFile(path)
        last_good: dict[str, int] | None = None  # per command, the count of the last file where it was good
        for data in files:
            writes.put(data)
            got = Counter(control.poll())
            now = _oracle_counts(data)
            expected: Counter[str] = Counter()
            if now is not None:
                if last_good is not None:
                    for name, count in now.items():
                        delta = count - last_good.get(name, count)
                        if 0 < delta <= MAX_STEP:
                            expected[name] = delta
                last_good = {**(last_good or {}), **now}
            assert got == expected
