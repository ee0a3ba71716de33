"""Logging to the console (when there is one) and to a rotating log file.

Works under `pythonw` too, where `sys.stdout` and `sys.stderr` are None: the console handler is
then left out and only the file is written. Called once by main after the config is valid, so
a bad config writes nothing (not even a log file).
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

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
    if console and sys.stderr is not None:
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


def say(message: str) -> None:
    """One line for the user on stderr, silently dropped when there is no console (pythonw)."""
    stream = sys.stderr
    if stream is not None:
        try:
            stream.write(message + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass
