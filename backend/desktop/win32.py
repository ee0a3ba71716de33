"""The Windows answers to the pause rules' questions, through ctypes (no pywin32 needed).

This module imports on any OS: the DLLs are loaded on first use. Struct layouts are the
documented Win32 ones (tests check their sizes on Linux too). Process names and GPU load come
from PortablePlatform (psutil, NVML).
"""

from __future__ import annotations

import ctypes
import logging
import threading
from ctypes import wintypes

from backend.desktop.platform import ForegroundWindow, PortablePlatform, Rect, Unavailable

log = logging.getLogger(__name__)

MONITOR_DEFAULTTONEAREST = 2
DESKTOP_SWITCHDESKTOP = 0x0100
DEVICE_NOTIFY_CALLBACK = 2
PBT_POWERSETTINGCHANGE = 0x8013


# Fixed-width types, not wintypes.LONG/DWORD/BYTE: those follow the C compiler of the OS the module
# runs on (LONG is 8 bytes on Linux, BYTE is signed), and the layout tests run on Linux too.
LONG, DWORD, WORD, BYTE = ctypes.c_int32, ctypes.c_uint32, ctypes.c_uint16, ctypes.c_uint8


class RECT(ctypes.Structure):
    _fields_ = [("left", LONG), ("top", LONG),
                ("right", LONG), ("bottom", LONG)]

    def as_rect(self) -> Rect:
        return Rect(self.left, self.top, self.right, self.bottom)


class MONITORINFO(ctypes.Structure):
    _fields_ = [("cbSize", DWORD), ("rcMonitor", RECT), ("rcWork", RECT), ("dwFlags", DWORD)]


class SYSTEM_POWER_STATUS(ctypes.Structure):
    _fields_ = [("ACLineStatus", BYTE), ("BatteryFlag", BYTE),
                ("BatteryLifePercent", BYTE), ("SystemStatusFlag", BYTE),
                ("BatteryLifeTime", DWORD), ("BatteryFullLifeTime", DWORD)]


class GUID(ctypes.Structure):
    _fields_ = [("Data1", DWORD), ("Data2", WORD), ("Data3", WORD),
                ("Data4", ctypes.c_ubyte * 8)]

    @classmethod
    def parse(cls, text: str) -> "GUID":
        """'6FE69556-704A-47A0-8F24-C28D936FDA47' -> GUID."""
        a, b, c, d, e = text.split("-")
        tail = bytes.fromhex(d + e)
        return cls(int(a, 16), int(b, 16), int(c, 16), (ctypes.c_ubyte * 8)(*tail))


class POWERBROADCAST_SETTING(ctypes.Structure):
    _fields_ = [("PowerSetting", GUID), ("DataLength", DWORD), ("Data", ctypes.c_ubyte * 1)]


# ULONG CALLBACK DeviceNotifyCallbackRoutine(PVOID Context, ULONG Type, PVOID Setting); CALLBACK is
# stdcall, which only 32-bit Windows tells apart (WINFUNCTYPE exists on Windows only).
DEVICE_NOTIFY_CALLBACK_ROUTINE = getattr(ctypes, "WINFUNCTYPE", ctypes.CFUNCTYPE)(
    ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p)


class DEVICE_NOTIFY_SUBSCRIBE_PARAMETERS(ctypes.Structure):
    _fields_ = [("Callback", DEVICE_NOTIFY_CALLBACK_ROUTINE), ("Context", ctypes.c_void_p)]


GUID_CONSOLE_DISPLAY_STATE = "6FE69556-704A-47A0-8F24-C28D936FDA47"  # data: 0 off, 1 on, 2 dimmed


def display_state_from(kind: int, setting: int | None) -> int | None:
    """A power-setting callback's arguments -> the display state (0 off, 1 on, 2 dimmed), or None
    when the call is not a GUID_CONSOLE_DISPLAY_STATE change with data."""
    if kind != PBT_POWERSETTINGCHANGE or not setting:
        return None
    data = POWERBROADCAST_SETTING.from_address(setting)
    if bytes(data.PowerSetting) != bytes(GUID.parse(GUID_CONSOLE_DISPLAY_STATE)) or data.DataLength < 1:
        return None
    return DWORD.from_address(setting + POWERBROADCAST_SETTING.Data.offset).value if data.DataLength >= 4 \
        else data.Data[0]


def _dll(name: str):
    try:
        return ctypes.WinDLL(name, use_last_error=True)  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        raise Unavailable(f"{name}.dll is not available (not Windows?)") from None


