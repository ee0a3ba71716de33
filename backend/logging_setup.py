r"""Logging to the console (when there is one) and to a rotating log file.

Works under `pythonw` too, where `sys.stdout` and `sys.stderr` are None: main points them at
os.devnull, the console handler is left out and only the file is written. Called once by main
after the config is valid, so a bad config writes nothing (not even a log file).

Any text may reach a log line (a file name that is not UTF-8, a prompt, a server's message), and
a handler that fails to write prints a traceback for every line. So every line is made writable
first: lone surrogates (os.fsdecode's undecodable bytes) become \xNN, other control characters
than newline and tab become \xNN / \uNNNN, a line is cut at MAX_LINE characters, and characters
the console's encoding lacks are backslash-escaped.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import sys
from pathlib import Path
from typing import Callable

FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s"
MAX_LINE = 20_000  # characters per record, traceback included
_OURS = "_reverie_handler"
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]")                      # C0 and DEL, but tab and newline
_WIDER_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")  # and C1, U+2028/U+2029


def _escaped(code: int) -> str:
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def _as_code(match: re.Match[str]) -> str:
    return _escaped(ord(match.group()))


def _as_byte(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for the undecodable byte code - 0xDC00
        code -= 0xDC00
    return _escaped(code)


# The one implementation of escaping text that came from outside: backend.status and
# backend.comfyui.text use it too. It lives here, in a module that imports only the standard
# library, so that neither logging nor status has to depend on the ComfyUI package.
def escape_surrogates(text: str, *, as_bytes: bool = True) -> str:
    r"""Any str -> one that encodes as UTF-8: lone surrogates -> \uNNNN, except that with
    `as_bytes` U+DC80..U+DCFF (an undecodable byte of a file name) -> \xNN, the byte."""
    return _SURROGATE.sub(_as_byte if as_bytes else _as_code, text)


def escape_controls(text: str, *, wider: bool = False) -> str:
    r"""Control characters but tab and newline -> \xNN; with `wider`, C1 controls and U+2028 /
    U+2029 (line breaks to some readers) as well, as \xNN / \uNNNN."""
    return (_WIDER_CONTROL if wider else _CONTROL).sub(_as_code, text)


class SafeFormatter(logging.Formatter):
    """A Formatter whose output every handler can write (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if len(text) > MAX_LINE:
            text = text[: MAX_LINE - 3] + "..."
        return escape_controls(escape_surrogates(text), wider=True)


class _ConsoleHandler(logging.StreamHandler):
    """StreamHandler that backslash-escapes what the console's encoding cannot show (a cp1252
    console and a prompt in Japanese) instead of failing on it."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        encoding = getattr(self.stream, "encoding", None)
        if encoding:
            try:
                text.encode(encoding)
            except UnicodeEncodeError:
                text = text.encode(encoding, "backslashreplace").decode(encoding)
            except LookupError:
                pass
        return text


def setup_logging(level: str = "INFO", file: Path | None = None, *, max_bytes: int = 1_000_000,
                  backups: int = 3, console: bool = True) -> list[logging.Handler]:
    """Attach our handlers to the root logger (replacing ones from an earlier call); returns them."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(handler)
        handler.close()
    handlers: list[logging.Handler] = []
    if console and has_console():
        handlers.append(_ConsoleHandler(sys.stderr))
    if file is not None:
        Path(file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.handlers.RotatingFileHandler(
            file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", errors="backslashreplace", delay=True))
    formatter = SafeFormatter(FORMAT, datefmt="%H:%M:%S")
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
            sys.stderr.write(escape_surrogates(message) + "\n")
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
