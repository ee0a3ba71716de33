"""Pause rules: when the user needs the PC (a game, a locked screen, a battery), Reverie rests.

`PauseRules.check()` asks the platform once per rule and answers "" or the first active
reason ("fullscreen app", "game.exe running", "GPU busy (93%)", ...). Hysteresis: a rule pauses
at the first check that sees its condition and lets go only after `resume_after` checks in a
row see it clear, so a game's loading screen or an Alt-Tab does not flap the dream on and off.

The GPU rule cannot trigger itself: a check made while Reverie or ComfyUI has work running
(`own_work_running()`) is no evidence either way, and the rule needs `gpu_checks` idle checks in
a row at or above `gpu_threshold`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from backend.config_checks import Bad, Section, boolean, choice, integer, number, show
from backend.desktop.platform import (QUNS_PRESENTATION_MODE, QUNS_RUNNING_D3D_FULL_SCREEN, DesktopPlatform,
                                      Unavailable, is_fullscreen)

log = logging.getLogger(__name__)

RULE = ("pause", "ignore")


@dataclass(frozen=True)
class PauseSettings:
    enabled: bool = True                  # False: no rule is checked (the skin's Pause still works)
    check_every: float = 2.0              # seconds between two looks at the desktop, 0.5..60
    resume_after: int = 2                 # clear checks in a row before a rule lets the dream go on, 1..100
    fullscreen: str = "pause"             # a game or app filling its monitor: "pause" | "ignore"
    presentation: str = "pause"           # Windows presentation mode: "pause" | "ignore"
    session_locked: str = "pause"         # the session is locked: "pause" | "ignore"
    display_off: str = "pause"            # the display is off: "pause" | "ignore"
    on_battery: str = "pause"             # running on battery: "pause" | "ignore"
    gpu_busy: str = "pause"               # someone else keeps the GPU busy (needs nvidia-ml-py): "pause" | "ignore"
    gpu_threshold: int = 80               # GPU load in percent that counts as busy, 1..100
    gpu_checks: int = 3                   # idle checks in a row at or above the threshold before pausing, 1..100
    processes: tuple[str, ...] = ()       # process names that pause while running, e.g. ["game.exe"]; [] = none
    ignore_windows: tuple[str, ...] = ()  # extra window classes that never count as fullscreen (shell ones built in)
    fullscreen_cover: float = 0.95        # share of its monitor a window must cover to count as fullscreen, 0.5..1
    free_after: float = 30.0              # seconds paused before ComfyUI is asked to unload its models, 0..3600


def _names(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise Bad(f"must be a list of names, e.g. [\"game.exe\"], got {show(value)}")
    return tuple(v.strip() for v in value)


def parse_pause_settings(raw: Any, path: str = "pause", base: Path | None = None) -> tuple[PauseSettings, list[str]]:
    """The config's `pause:` mapping -> (PauseSettings, problems as "pause.key: what is wrong")."""
    problems: list[str] = []
    s = Section(raw, path, PauseSettings, problems, base or Path.cwd())
    rule = choice(*RULE)
    settings = PauseSettings(
        enabled=s.get("enabled", boolean), check_every=s.get("check_every", number(0.5, 60.0)),
        resume_after=s.get("resume_after", integer(1, 100)),
        fullscreen=s.get("fullscreen", rule), presentation=s.get("presentation", rule),
        session_locked=s.get("session_locked", rule), display_off=s.get("display_off", rule),
        on_battery=s.get("on_battery", rule), gpu_busy=s.get("gpu_busy", rule),
        gpu_threshold=s.get("gpu_threshold", integer(1, 100)), gpu_checks=s.get("gpu_checks", integer(1, 100)),
        processes=s.get("processes", _names), ignore_windows=s.get("ignore_windows", _names),
        fullscreen_cover=s.get("fullscreen_cover", number(0.5, 1.0)),
        free_after=s.get("free_after", number(0.0, 3600.0)))
    return settings, problems


def _stem(name: str) -> str:
    """'Game.EXE' -> 'game': Windows names end in .exe, Linux ones do not; users write either."""
    name = name.strip().lower()
    return name[:-4] if name.endswith(".exe") else name


class _Latch:
    """One rule's state: on at the first sighting, off after `resume_after` clear checks in a row."""

    def __init__(self) -> None:
        self.on, self.clear, self.reason = False, 0, ""

    def update(self, seen: bool | None, reason: str, resume_after: int) -> None:
        if seen is None:      # no evidence this time: keep the state as it is
            return
        if seen:
            if not self.on:
                self.reason = reason  # kept while on, so a changing figure does not re-pause
            self.on, self.clear = True, 0
        elif self.on:
            self.clear += 1
            if self.clear >= resume_after:
                self.on, self.clear, self.reason = False, 0, ""


