"""Logging to the console (when there is one) and to a rotating log file.

Works under `pythonw` too, where `sys.stdout` and `sys.stderr` are None: main points them at
os.devnull, the console handler is left out and only the file is written. Called once by main
after the config is valid, so a bad config writes nothing (not even a log file).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path
from typing import Callable

FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s"
_OURS = "_reverie_handler"


def setup_logging(level: str = "INFO", file: Path | None = None, *, max_bytes: int = 1_000_000,
                  backups: int = 3, console: bool = True) -> list[logging.Handler]:
    """Attach our handlers to the root logger (replacing ones from an earlier call); returns them."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(handler)
        handler.close()
    handlers: list[logging.Handler] = []
    if console and has_console():
        handlers.append(logging.StreamHandler(sys.stderr))
    if file is not None:
        Path(file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.handlers.RotatingFileHandler(
            file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True))
    formatter = logging.Formatter(FORMAT, datefmt="%H:%M:%S")
    for handler in handlers:
        setattr(handler, _OURS, True)
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries chatter at INFO/DEBUG (HTTP connection pools, PIL plugins): keep them quiet.
    for noisy in ("urllib3", "PIL", "websocket", "diffusers", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return handlers


def adopt_missing_streams() -> bool:
    """Under pythonw `sys.stdout`/`sys.stderr` are None, and a library that prints (a download
    progress bar) would crash on them: point them at os.devnull. True when there was no console."""
    missing = sys.stderr is None
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            stream = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
            stream._reverie_no_console = True  # type: ignore[attr-defined]
            setattr(sys, name, stream)
    return missing


def has_console() -> bool:
    return sys.stderr is not None and not getattr(sys.stderr, "_reverie_no_console", False)


def say(message: str, *, show_box: Callable[[str], None] | None = None) -> None:
    """One line for the user on stderr. Without a console (pythonw) a Windows message box says it
    instead, since nobody would ever see the line; elsewhere it is dropped. `show_box`: test seam."""
    if has_console():
        try:
            sys.stderr.write(message + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        return
    box = show_box or (_windows_message_box if sys.platform == "win32" else None)
    if box is not None:
        try:
            box(message)
        except Exception:  # noqa: BLE001 - no desktop (a service session): nothing more we can do
            pass


def _windows_message_box(message: str) -> None:
    import ctypes

    MB_ICONERROR, MB_TOPMOST = 0x10, 0x40000
    ctypes.windll.user32.MessageBoxW(None, message, "Reverie", MB_ICONERROR | MB_TOPMOST)  # type: ignore[attr-defined]
