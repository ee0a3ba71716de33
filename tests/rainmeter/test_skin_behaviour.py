"""The installed skin run by the Rainmeter engine of rm_sim against real daemon-core output files."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from backend.control import ControlFile
from backend.status import RAINMETER_REGEXP, STATUS_KEYS, new_status
from rainmeter.install import set_ini_values
from tests.rainmeter.conftest import Daemon, Installed
from tests.rainmeter.rm_ini import Skin
from tests.rainmeter.rm_sim import RainmeterHazard, SkinSim

FIELDS = ["state", "frame", "keyframes", "fps", "prompt", "frame_file", "last_error", "target_fps", "updated",
          "pause_reason"]


def test_status_regexp_extracts_every_field_from_a_real_status_txt(installed: Installed, daemon: Daemon) -> None:
    daemon.status.write(new_status(state="waiting_for_comfyui", frame=1234, keyframes=56, fps=9.876,
                                   prompt="a dream = with | odd ; chars, and 'quotes'", frame_file=
                                   installed.output / "frames" / "frame_2.png", last_error="ComfyUI: refused",
                                   target_fps=10.0, updated=1764570000.25, pause_reason="on battery"))
    skin = installed.load()
    text = (installed.output / "status.txt").read_text("utf-8")
    groups = re.search(skin.get("MeasureStatus", "RegExp"), text).groups()
    assert dict(zip(FIELDS, groups)) == {
        "state": "waiting_for_comfyui", "frame": "1234", "keyframes": "56", "fps": "9.876",
        "prompt": "a dream = with | odd ; chars, and 'quotes'", "frame_file": "frames/frame_2.png",
        "last_error": "ComfyUI: refused", "target_fps": "10.000", "updated": "1764570000.250",
        "pause_reason": "on battery"}
    # the same values as daemon-core's fixed-order pattern gives (translated: PCRE's U = lazy)
    reference = re.search(RAINMETER_REGEXP.replace("(?siU)", "(?si)").replace("(.*)", "(.*?)"), text).groups()
    by_key = dict(zip(STATUS_KEYS, reference))
    assert [by_key[f] for f in FIELDS] == list(groups)


def test_status_regexp_does_not_depend_on_line_order(installed: Installed, daemon: Daemon) -> None:
    daemon.show(3)
    lines = (installed.output / "status.txt").read_text("utf-8").splitlines()
    shuffled = "\r\n".join(reversed(lines)) + "\r\n"
    match = re.search(installed.load().get("MeasureStatus", "RegExp"), shuffled)
    assert match.group(2) == "3" and match.group(6) == "frames/frame_0.png"


def test_no_status_file_shows_the_offline_line(installed: Installed) -> None:
    (installed.output / "status.txt").unlink()  # install.py made one; the folder was wiped since
    sim = installed.sim()
    assert "meteroffline" in sim.hidden
    sim.update()
    assert "meteroffline" not in sim.hidden
    assert len(sim.log) == 1 and "Fetch error" in sim.log[0]  # WebParser logs every failed read


def test_a_fresh_install_reads_stopped_without_errors(installed: Installed) -> None:
    sim = installed.sim()
    for _ in range(3):
        sim.update()
    assert "meteroffline" in sim.hidden and sim.log == []
    assert sim.meter_text("MeterStatusLine").startswith("stopped (right-click > Start Reverie)  |  frame 0")


def test_every_new_frame_is_shown_exactly_and_the_window_never_goes_blank(installed: Installed, daemon: Daemon) -> None:
    sim = installed.sim()
    sim.update()
    for index in range(12):  # 4 times round the ring of 3
        frame = daemon.show(index, fps=10.0)
        sim.update()
        assert np.array_equal(sim.composite(), frame), f"frame {index} not on screen"
        assert "meteroffline" in sim.hidden
    assert sim.log == []


def test_slow_frames_fade_in_and_the_fade_ends_before_the_next_frame(installed: Installed, daemon: Daemon) -> None:
    sim = installed.sim()
    for index, fps in enumerate([1.0, 1.0, 1.0, 2.0]):  # the first fades in from the placeholder
        before = sim.timer_ms
        frame = daemon.show(index, fps=fps)
        sim.update()
        sim.settle()  # the frames are 0.5-1 s apart: the fade's list runs to its end meanwhile
        fade_ms = sim.timer_ms - before
        assert 0 < fade_ms < 1000 / fps / 2, f"fade of {fade_ms} ms at {fps} fps"
        assert np.array_equal(sim.composite(), frame)
        assert sim.images["metertop"].alpha == 255 and sim.variables["fadebusy"] == "0"


def test_a_frame_arriving_mid_fade_is_cut_in_and_stays_fully_shown(installed: Installed, daemon: Daemon) -> None:
    sim = installed.sim()
    daemon.show(0, fps=1.0)
    sim.update()
    sim.settle()
    daemon.show(1, fps=1.0)
    sim.update()  # fade of frame 1 starts (ActionList2; frame 0 used 1), 100 ms of its 176 ms pass before the next update
    assert 0 < sim.images["metertop"].alpha < 255
    frame = daemon.show(2, fps=1.0)  # the fps estimate lags: frames come faster than it says
    sim.update()
    assert np.array_equal(sim.composite(), frame)  # cut in at once, not lost
    sim.settle()  # the rest of frame 1's fade only raises the alpha, which is already 255
    assert np.array_equal(sim.composite(), frame) and sim.images["metertop"].alpha == 255
    frame = daemon.show(3, fps=1.0)
    sim.update()
    sim.settle()  # the next slow frame fades again, on the other list
    assert np.array_equal(sim.composite(), frame) and sim.variables["fadelist"] == "1"


def test_the_first_read_fires_one_trigger_and_never_stops_a_list(installed: Installed, daemon: Daemon) -> None:
    """Rainmeter's WebParser fills its children one update after the read starts (fetch thread),
    so a skin loaded while the daemon runs sees every field change on that update at once. The old
    skin then ran Execute 2 (IfMatch) and Stop 2 (OnChangeAction) on a wait-free list in the same
    instant: a Stop that can hang Rainmeter 4.5 (rm_sim raises RainmeterHazard)."""
    for fps in (10.0, 1.0):  # cut path and fade path
        frame = daemon.show(7, fps=fps)
        sim = SkinSim(installed.load(), async_fetch=True)
        placeholder = sim.composite()
        sim.update()  # read started; the children are still empty
        assert np.array_equal(sim.composite(), placeholder)
        sim.update()  # values arrive: exactly one trigger
        sim.settle()
        assert np.array_equal(sim.composite(), frame) and sim.variables.get("shownframe") == "7"
        for index in (8, 9):
            frame = daemon.show(index, fps=fps)
            sim.update()
            sim.update()
            sim.settle()
            assert np.array_equal(sim.composite(), frame)
        assert sim.log == []


def test_the_engine_flags_the_stop_race_and_wait_0(installed: Installed, daemon: Daemon) -> None:
    """rm_sim itself: Stop of a list running outside a Wait and a Wait of 0 are refused."""
    skin: Skin = installed.load()
    skin.values[("measurefade", "actionlist3")] = "FadeEnd"
    skin.values[("measurefade", "actionlist4")] = "Wait 0"
    skin.keys["measurefade"] += ["ActionList3", "ActionList4"]
    sim = SkinSim(skin)
    sim.bang_commandmeasure("MeasureFade", "Stop 3")  # never started: returns at once
    sim.bang_commandmeasure("MeasureFade", "Execute 3")
    with pytest.raises(RainmeterHazard, match="hangs"):
        sim.bang_commandmeasure("MeasureFade", "Stop 3")  # its thread may be finishing right now
    sim.bang_commandmeasure("MeasureFade", "Execute 1")
    sim.pump(sim.clock_ms + 10)
    sim.bang_commandmeasure("MeasureFade", "Stop 1")  # inside a Wait: interrupted, no hang
    with pytest.raises(RainmeterHazard, match="command"):
        sim.bang_commandmeasure("MeasureFade", "Execute 4")


def test_fast_frames_cut_without_a_fade(installed: Installed, daemon: Daemon) -> None:
    sim = installed.sim()
    for index in range(4):
        before, redraws = sim.timer_ms, sim.redraws
        daemon.show(index, fps=8.0)
        sim.update()
        assert sim.timer_ms == before and sim.redraws == redraws + 1


def test_the_picture_files_are_not_touched_while_no_new_frame_arrives(installed: Installed, daemon: Daemon) -> None:
    sim = installed.sim()
    daemon.show(0, fps=10.0)
    sim.update()
    opens, decodes = sim.opens, sim.decodes
    for _ in range(50):  # five seconds of skin updates with the daemon paused
        sim.update()
    assert (sim.opens, sim.decodes) == (opens, decodes)


def test_a_refreshed_skin_shows_the_last_frame_of_a_stopped_daemon(installed: Installed, daemon: Daemon) -> None:
    frame = daemon.show(41, state="stopped")
    sim = installed.sim()  # a refresh: everything starts from scratch
    sim.update()
    assert np.array_equal(sim.composite(), frame)


def test_a_ring_slot_rewritten_with_new_content_is_reloaded(installed: Installed, daemon: Daemon) -> None:
    """Same path, new mtime: Rainmeter's HasFileChanged says changed, so it re-decodes. Random
    frames all have the same PNG size, so only the mtime differs: the writes must be more than one
    clock tick apart (a ring of 3 makes it 3 frame periods: 50 ms at 60 fps, > 16 ms on Windows)."""
    sim = installed.sim()
    shown = [daemon.show(i, fps=10.0) for i in range(1)]
    sim.update()
    for index in (3, 6):  # frame_0.png again each time
        time.sleep(0.03)
        shown.append(daemon.show(index, fps=10.0))
        sim.update()
        assert sim.images["metertop"].path.name == "frame_0.png"
        assert np.array_equal(sim.composite(), shown[-1])


def test_a_static_image_meter_on_current_frame_png_would_never_reload(installed: Installed, daemon: Daemon) -> None:
    """Why the skin does not simply show current_frame.png: a hard-coded ImageName is read once."""
    first = daemon.show(0)
    skin: Skin = installed.load()
    skin.values[("metertop", "imagename")] = str(installed.output / "current_frame.png")
    skin.values[("measurenewframe", "iftrueaction")] = ""
    skin.values[("measurenewframe", "iftrueaction2")] = ""
    sim = SkinSim(skin)
    assert np.array_equal(sim.composite(), first)
    daemon.show(1)
    for _ in range(5):
        sim.update()
    assert np.array_equal(sim.composite(), first)


def test_context_menu_commands_reach_the_daemon_through_control_ini(installed: Installed) -> None:
    control = ControlFile(installed.skin_dir / "@Resources" / "Control.ini", settle=0.0)
    assert control.poll() == []  # baseline
    sim = installed.sim()
    for title in ["Pause / resume", "Next prompt", "New keyframe now", "Stop Reverie"]:
        sim.click_context(title)
    assert control.poll() == ["toggle_pause", "next_prompt", "new_keyframe", "quit"]
    sim.click_context("Next prompt")
    assert control.poll() == ["next_prompt"]
    # a refresh re-reads the counters from Control.ini (it is @Included), so nothing is replayed
    refreshed = installed.sim()
    refreshed.click_context("Pause / resume")
    assert control.poll() == ["toggle_pause"]


def test_open_and_start_items_run_the_right_programs(installed: Installed) -> None:
    sim = installed.sim()
    for title in ["Open output folder", "Open config.yaml", "Start Reverie"]:
        sim.click_context(title)
    out = str(installed.output) + "/"
    assert sim.run_commands[0] == f'"{out}"'
    assert sim.run_commands[1].startswith('"notepad.exe" "') and sim.run_commands[1].endswith('config.yaml"')
    assert sim.run_commands[2].startswith('"/usr/bin/python3" "') and "backend\\main.py\" --config" in sim.run_commands[2]


def test_a_status_without_a_frame_file_leaves_the_picture_alone(installed: Installed, daemon: Daemon) -> None:
    """A daemon (re)starting writes frame 0 with no frame_file before its first picture."""
    sim = installed.sim()
    last = [daemon.show(i, fps=10.0) for i in range(7)][-1]
    sim.update()
    daemon.status.write(new_status(state="starting", frame=0))  # frame_file "" (restart)
    sim.update()
    assert sim.measures["measurestate"][1] == "starting"
    assert np.array_equal(sim.composite(), last) and sim.log == []
    first = daemon.show(0, fps=10.0)
    sim.update()
    assert np.array_equal(sim.composite(), first) and sim.log == []


def test_a_skin_loaded_before_the_first_frame_keeps_its_placeholder(installed: Installed, daemon: Daemon) -> None:
    sim = installed.sim()
    placeholder = sim.composite()
    daemon.status.write(new_status(state="waiting_for_comfyui", frame=0))
    sim.update()
    daemon.status.write(new_status(state="waiting_for_comfyui", frame=1))
    sim.update()
    assert sim.measures["measurestate"][1] == "waiting for ComfyUI"
    assert np.array_equal(sim.composite(), placeholder) and sim.log == []


def test_a_dynamic_meter_on_current_frame_png_reloads_but_opens_the_file_every_update(
        installed: Installed, daemon: Daemon) -> None:
    """The alternative the skin rejects: DynamicVariables=1 re-checks the picture on every update
    (10 opens a second, each one able to block the daemon's replace on Windows)."""
    daemon.show(0)
    skin: Skin = installed.load()
    skin.values[("metertop", "imagename")] = str(installed.output / "current_frame.png")
    skin.values[("metertop", "dynamicvariables")] = "1"
    skin.values[("measurenewframe", "iftrueaction")] = ""
    skin.values[("measurenewframe", "iftrueaction2")] = ""
    sim = SkinSim(skin)
    sim.update()
    opens = sim.opens
    for _ in range(10):
        sim.update()
    assert sim.opens - opens == 10  # one open per update even though nothing changed
    time.sleep(0.03)
    second = daemon.show(1)
    sim.update()
    assert np.array_equal(sim.composite(), second)


def test_a_daemon_that_stopped_writing_shows_not_responding(installed: Installed, daemon: Daemon) -> None:
    """status.txt's `updated` (unix time) against the Time measure: older than StaleSeconds (5), or
    than 3 frame periods at a low fps, and the state word becomes "not responding"."""
    sim = installed.sim()
    offset = 0.0
    sim.now = lambda: time.time() + offset

    def line() -> str:
        sim.update()
        return sim.meter_text("MeterStatusLine")

    daemon.show(3, fps=10.0)
    assert line().startswith("live  |  frame 3  |")
    offset = 4.0
    assert line().startswith("live  |")
    offset = 7.0  # killed: nothing was written for 7 s
    assert line().startswith("not responding (last: live)  |  frame 3  |")
    daemon.status.write(new_status(state="waiting_for_comfyui", frame=3, target_fps=10.0))
    assert line().startswith("not responding (last: waiting for ComfyUI)  |")
    offset = 0.0
    assert line().startswith("waiting for ComfyUI  |")
    daemon.show(4, fps=0.1)  # one frame every 10 s: stale only after 30 s
    offset = 20.0
    assert line().startswith("live  |  frame 4")
    offset = 31.0
    assert line().startswith("not responding")
    for final in ("stopped", "error", "starting"):  # not judged: final, or a slow start
        daemon.status.write(new_status(state=final, frame=4, target_fps=10.0))
        assert not line().startswith("not responding")
    assert sim.log == []


def test_a_pause_with_a_reason_reads_paused_colon_reason(installed: Installed, daemon: Daemon) -> None:
    sim = installed.sim()

    def line(**fields) -> str:
        daemon.status.write(new_status(frame=5, target_fps=10.0, **fields))
        sim.update()
        return sim.meter_text("MeterStatusLine")

    assert line(state="paused", pause_reason="skin").startswith("paused: skin  |  frame 5  |")
    assert line(state="paused", pause_reason="full screen | game").startswith("paused: full screen | game  |")
    assert line(state="paused").startswith("paused  |  frame 5")  # no reason given
    assert line(state="live", pause_reason="stale reason").startswith("live  |  frame 5")  # only while paused
    sim.now = lambda: time.time() + 7.0  # the daemon stopped writing 7 s ago
    assert line(state="paused", pause_reason="skin").startswith("not responding (last: paused)")
    assert sim.log == []


def test_fps_is_rounded_to_one_decimal_like_the_web_page(installed: Installed, daemon: Daemon) -> None:
    """The same cases and the same expected text as tests/web (9.876 -> 9.9, the old RegExp cut it
    to 9.8; 9.35 -> 9.4): Round(MeasureFps, 1) shown with NumOfDecimals=1."""
    from tests.web.test_web_page import FPS_CASES, rainmeter_fps_text
    sim = installed.sim()
    for index, fps in enumerate(FPS_CASES):
        daemon.show(index, fps=fps)
        sim.update()
        assert sim.meter_text("MeterStatusLine").endswith(f"  |  {rainmeter_fps_text(fps)} fps"), fps


def test_fadesteps_0_turns_fading_off(installed: Installed, daemon: Daemon) -> None:
    set_ini_values(installed.skin_dir / "@Resources" / "Variables.inc", "Variables", {"FadeSteps": "0"})
    sim = installed.sim()
    for index in range(3):
        frame = daemon.show(index, fps=0.5)
        sim.update()
        assert np.array_equal(sim.composite(), frame) and sim.timer_ms == 0 and sim.workers == {}
