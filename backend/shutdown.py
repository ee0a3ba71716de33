"""One stop Event for every way a user stops Reverie.

- Ctrl-C: SIGINT everywhere.
- POSIX: SIGTERM (and SIGHUP when the terminal goes away).
- Windows: there is no SIGTERM, and closing the console window kills the process before
  Python's signal handlers run, so a console control handler is registered with
  `SetConsoleCtrlHandler` for Ctrl-C, Ctrl-Break and close/logoff/shutdown. Windows runs that
  handler on a thread of its own; for a close event it must not return before the main loop has
  written its last status, because the process dies as soon as it returns (Windows allows ~5 s).

`install_console_handler` takes the kernel32 object and the callback type as arguments, so the
Linux tests can drive the very same handler with a fake kernel32.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import sys
import threading
from typing import Any, Callable

log = logging.getLogger(__name__)

CTRL_C_EVENT, CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT = 0, 1, 2
CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT = 5, 6
EVENT_NAMES = {CTRL_C_EVENT: "Ctrl-C", CTRL_BREAK_EVENT: "Ctrl-Break", CTRL_CLOSE_EVENT: "console close",
               CTRL_LOGOFF_EVENT: "logoff", CTRL_SHUTDOWN_EVENT: "system shutdown"}
_CLOSING = (CTRL_CLOSE_EVENT, CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT)
# Seconds the close handler waits for the main loop. Windows ends a closing console's process about
# 5 s after the event whatever the handler does; returning ends it at once.
CLOSE_WAIT = 4.5


class Shutdown:
    """`stop` is set by any stop request; main sets `finished` once the last status is written."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.finished = threading.Event()
        self.reason = ""
        self._previous: dict[int, Any] = {}
        self._console_callback: Any = None

    def request(self, reason: str) -> None:
        if not self.stop.is_set():
            self.reason = reason
            log.info("stopping (%s)", reason)
        self.stop.set()

    def install(self) -> "Shutdown":
        """Signal handlers (main thread only) and, on Windows, the console control handler."""
        names = ["SIGINT", "SIGTERM", "SIGHUP"] if sys.platform != "win32" else ["SIGINT", "SIGBREAK"]
        for name in names:
            number = getattr(signal, name, None)
            if number is not None:
                self._previous[number] = signal.signal(number, self._on_signal)
        if sys.platform == "win32":
            try:
                self._console_callback = install_console_handler(self)
            except OSError as exc:
                log.warning("console close will not stop Reverie cleanly: %s", exc)
        return self

    def uninstall(self) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()

    def _on_signal(self, number: int, _frame: Any) -> None:
        self.request(signal.Signals(number).name)


def console_handler(shutdown: Shutdown, close_wait: float = CLOSE_WAIT) -> Callable[[int], int]:
    """The HandlerRoutine logic: 1 = handled (do not run the next handler / default exit)."""

    def handle(event: int) -> int:
        name = EVENT_NAMES.get(event)
        if name is None:
            return 0
        shutdown.request(name)
        if event in _CLOSING:
            # The process is terminated the moment we return: let the loop finish first.
            shutdown.finished.wait(close_wait)
        return 1

    return handle


def install_console_handler(shutdown: Shutdown, kernel32: Any = None, *, close_wait: float = CLOSE_WAIT,
                            routine_type: Any = None) -> Any:
    """Register the handler with kernel32.SetConsoleCtrlHandler; returns the ctypes callback,
    which the caller must keep referenced (a collected callback crashes the process)."""
    if kernel32 is None:
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    if routine_type is None:
        routine_type = getattr(ctypes, "WINFUNCTYPE", ctypes.CFUNCTYPE)
    callback = routine_type(ctypes.c_int, ctypes.c_uint)(console_handler(shutdown, close_wait))
    if not kernel32.SetConsoleCtrlHandler(callback, True):
        error = ctypes.get_last_error() if hasattr(ctypes, "get_last_error") else "unknown"
        raise OSError(f"SetConsoleCtrlHandler failed (error {error})")
    return callback
