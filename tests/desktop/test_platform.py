"""The pure parts of the platform layer: the fullscreen test, the shell whitelist, Win32 struct
layouts (checked here on any OS, since a wrong size fails silently on Windows), and the portable
platform's clean "unavailable" answers."""

from __future__ import annotations

import ctypes

import pytest

from backend.desktop import win32
from backend.desktop.platform import (ForegroundWindow, PortablePlatform, Rect, Unavailable, coverage,
                                      default_platform, is_fullscreen)

MONITOR = Rect(0, 0, 1920, 1080)


def window(rect: Rect, class_name: str = "UnityWndClass", maximized: bool = False, monitor: Rect = MONITOR):
    return ForegroundWindow(class_name, rect, monitor, maximized)


def test_a_window_exactly_filling_its_monitor_covers_all_of_it():
    assert coverage(MONITOR, MONITOR) == 1.0


def test_the_part_of_a_window_outside_its_monitor_does_not_count():
    # a maximised window's invisible 8 px borders stick out of the monitor on every side
    assert coverage(Rect(-8, -8, 1928, 1088), MONITOR) == 1.0
    assert coverage(Rect(960, 0, 2880, 1080), MONITOR) == 0.5


def test_a_borderless_game_on_the_second_monitor_is_fullscreen_there():
    second = Rect(1920, 0, 4480, 1440)
    assert is_fullscreen(window(second, monitor=second))
    assert not is_fullscreen(window(Rect(1920, 0, 3200, 1440), monitor=second))


@pytest.mark.parametrize("height, full", [(1026, True), (1025, False)])
def test_the_threshold_is_95_percent_of_the_monitor(height, full):
    assert is_fullscreen(window(Rect(0, 0, 1920, height))) is full   # 1026/1080 = 0.95


@pytest.mark.parametrize("class_name", ["Progman", "WorkerW", "Shell_TrayWnd", "Shell_SecondaryTrayWnd",
                                        "RainmeterMeterWindow", "MultitaskingViewFrame", "progman"])
def test_the_desktop_and_widget_windows_never_count_as_fullscreen(class_name):
    assert not is_fullscreen(window(MONITOR, class_name))


def test_window_classes_the_user_adds_are_ignored_whatever_their_case():
    assert not is_fullscreen(window(MONITOR, "MyWidget"), ignore_classes=frozenset({"mywidget"}))
    assert is_fullscreen(window(MONITOR, "MyWidget"), ignore_classes=frozenset({"other"}))


def test_a_maximised_window_beside_the_taskbar_is_not_fullscreen_though_it_covers_95_percent():
    work_area = Rect(-8, -8, 1928, 1040)  # 1040/1080 of the monitor, the taskbar below it
    assert coverage(work_area, MONITOR) > 0.95
    assert not is_fullscreen(window(work_area, maximized=True))
    assert is_fullscreen(window(Rect(-8, -8, 1928, 1088), maximized=True))  # taskbar hidden: it fills it


def test_win32_structs_have_their_documented_sizes():
    assert ctypes.sizeof(win32.RECT) == 16
    assert ctypes.sizeof(win32.MONITORINFO) == 40
    assert ctypes.sizeof(win32.SYSTEM_POWER_STATUS) == 12
    assert ctypes.sizeof(win32.GUID) == 16
    assert win32.POWERBROADCAST_SETTING.Data.offset == 20
    assert ctypes.sizeof(win32.DEVICE_NOTIFY_SUBSCRIBE_PARAMETERS) == 2 * ctypes.sizeof(ctypes.c_void_p)


def test_a_guid_is_parsed_into_its_fields_in_windows_byte_order():
    guid = win32.GUID.parse(win32.GUID_CONSOLE_DISPLAY_STATE)
    assert (guid.Data1, guid.Data2, guid.Data3) == (0x6FE69556, 0x704A, 0x47A0)
    assert bytes(guid.Data4) == bytes.fromhex("8F24C28D936FDA47")
    assert bytes(guid)[:4] == bytes.fromhex("5695E66F")  # Data1 is little-endian in memory


@pytest.mark.skipif(ctypes.__dict__.get("WinDLL") is not None, reason="checks the refusal off Windows")
def test_the_windows_platform_refuses_cleanly_where_there_is_no_windows():
    with pytest.raises(Unavailable, match="user32"):
        win32.WindowsPlatform().foreground_window()