class WindowsPlatform(PortablePlatform):
    name = "Windows"

    def __init__(self) -> None:
        super().__init__()
        self._user32 = self._shell32 = self._kernel32 = None
        self._display_state: int | None = None       # set by the power-setting callback
        self._display_lock = threading.Lock()
        self._display_registration: tuple | None = None  # keeps the callback and handle alive

    def _user(self):
        if self._user32 is None:
            user32 = _dll("user32")
            user32.GetForegroundWindow.restype = wintypes.HWND
            user32.GetClassNameW.argtypes = [wintypes.HWND, wintypes.LPWSTR, ctypes.c_int]
            user32.GetWindowRect.argtypes = [wintypes.HWND, ctypes.POINTER(RECT)]
            user32.MonitorFromWindow.argtypes = [wintypes.HWND, DWORD]
            user32.MonitorFromWindow.restype = wintypes.HMONITOR
            user32.GetMonitorInfoW.argtypes = [wintypes.HMONITOR, ctypes.POINTER(MONITORINFO)]
            user32.IsZoomed.argtypes = [wintypes.HWND]
            user32.OpenInputDesktop.argtypes = [DWORD, wintypes.BOOL, DWORD]
            user32.OpenInputDesktop.restype = wintypes.HANDLE
            user32.SwitchDesktop.argtypes = [wintypes.HANDLE]
            user32.CloseDesktop.argtypes = [wintypes.HANDLE]
            self._user32 = user32
        return self._user32

    def notification_state(self) -> int:
        if self._shell32 is None:
            self._shell32 = _dll("shell32")
            self._shell32.SHQueryUserNotificationState.argtypes = [ctypes.POINTER(ctypes.c_int)]
            self._shell32.SHQueryUserNotificationState.restype = ctypes.c_long
        state = ctypes.c_int(0)
        if self._shell32.SHQueryUserNotificationState(ctypes.byref(state)) != 0:
            raise Unavailable("Windows did not answer SHQueryUserNotificationState")
        return state.value

    def foreground_window(self) -> ForegroundWindow | None:
        # In a process that is not DPI-aware both rectangles are scaled the same way, so the
        # covered share is right either way.
        user32 = self._user()
        hwnd = user32.GetForegroundWindow()
        if not hwnd:
            return None  # nothing in front (a window is being switched, or the session is locked)
        buffer = ctypes.create_unicode_buffer(256)
        user32.GetClassNameW(hwnd, buffer, len(buffer))
        rect = RECT()
        info = MONITORINFO(cbSize=ctypes.sizeof(MONITORINFO))
        monitor = user32.MonitorFromWindow(hwnd, MONITOR_DEFAULTTONEAREST)
        if not user32.GetWindowRect(hwnd, ctypes.byref(rect)) or not monitor \
                or not user32.GetMonitorInfoW(monitor, ctypes.byref(info)):
            return None  # the window closed between the calls
        return ForegroundWindow(buffer.value, rect.as_rect(), info.rcMonitor.as_rect(), bool(user32.IsZoomed(hwnd)))

    def session_locked(self) -> bool:
        # The lock screen owns the input desktop: ours can neither be opened as it nor switched to.
        user32 = self._user()
        desk = user32.OpenInputDesktop(0, False, DESKTOP_SWITCHDESKTOP)
        if not desk:
            return True
        try:
            return not user32.SwitchDesktop(desk)
        finally:
            user32.CloseDesktop(desk)

    def on_battery(self) -> bool:
        if self._kernel32 is None:
            self._kernel32 = _dll("kernel32")
            self._kernel32.GetSystemPowerStatus.argtypes = [ctypes.POINTER(SYSTEM_POWER_STATUS)]
        status = SYSTEM_POWER_STATUS()
        if not self._kernel32.GetSystemPowerStatus(ctypes.byref(status)):
            raise Unavailable("Windows did not answer GetSystemPowerStatus")
        return status.ACLineStatus == 0  # 0 offline, 1 online, 255 unknown (a desktop PC)

    def display_off(self) -> bool:
        # Windows only pushes the display state (no call to poll it): register once for
        # GUID_CONSOLE_DISPLAY_STATE with a callback, which also fires at once with the current state.
        if self._display_registration is None:
            self._register_display_state()
        with self._display_lock:
            state = self._display_state
        if state is None:
            raise Unavailable("Windows has not reported the display state yet")
        return state == 0

    def _register_display_state(self) -> None:
        powrprof = _dll("powrprof")

        def changed(context, kind, setting) -> int:
            value = display_state_from(kind, setting)
            if value is not None:
                with self._display_lock:
                    self._display_state = value
            return 0

        callback = DEVICE_NOTIFY_CALLBACK_ROUTINE(changed)
        params = DEVICE_NOTIFY_SUBSCRIBE_PARAMETERS(callback, None)
        guid, handle = GUID.parse(GUID_CONSOLE_DISPLAY_STATE), ctypes.c_void_p()
        self._display_registration = (callback, params, guid, handle)  # the OS holds pointers to these
        error = powrprof.PowerSettingRegisterNotification(ctypes.byref(guid), DEVICE_NOTIFY_CALLBACK,
                                                          ctypes.byref(params), ctypes.byref(handle))
        if error:
            raise Unavailable(f"Windows refused the display-state notification (error {error})")
