"""backend/control.py through the file, written exactly the way Rainmeter's !WriteKeyValue writes it."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from backend.control import COMMANDS, ControlFile, default_control_path, locate_control_file, rainmeter_skins_dir
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