class PauseRules:
    """Checks the desktop against PauseSettings; `poll()` in the daemon's loop, `check()` in tests."""

    ORDER = ("session_locked", "display_off", "on_battery", "fullscreen", "presentation", "processes", "gpu_busy")

    def __init__(self, settings: PauseSettings, platform: DesktopPlatform, *,
                 own_work_running: Callable[[], bool] = lambda: False,
                 clock: Callable[[], float] = time.monotonic):
        self.settings, self.platform = settings, platform
        self.own_work_running, self.clock = own_work_running, clock
        self._latches = {name: _Latch() for name in self.ORDER}
        self._gpu_streak = 0
        self._told: set[str] = set()       # rules whose Unavailable was logged already
        self._next = clock()
        self.reason = ""                   # the answer of the last check
        self._applied = ""                 # the reason sync() has handed to the daemon

    def update(self, settings: PauseSettings) -> None:
        """A config edit: new settings from the next check on (latches of rules now ignored let go)."""
        self.settings = settings
        for name in self.ORDER:
            if not self._active(name):
                self._latches[name] = _Latch()

    def _active(self, name: str) -> bool:
        if not self.settings.enabled:
            return False
        return bool(self.settings.processes) if name == "processes" else getattr(self.settings, name) == "pause"

    def poll(self) -> str:
        """check() when `check_every` has passed since the last one, else the last answer."""
        now = self.clock()
        if now >= self._next:
            self._next = now + self.settings.check_every
            self.check()
        return self.reason

    def sync(self, set_paused: Callable[[str, bool], None]) -> str:
        """poll() and hand changes to the daemon's `set_paused(reason, on)`: the new reason is
        switched on before the old one off, so a change of reason never resumes for a moment."""
        reason = self.poll()
        if reason != self._applied:
            old, self._applied = self._applied, reason
            if reason:
                set_paused(reason, True)
            if old:
                set_paused(old, False)
        return reason

    def check(self) -> str:
        """Look once: "" (carry on) or the reason of the first rule that holds the dream."""
        for name in self.ORDER:
            latch = self._latches[name]
            if not self._active(name):
                continue
            seen, reason = self._look(name)
            latch.update(seen, reason, self.settings.resume_after)
        self.reason = next((self._latches[n].reason for n in self.ORDER if self._latches[n].on), "")
        return self.reason

    def _look(self, name: str) -> tuple[bool | None, str]:
        try:
            return getattr(self, "_" + name)()
        except Unavailable as exc:
            if name not in self._told:
                self._told.add(name)
                log.info("pause rule %s is off here: %s", name, exc)
            return False, ""
        except Exception as exc:  # noqa: BLE001 - a desktop probe must never stop the dream
            if name not in self._told:
                self._told.add(name)
                log.warning("pause rule %s failed and is treated as clear: %s: %s", name, type(exc).__name__, exc)
            return False, ""

    # -- one method per rule: (condition seen? None = no evidence, reason) ----------------------
    def _session_locked(self) -> tuple[bool | None, str]:
        return self.platform.session_locked(), "session locked"

    def _display_off(self) -> tuple[bool | None, str]:
        return self.platform.display_off(), "display off"

    def _on_battery(self) -> tuple[bool | None, str]:
        return self.platform.on_battery(), "on battery"

    def _fullscreen(self) -> tuple[bool | None, str]:
        state = self._notification_state()
        if state == QUNS_RUNNING_D3D_FULL_SCREEN:
            return True, "fullscreen game"
        try:
            window = self.platform.foreground_window()
        except Unavailable:
            if state is None:
                raise
            window = None
        if window is None:
            return False, ""
        # QUNS_BUSY also means "a fullscreen app", but only a window that really fills its monitor
        # (and is not the desktop or a widget) is taken as one.
        full = is_fullscreen(window, threshold=self.settings.fullscreen_cover,
                             ignore_classes=frozenset(self.settings.ignore_windows))
        return full, "fullscreen app"

    def _presentation(self) -> tuple[bool | None, str]:
        state = self._notification_state()
        if state is None:
            raise Unavailable("presentation mode cannot be detected here")
        return state == QUNS_PRESENTATION_MODE, "presentation mode"

    def _notification_state(self) -> int | None:
        try:
            return self.platform.notification_state()
        except Unavailable:
            return None

    def _processes(self) -> tuple[bool | None, str]:
        running = {_stem(n) for n in self.platform.process_names()}
        for wanted in self.settings.processes:
            if _stem(wanted) in running:
                return True, f"{wanted} running"
        return False, ""

    def _gpu_busy(self) -> tuple[bool | None, str]:
        if self.own_work_running():
            return None, ""   # the load may be ours or ComfyUI's: it proves nothing
        load = self.platform.gpu_utilisation()
        self._gpu_streak = self._gpu_streak + 1 if load >= self.settings.gpu_threshold else 0
        return self._gpu_streak >= self.settings.gpu_checks, f"GPU busy ({load}%)"

