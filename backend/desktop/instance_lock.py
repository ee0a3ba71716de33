"""One daemon per output folder: `output/reverie.lock` holds the running daemon's PID.

The lock file is created with O_CREAT | O_EXCL, so of two daemons starting at once exactly one
gets it. A lock whose PID is no longer alive (a crash, a power cut), or is alive but started
later than the lock says (the PID was reused), is stale and taken over. Taking over is guarded
by a second O_EXCL file, so two daemons that both find the same stale lock cannot both win.

`instance_tag(output_dir)` is a short id of this machine + folder: names this daemon gives
things on a shared ComfyUI (uploads) carry it, so two daemons never overwrite each other's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import sys
import time
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = "reverie.lock"
GUARD_STALE_S = 10.0   # a takeover guard older than this was left by a daemon that died mid-takeover


class AlreadyRunning(Exception):
    """Another live daemon writes to this folder; str() is the one sentence to show."""

    def __init__(self, pid: int, folder: Path, started: float | None):
        self.pid = pid
        when = time.strftime(" since %Y-%m-%d %H:%M", time.localtime(started)) if started else ""
        super().__init__(f"Reverie is already running on {folder} (PID {pid}{when}); stop it first, or give "
                         f"this one another display.output_dir")


def instance_tag(output_dir: Path | str) -> str:
    """8 hex characters, the same for every run on this machine and folder, different otherwise."""
    folder = os.path.normcase(os.path.abspath(output_dir))
    return hashlib.sha1(f"{socket.gethostname()}\n{folder}".encode("utf-8")).hexdigest()[:8]


def process_started(pid: int) -> float | None:
    """The process's start time (epoch seconds), None when unknown (no psutil, no access)."""
    try:
        import psutil
        return psutil.Process(pid).create_time()
    except Exception:  # noqa: BLE001 - ImportError, NoSuchProcess, AccessDenied: all "unknown"
        return None


def pid_alive(pid: int) -> bool:
    """Is a process with this PID running? (never signals it: os.kill(pid, 0) on Windows would
    terminate it, so Windows asks OpenProcess + GetExitCodeProcess instead)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":
        return _windows_pid_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    except OSError:
        return False
    return True


def _windows_pid_alive(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    kernel32.OpenProcess.restype = ctypes.c_void_p
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.get_last_error() == 5  # ERROR_ACCESS_DENIED: it exists, it is not ours
    try:
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(ctypes.c_void_p(handle), ctypes.byref(code))
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(ctypes.c_void_p(handle))


class InstanceLock:
    """`acquire()` at start (raises AlreadyRunning), `release()` at exit; also a context manager."""

    def __init__(self, output_dir: Path | str, *, pid: int | None = None):
        self.folder = Path(output_dir)
        self.path = self.folder / LOCK_NAME
        self.pid = os.getpid() if pid is None else pid
        self.token = uuid.uuid4().hex       # tells our lock from a later daemon's after a takeover
        self.held = False

    def acquire(self) -> "InstanceLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(100):  # each pass wins, fails, or clears a stale lock; bounded all the same
            if self._create(self.path):
                self.held = True
                return self
            raw = self._raw(self.path)
            if raw is None:
                continue          # removed since our create: try again
            holder = _parse(raw)
            if holder is None and self._age(self.path) < 2.0:
                time.sleep(0.05)  # being written this instant by the daemon that won
                continue
            if holder is not None and self._alive(holder):
                raise AlreadyRunning(int(holder["pid"]), self.folder, holder.get("started"))
            self._take_over(raw, holder)  # dead PID, or unreadable junk left by a crash mid-write
        raise OSError(f"could not take the lock {self.path}: it keeps changing")

    def release(self) -> None:
        """Remove the lock if it is still ours (a daemon that took it over keeps its own)."""
        if self.held:
            holder = self._read(self.path)
            if holder is not None and holder.get("token") == self.token:
                try:
                    self.path.unlink(missing_ok=True)
                except OSError as exc:  # on Windows a daemon reading it this instant blocks the delete
                    log.info("lock %s not removed (%s); the next daemon takes it over as stale", self.path, exc)
            self.held = False

    def __enter__(self) -> "InstanceLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _create(self, path: Path) -> bool:
        body = json.dumps({"pid": self.pid, "started": process_started(self.pid) or time.time(),
                           "token": self.token, "host": socket.gethostname()})
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(body)
        return True

    def _read(self, path: Path) -> dict | None:
        raw = self._raw(path)
        return None if raw is None else _parse(raw)

    @staticmethod
    def _raw(path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except OSError:  # gone, or held for a moment on Windows
            return None

    @staticmethod
    def _age(path: Path) -> float:
        try:
            return time.time() - path.stat().st_mtime
        except OSError:
            return 0.0

    @staticmethod
    def _alive(holder: dict) -> bool:
        pid = holder.get("pid")
        if not isinstance(pid, int) or not pid_alive(pid):
            return False
        started, recorded = process_started(pid), holder.get("started")
        # A PID alive now but started well after the lock was written is another program that got
        # the dead daemon's PID.
        return not (started is not None and isinstance(recorded, (int, float)) and started > recorded + 2.0)

    def _take_over(self, stale: bytes, holder: dict | None) -> None:
        """Remove a stale lock, unless another daemon is already doing so (then let it win)."""
        guard = self.path.with_name(LOCK_NAME + ".takeover")
        if not self._create(guard):
            if self._age(guard) > GUARD_STALE_S:
                with contextlib.suppress(OSError):
                    guard.unlink(missing_ok=True)
            time.sleep(0.05)
            return
        try:
            if self._raw(self.path) == stale:  # still the same dead daemon's lock, not a newer one
                pid = holder.get("pid") if holder else None
                log.info("taking over a stale lock in %s (%s)", self.folder,
                         f"PID {pid} is not running" if pid else "its file was unreadable")
                try:
                    self.path.unlink(missing_ok=True)
                except OSError:
                    pass  # held open for a moment by another reader (Windows): the next pass tries again
        finally:
            guard.unlink(missing_ok=True)


def _parse(raw: bytes) -> dict | None:
    try:
        holder = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None