def test_the_portable_platform_says_which_questions_it_cannot_answer():
    platform = PortablePlatform()
    for probe in (platform.notification_state, platform.foreground_window, platform.session_locked,
                  platform.display_off):
        with pytest.raises(Unavailable, match="cannot be detected"):
            probe()


def test_the_portable_platform_lists_this_test_process_by_name():
    import psutil

    assert psutil.Process().name().lower() in default_platform().process_names()


def test_gpu_load_without_nvidia_ml_py_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    platform = PortablePlatform()
    for _ in range(2):  # asked again, the same answer (not a second import attempt that could hang)
        with pytest.raises(Unavailable, match="pip install nvidia-ml-py"):
            platform.gpu_utilisation()


def power_setting(guid: str, value: int) -> ctypes.Array:
    """A POWERBROADCAST_SETTING as Windows hands it over: the GUID, DataLength 4, a DWORD of data."""
    head = bytes(win32.GUID.parse(guid)) + (4).to_bytes(4, "little") + value.to_bytes(4, "little")
    return ctypes.create_string_buffer(head, len(head))


@pytest.mark.parametrize("value", [0, 1, 2])
def test_the_display_state_is_read_from_the_power_setting_windows_sends(value):
    buffer = power_setting(win32.GUID_CONSOLE_DISPLAY_STATE, value)
    assert win32.display_state_from(win32.PBT_POWERSETTINGCHANGE, ctypes.addressof(buffer)) == value


def test_other_power_notifications_leave_the_display_state_alone():
    buffer = power_setting("5D3E9A59-E9D5-4B00-A6BD-FF34FF516548", 0)  # GUID_ACDC_POWER_SOURCE
    assert win32.display_state_from(win32.PBT_POWERSETTINGCHANGE, ctypes.addressof(buffer)) is None
    assert win32.display_state_from(0x0A, ctypes.addressof(buffer)) is None
    assert win32.display_state_from(win32.PBT_POWERSETTINGCHANGE, None) is None


class FakeUser32:
    """user32 as WindowsPlatform calls it: a game window of `rect` on a 2560x1440 monitor."""

    def __init__(self, hwnd=0x1234, class_name="UnrealWindow", rect=(0, 0, 2560, 1440), input_desktop=0x99,
                 switch_ok=True):
        self.hwnd, self.class_name, self.rect = hwnd, class_name, rect
        self.input_desktop, self.switch_ok, self.closed = input_desktop, switch_ok, []

    def GetForegroundWindow(self):
        return self.hwnd

    def GetClassNameW(self, hwnd, buffer, size):
        buffer.value = self.class_name[: size - 1]
        return len(buffer.value)

    def GetWindowRect(self, hwnd, rect_ref):
        rect = rect_ref._obj
        rect.left, rect.top, rect.right, rect.bottom = self.rect
        return 1

    def MonitorFromWindow(self, hwnd, flags):
        assert flags == win32.MONITOR_DEFAULTTONEAREST
        return 0x77

    def GetMonitorInfoW(self, monitor, info_ref):
        info = info_ref._obj
        assert info.cbSize == ctypes.sizeof(win32.MONITORINFO)  # Windows fails the call otherwise
        info.rcMonitor.right, info.rcMonitor.bottom = 2560, 1440
        return 1

    def IsZoomed(self, hwnd):
        return 0

    def OpenInputDesktop(self, flags, inherit, access):
        assert access == win32.DESKTOP_SWITCHDESKTOP
        return self.input_desktop

    def SwitchDesktop(self, desk):
        return self.switch_ok

    def CloseDesktop(self, desk):
        self.closed.append(desk)


def windows_with(user32: FakeUser32) -> win32.WindowsPlatform:
    platform = win32.WindowsPlatform()
    platform._user32 = user32
    return platform


def test_the_windows_foreground_window_is_read_with_its_class_rect_and_monitor():
    window = windows_with(FakeUser32()).foreground_window()
    assert window == ForegroundWindow("UnrealWindow", Rect(0, 0, 2560, 1440), Rect(0, 0, 2560, 1440), False)
    assert is_fullscreen(window)
    assert windows_with(FakeUser32(hwnd=0)).foreground_window() is None  # nothing in front


def test_a_locked_session_is_one_whose_input_desktop_we_cannot_open_or_switch_to():
    assert windows_with(FakeUser32(input_desktop=0)).session_locked()
    user32 = FakeUser32(switch_ok=False)
    assert windows_with(user32).session_locked() and user32.closed == [0x99]
    user32 = FakeUser32()
    assert not windows_with(user32).session_locked() and user32.closed == [0x99]  # the handle is closed
