"""What the desktop is doing right now, behind one small interface the pause rules ask.

Each probe answers a plain value or raises `Unavailable` with one sentence saying what is
missing (a Windows-only API on Linux, an optional package not installed). The rules log that
sentence once and treat the rule as "not paused"; nothing here ever stops the daemon.

`default_platform()` picks `WindowsPlatform` (ctypes, in win32.py) on Windows and
`PortablePlatform` elsewhere: process names and battery through psutil, GPU load through NVML,
everything else unknown. `FakePlatform` is for tests. Optional packages are imported on first
use, never at import time, so this module imports anywhere.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Protocol

# SHQueryUserNotificationState answers (shellapi.h QUERY_USER_NOTIFICATION_STATE)
QUNS_NOT_PRESENT = 1        # screen saver, locked, or another user's session in front
QUNS_BUSY = 2               # a full-screen application is running
QUNS_RUNNING_D3D_FULL_SCREEN = 3
QUNS_PRESENTATION_MODE = 4
QUNS_ACCEPTS_NOTIFICATIONS = 5
QUNS_QUIET_TIME = 6
QUNS_APP = 7

#: Window classes of the shell and desktop widgets: when one of these is in front the user is
#: looking at the desktop (and at Reverie), so it never counts as a fullscreen app.
SHELL_WINDOW_CLASSES = frozenset({
    "progman", "workerw",                                   # the desktop itself
    "shell_traywnd", "shell_secondarytraywnd",              # taskbars
    "notifyiconoverflowwindow", "toplevelwindowforoverflowxamlisland",  # tray overflow
    "multitaskingviewframe", "xamlexplorerhostislandwindow", "foregroundstaging",  # Alt-Tab, Task View
    "tasklistthumbnailwnd", "windows.ui.core.corewindow",   # taskbar previews, Start, search
    "lockscreenbackstopframe",
    "rainmetermeterwindow", "rainmetertrayclass",           # Rainmeter skins (Reverie's own window)
})


class Unavailable(Exception):
    """A probe this machine cannot answer; str() says what to install or why not."""


@dataclass(frozen=True)
class Rect:
    left: int
    top: int
    right: int
    bottom: int

    @property
    def area(self) -> int:
        return max(0, self.right - self.left) * max(0, self.bottom - self.top)

    def intersect(self, other: "Rect") -> "Rect":
        return Rect(max(self.left, other.left), max(self.top, other.top),
                    min(self.right, other.right), min(self.bottom, other.bottom))


@dataclass(frozen=True)
class ForegroundWindow:
    class_name: str         # GetClassNameW of the window in front
    rect: Rect              # GetWindowRect, virtual-screen pixels
    monitor: Rect           # rcMonitor of the monitor it is mostly on
    maximized: bool         # IsZoomed: a maximised window, not a fullscreen one


def coverage(window: Rect, monitor: Rect) -> float:
    """Share 0..1 of the monitor covered by the window (the part outside the monitor ignored)."""
    return window.intersect(monitor).area / monitor.area if monitor.area else 0.0


def is_fullscreen(window: ForegroundWindow, *, threshold: float = 0.95,
                  ignore_classes: frozenset[str] = frozenset()) -> bool:
    """True when the foreground window is an app filling its monitor.

    Shell and widget windows (SHELL_WINDOW_CLASSES, plus `ignore_classes`, compared without case)
    never count. A maximised window that leaves part of the monitor bare (the taskbar) is a
    window the user works in, not a fullscreen app: a 48 px taskbar still leaves 95.6 % of a
    1080p monitor covered, so the share alone cannot tell them apart."""
    name = window.class_name.lower()
    if name in SHELL_WINDOW_CLASSES or name in {c.lower() for c in ignore_classes}:
        return False
    covered = window.rect.intersect(window.monitor)
    if window.maximized and covered != window.monitor:
        return False
    return coverage(window.rect, window.monitor) >= threshold


class DesktopPlatform(Protocol):
    """The questions the pause rules ask. Each returns an answer or raises Unavailable."""

    name: str

    def notification_state(self) -> int: ...          # a QUNS_* value
    def foreground_window(self) -> ForegroundWindow | None: ...  # None: no window in front
    def session_locked(self) -> bool: ...
    def display_off(self) -> bool: ...
    def on_battery(self) -> bool: ...
    def process_names(self) -> frozenset[str]: ...     # lower-case names of running processes
    def gpu_utilisation(self) -> int: ...               # 0..100, the busiest NVIDIA GPU


class PortablePlatform:
    """What any OS can answer with optional packages: processes, battery (psutil), GPU (NVML)."""

    name = sys.platform

    def __init__(self) -> None:
        self._nvml_handles: list | None = None
        self._nvml_error: str | None = None

    def _not_here(self, what: str) -> Unavailable:
        return Unavailable(f"{what} cannot be detected on {self.name}")

    def notification_state(self) -> int:
        raise self._not_here("fullscreen and presentation mode")

    def foreground_window(self) -> ForegroundWindow | None:
        raise self._not_here("the foreground window")

    def session_locked(self) -> bool:
        raise self._not_here("a locked session")

    def display_off(self) -> bool:
        raise self._not_here("the display's power state")

    def on_battery(self) -> bool:
        psutil = _psutil()
        battery = psutil.sensors_battery() if hasattr(psutil, "sensors_battery") else None
        return battery is not None and battery.power_plugged is False

    def process_names(self) -> frozenset[str]:
        psutil = _psutil()
        names = set()
        for process in psutil.process_iter(["name"]):
            name = process.info.get("name")
            if name:
                names.add(name.lower())
        return frozenset(names)

    def gpu_utilisation(self) -> int:
        if self._nvml_handles is None:
            self._nvml_handles = self._open_nvml()
        pynvml = sys.modules["pynvml"]
        try:
            return max(pynvml.nvmlDeviceGetUtilizationRates(h).gpu for h in self._nvml_handles)
        except pynvml.NVMLError as exc:  # a driver reset: not a reason to stop dreaming
            raise Unavailable(f"NVIDIA driver did not report GPU load ({exc})") from None

    def _open_nvml(self) -> list:
        if self._nvml_error is not None:
            raise Unavailable(self._nvml_error)
        try:
            import pynvml
        except ImportError:
            self._nvml_error = "GPU load needs nvidia-ml-py (pip install nvidia-ml-py)"
            raise Unavailable(self._nvml_error) from None
        try:
            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except pynvml.NVMLError as exc:
            self._nvml_error = f"no NVIDIA driver answered for GPU load ({exc})"
            raise Unavailable(self._nvml_error) from None
        if not handles:
            self._nvml_error = "no NVIDIA GPU found for GPU load"
            raise Unavailable(self._nvml_error)
        return handles


def _psutil():
    try:
        import psutil
    except ImportError:
        raise Unavailable("process names and battery need psutil (pip install psutil)") from None
    return psutil


class FakePlatform:
    """Answers set by a test; a value that is an Exception instance is raised instead."""

    name = "fake"

    def __init__(self, **answers) -> None:
        self.answers = dict(notification_state=QUNS_ACCEPTS_NOTIFICATIONS, foreground_window=None,
                            session_locked=False, display_off=False, on_battery=False,
                            process_names=frozenset(), gpu_utilisation=0)
        self.answers.update(answers)
        self.calls: dict[str, int] = {}

    def _answer(self, probe: str):
        self.calls[probe] = self.calls.get(probe, 0) + 1
        value = self.answers[probe]
        if isinstance(value, Exception):
            raise value
        return value

    def notification_state(self) -> int:
        return self._answer("notification_state")

    def foreground_window(self) -> ForegroundWindow | None:
        return self._answer("foreground_window")

    def session_locked(self) -> bool:
        return self._answer("session_locked")

    def display_off(self) -> bool:
        return self._answer("display_off")

    def on_battery(self) -> bool:
        return self._answer("on_battery")

    def process_names(self) -> frozenset[str]:
        return frozenset(n.lower() for n in self._answer("process_names"))

    def gpu_utilisation(self) -> int:
        return self._answer("gpu_utilisation")


def default_platform() -> DesktopPlatform:
    """The platform for this OS (WindowsPlatform loads its DLLs on first use, not here)."""
    if sys.platform == "win32":
        from backend.desktop.win32 import WindowsPlatform
        return WindowsPlatform()
    return PortablePlatform()
