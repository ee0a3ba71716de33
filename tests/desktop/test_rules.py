"""Every pause rule through pause -> hysteresis -> resume on the fake platform, the GPU rule's
guard against pausing for our own work, and the `pause:` config section."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from backend.desktop.platform import (QUNS_ACCEPTS_NOTIFICATIONS, QUNS_BUSY, QUNS_PRESENTATION_MODE,
                                      QUNS_RUNNING_D3D_FULL_SCREEN, FakePlatform, ForegroundWindow, Rect,
                                      Unavailable)
from backend.desktop.rules import PauseRules, PauseSettings, parse_pause_settings

MONITOR = Rect(0, 0, 2560, 1440)
GAME_WINDOW = ForegroundWindow("UnityWndClass", MONITOR, MONITOR, False)
DESKTOP = ForegroundWindow("WorkerW", MONITOR, MONITOR, False)
SMALL_WINDOW = ForegroundWindow("Chrome_WidgetWin_1", Rect(100, 100, 1300, 900), MONITOR, False)


def rules_for(platform: FakePlatform, **settings) -> PauseRules:
    return PauseRules(PauseSettings(**settings), platform)


# (probe, value that pauses, value that is clear, expected reason, settings)
RULES = [
    ("session_locked", True, False, "session locked", {}),
    ("display_off", True, False, "display off", {}),
    ("on_battery", True, False, "on battery", {}),
    ("notification_state", QUNS_RUNNING_D3D_FULL_SCREEN, QUNS_ACCEPTS_NOTIFICATIONS, "fullscreen game", {}),
    ("notification_state", QUNS_PRESENTATION_MODE, QUNS_ACCEPTS_NOTIFICATIONS, "presentation mode", {}),
    ("foreground_window", GAME_WINDOW, SMALL_WINDOW, "fullscreen app", {}),
    ("process_names", {"explorer.exe", "EldenRing.exe"}, {"explorer.exe"}, "eldenring.exe running",
     {"processes": ("eldenring.exe", "resolve.exe")}),
    ("gpu_utilisation", 97, 12, "GPU busy (97%)", {"gpu_checks": 1}),
]


@pytest.mark.parametrize("probe, on, off, reason, settings", RULES, ids=[r[3] for r in RULES])
def test_a_rule_pauses_at_once_and_resumes_after_two_clear_checks(probe, on, off, reason, settings):
    platform = FakePlatform(**{probe: off})
    rules = rules_for(platform, **settings)
    assert rules.check() == ""
    platform.answers[probe] = on
    assert rules.check() == reason            # pauses at the first sighting
    platform.answers[probe] = off
    assert rules.check() == reason            # one clear check: still paused
    platform.answers[probe] = on
    assert rules.check() == reason            # back again: the clear count starts over
    platform.answers[probe] = off
    assert rules.check() == reason
    assert rules.check() == ""                # two clear checks in a row: resumed


@pytest.mark.parametrize("probe, on, off, reason, settings", RULES, ids=[r[3] for r in RULES])
def test_a_rule_set_to_ignore_never_pauses(probe, on, off, reason, settings):
    name = {"notification_state": "presentation" if on == QUNS_PRESENTATION_MODE else "fullscreen",
            "foreground_window": "fullscreen", "process_names": None, "gpu_utilisation": "gpu_busy"}.get(probe, probe)
    settings = dict(settings, **({name: "ignore"} if name else {"processes": ()}))
    rules = rules_for(FakePlatform(**{probe: on}), **settings)
    assert [rules.check() for _ in range(3)] == ["", "", ""]


def test_the_desktop_in_front_does_not_pause_even_when_windows_says_busy():
    platform = FakePlatform(notification_state=QUNS_BUSY, foreground_window=DESKTOP)
    assert rules_for(platform).check() == ""
    platform.answers["foreground_window"] = GAME_WINDOW
    assert rules_for(platform).check() == "fullscreen app"


def test_the_first_rule_in_order_names_the_pause_and_the_next_takes_over_when_it_clears():
    platform = FakePlatform(session_locked=True, on_battery=True)
    rules = rules_for(platform)
    assert rules.check() == "session locked"
    platform.answers["session_locked"] = False
    assert rules.check() == "session locked"
    assert rules.check() == "on battery"


def test_process_names_match_without_case_and_with_or_without_exe():
    platform = FakePlatform(process_names={"Resolve"})  # Linux names carry no .exe
    assert rules_for(platform, processes=("Resolve.EXE",)).check() == "Resolve.EXE running"
    platform.answers["process_names"] = {"resolve.exe"}
    assert rules_for(platform, processes=("resolve",)).check() == "resolve running"
    platform.answers["process_names"] = {"resolver.exe"}
    assert rules_for(platform, processes=("resolve",)).check() == ""


def test_the_gpu_rule_needs_several_busy_checks_in_a_row():
    platform = FakePlatform(gpu_utilisation=95)
    rules = rules_for(platform, gpu_checks=3, gpu_threshold=80)
    assert [rules.check() for _ in range(2)] == ["", ""]
    platform.answers["gpu_utilisation"] = 40            # a dip starts the count over
    assert rules.check() == ""
    platform.answers["gpu_utilisation"] = 80
    assert [rules.check() for _ in range(3)] == ["", "", "GPU busy (80%)"]
    platform.answers["gpu_utilisation"] = 93
    assert rules.check() == "GPU busy (80%)"            # the reason stays put while paused
    platform.answers["gpu_utilisation"] = 5
    assert [rules.check() for _ in range(2)] == ["GPU busy (80%)", ""]


def test_the_gpu_rule_cannot_trigger_itself_while_our_own_work_runs():
    ours = {"running": True}
    platform = FakePlatform(gpu_utilisation=100)
    rules = PauseRules(PauseSettings(gpu_checks=2), platform, own_work_running=lambda: ours["running"])
    assert [rules.check() for _ in range(10)] == [""] * 10
    assert platform.calls.get("gpu_utilisation", 0) == 0  # not even asked: the load would be ours
    ours["running"] = False                               # idle now, and still busy: someone else
    assert [rules.check() for _ in range(2)] == ["", "GPU busy (100%)"]


def test_checks_made_while_our_work_runs_neither_count_nor_reset_the_gpu_evidence():
    ours = {"running": False}
    rules = PauseRules(PauseSettings(gpu_checks=2), FakePlatform(gpu_utilisation=90),
                       own_work_running=lambda: ours["running"])
    assert rules.check() == ""
    ours["running"] = True
    assert rules.check() == ""
    ours["running"] = False
    assert rules.check() == "GPU busy (90%)"


def test_a_rule_this_machine_cannot_answer_is_logged_once_and_never_pauses(caplog):
    platform = FakePlatform(gpu_utilisation=Unavailable("GPU load needs nvidia-ml-py (pip install nvidia-ml-py)"),
                            on_battery=RuntimeError("driver glitch"))
    rules = rules_for(platform, gpu_checks=1)
    with caplog.at_level(logging.INFO, logger="backend.desktop.rules"):
        assert [rules.check() for _ in range(3)] == ["", "", ""]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("pip install nvidia-ml-py" in m for m in messages) == 1
    assert sum("driver glitch" in m for m in messages) == 1


def test_on_linux_every_rule_is_clean_and_nothing_pauses():
    from backend.desktop.platform import PortablePlatform

    rules = PauseRules(PauseSettings(processes=("no-such-process-here.exe",)), PortablePlatform())
    assert rules.check() == ""


def test_poll_looks_once_per_check_interval():
    now = [100.0]
    platform = FakePlatform(on_battery=True)
    rules = PauseRules(PauseSettings(check_every=2.0), platform, clock=lambda: now[0])
    assert rules.poll() == "on battery"
    platform.answers["on_battery"] = False
    now[0] += 1.9
    assert rules.poll() == "on battery" and platform.calls["on_battery"] == 1
    now[0] += 0.1
    rules.poll()
    now[0] += 2.0
    assert rules.poll() == "" and platform.calls["on_battery"] == 3


def test_sync_switches_the_new_reason_on_before_the_old_one_off():
    calls: list[tuple[str, bool]] = []
    now = [0.0]
    platform = FakePlatform(process_names={"game.exe"})
    rules = PauseRules(PauseSettings(processes=("game.exe",)), platform, clock=lambda: now[0])

    def set_paused(reason: str, on: bool) -> None:
        calls.append((reason, on))

    rules.sync(set_paused)
    platform.answers["session_locked"] = True
    now[0] += 2.0
    rules.sync(set_paused)
    platform.answers.update(session_locked=False, process_names=set())
    for _ in range(3):
        now[0] += 2.0
        rules.sync(set_paused)
    assert calls == [("game.exe running", True), ("session locked", True), ("game.exe running", False),
                     ("session locked", False)]


def test_an_edit_that_turns_a_rule_to_ignore_lets_its_pause_go_at_once():
    rules = rules_for(FakePlatform(on_battery=True))
    assert rules.check() == "on battery"
    rules.update(PauseSettings(on_battery="ignore"))
    assert rules.check() == ""


def test_the_pause_section_parses_with_defaults_and_values():
    settings, problems = parse_pause_settings({"on_battery": "IGNORE", "processes": ["game.exe", " obs64.exe "],
                                               "gpu_threshold": 90})
    assert problems == []
    assert settings == dataclasses.replace(PauseSettings(), on_battery="ignore", gpu_threshold=90,
                                           processes=("game.exe", "obs64.exe"))
    assert parse_pause_settings(None) == (PauseSettings(), [])


def test_the_pause_section_names_every_problem_with_its_key_path():
    _, problems = parse_pause_settings({"fullscreen": "sometimes", "gpu_threshold": 0, "processes": "game.exe",
                                        "on_batery": "pause"}, "pause")
    assert len(problems) == 4
    assert "pause.on_batery: unknown key (did you mean 'on_battery'?)" in problems
    assert any(p.startswith("pause.fullscreen: must be one of pause, ignore") for p in problems)
    assert any(p.startswith("pause.gpu_threshold: must be between 1 and 100") for p in problems)
    assert any(p.startswith("pause.processes: must be a list of names") for p in problems)
