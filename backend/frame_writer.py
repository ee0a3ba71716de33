"""Frames on disk for the Rainmeter skin and the HTML page, never half-written.

Layout under output_dir (one PNG encode per frame, the same bytes written to each file):

    frames/frame_{index % ring_size}.png   ring of files; status.txt/json name the newest one
    current_frame.png                      the newest frame, for readers that watch one name
    history/frame_{index:08d}.png          optional, only the newest `history_keep` kept
    keyframes/keyframe_{segment:06d}.png   optional, the keyframes as they went into the VAE, same limit

One retention rule covers both history folders: the newest `history_keep` files of each are kept,
after every write and at once when `configure(history_keep=k)` lowers the limit. history_keep == 0
turns both histories off: nothing more is written and files already there are left alone (switching
a feature off does not delete what a user may have wanted to keep).

Every file is written with `atomic_write_bytes`: a uniquely named temp file in the same folder, then
`os.replace`, so a reader sees the old file or the new one, never a torn one. On Windows a reader
(Rainmeter opens with FILE_SHARE_READ only) briefly blocks the replace with PermissionError, so it is
retried a bounded number of times; if the file stays locked, or the disk is full, `AtomicWriteError`
is raised, the previous file is left intact, the temp file is removed, and the caller can report it
and carry on with the next frame.
"""

from __future__ import annotations

import errno
import io
import itertools
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["AtomicWriteError", "FrameTimings", "FrameWriter", "atomic_write_bytes"]


class AtomicWriteError(OSError):
    """A file could not be replaced (locked by a reader for too long, disk full, no permission).
    The previous file at `path` is intact. `reason` says why in words."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"could not write {path}: {reason}; the previous file is kept")
        self.path, self.reason = Path(path), reason


def _write_all(fd: int, data: bytes, write: Callable[[int, memoryview], int]) -> None:
    view = memoryview(data)
    while view:
        view = view[write(fd, view):]


def _describe(err: OSError) -> str:
    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return f"disk full ({err})"
    return str(err)


# Binary (no newline translation on Windows), exclusive, not inherited by child processes, and not
# through a symlink planted at the temp name.
_TEMP_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOINHERIT", 0)
               | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))


def _create_temp(path: Path) -> tuple[int, str]:
    """A new, uniquely named temp file next to `path`: (fd, name). Created with mode 0o666 so the
    process umask decides who may read it, as for any file the user's programs make: a web server
    or another account reads current_frame.png and status.js under the usual umask 022, and a user
    who wants privacy sets 077. (tempfile.mkstemp would make every output file owner-only. On
    Windows the mode only sets the read-only flag, which 0o666 leaves off.)"""
    denied: PermissionError | None = None
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, _TEMP_FLAGS, 0o666), tmp
        except FileExistsError:
            continue
        except PermissionError as e:
            # Windows answers a name still pending deletion with access denied: try another name
            if os.name == "nt" and path.parent.is_dir():
                denied = e
                continue
            raise
    if denied is not None:  # denied every time: the folder itself is not writable
        raise denied
    raise FileExistsError(errno.EEXIST, "no free temp file name", str(path.parent))


def atomic_write_bytes(path: Path, data: bytes, *, retries: int = 20, delay: float = 0.01,
                       replace: Callable[[str, str], None] = os.replace,
                       write: Callable[[int, memoryview], int] = os.write) -> None:
    """Write `data` to `path` atomically. The folder is (re)created if missing. `os.replace` is tried
    up to `retries` times, `delay` seconds apart, while it raises PermissionError (at most about
    retries*delay = 0.2 s of waiting by default). `replace` and `write` are seams for tests (same
    signatures as os.replace and os.write). Raises AtomicWriteError; never leaves a temp file behind."""
    path = Path(path)
    try:
        fd, tmp = _create_temp(path)
    except FileNotFoundError:
        try:  # the output folder was deleted while running: recreate it
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = _create_temp(path)
        except OSError as e:
            raise AtomicWriteError(path, f"cannot create a temp file in {path.parent}: {_describe(e)}") from e
    except OSError as e:
        raise AtomicWriteError(path, f"cannot create a temp file in {path.parent}: {_describe(e)}") from e
    try:
        try:
            _write_all(fd, data, write)
        finally:
            os.close(fd)
        attempts = max(1, retries)
        for attempt in range(attempts):
            try:
                replace(tmp, str(path))
                return
            except PermissionError as e:  # a reader holds `path` without FILE_SHARE_DELETE (Windows)
                last = e
                if attempt + 1 < attempts:
                    time.sleep(delay)
        raise AtomicWriteError(path, f"still locked by another program after {attempts} attempts over "
                                     f"{(attempts - 1) * delay:.2f} s ({last})") from last
    except AtomicWriteError:
        raise
    except OSError as e:
        raise AtomicWriteError(path, _describe(e)) from e
    finally:
        try:
            os.unlink(tmp)  # only still there when something failed
        except OSError:
            pass


@dataclass(frozen=True)
class FrameTimings:
    encode_ms: float  # PNG encode of the frame, once
    write_ms: float   # ring file + current_frame.png (+ history) writes, retries included
    nbytes: int       # PNG size


class FrameWriter:
    """Writes numbered frames as PNG into output_dir (layout in the module docstring).

    output_dir: created if missing; png_compression: zlib level 0..9 (low levels encode fastest, see
    bench/); ring_size: >= 2 ring files; history_keep: newest files kept in history/ and in
    keyframes/ each, 0 = neither is written;
    retries/delay: PermissionError retries per file (see atomic_write_bytes); replace, write: test seams."""

    def __init__(self, output_dir: Path, *, png_compression: int = 1, ring_size: int = 3, history_keep: int = 0,
                 retries: int = 20, delay: float = 0.01, replace: Callable[[str, str], None] = os.replace,
                 write: Callable[[int, memoryview], int] = os.write):
        if ring_size < 2:
            raise ValueError(f"ring_size must be >= 2, got {ring_size}")
        self.output_dir = Path(output_dir)
        self.ring_size = ring_size
        # replace / write: test seams (a reader locking the file, a full disk), as in atomic_write_bytes
        self._write_options = {"retries": retries, "delay": delay, "replace": replace, "write": write}
        self.current_path = self.output_dir / "current_frame.png"
        self.frames_dir = self.output_dir / "frames"
        self.history_dir = self.output_dir / "history"
        self.keyframes_dir = self.output_dir / "keyframes"
        self.last_timings: FrameTimings | None = None
        self.frame_history = _History(self.history_dir, "frame_*.png")
        self.keyframe_history = _History(self.keyframes_dir, "keyframe_*.png")
        self.png_compression, self.history_keep = 1, 0
        self.configure(png_compression=png_compression, history_keep=history_keep)

    def configure(self, *, png_compression: int | None = None, history_keep: int | None = None) -> None:
        """Apply live config edits (display.png_compression 0..9, display.history_keep >= 0)."""
        if png_compression is not None:
            if not 0 <= png_compression <= 9:
                raise ValueError(f"png_compression must be 0..9, got {png_compression}")
            self.png_compression = png_compression
        if history_keep is not None:
            if history_keep < 0:
                raise ValueError(f"history_keep must be >= 0, got {history_keep}")
            self.history_keep = history_keep
            if history_keep > 0:  # a lowered limit applies now, not one file per future write
                self.frame_history.prune(history_keep)
                self.keyframe_history.prune(history_keep)

    def encode(self, frame: np.ndarray | Image.Image) -> bytes:
        """uint8 [H, W, 3] array (RGB) or a PIL image -> PNG bytes."""
        if isinstance(frame, np.ndarray):
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"frame must be uint8 [H, W, 3], got {frame.dtype} {list(frame.shape)}")
            image = Image.fromarray(frame, "RGB")
        elif isinstance(frame, Image.Image):
            image = frame if frame.mode in ("RGB", "RGBA", "L") else frame.convert("RGB")
        else:
            raise TypeError(f"frame must be a numpy array or a PIL image, got {type(frame).__name__}")
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=self.png_compression)
        return buffer.getvalue()

    def ring_path(self, index: int) -> Path:
        return self.frames_dir / f"frame_{index % self.ring_size}.png"

    def write(self, frame: np.ndarray | Image.Image, index: int) -> Path:
        """Encode once, write the ring file, then replace current_frame.png (then history).
        Returns the ring file's path; timings in `self.last_timings`. Raises AtomicWriteError
        (the previous frame stays on screen) or ValueError/TypeError for a malformed frame."""
        start = time.perf_counter()
        data = self.encode(frame)
        encoded = time.perf_counter()
        ring = self.ring_path(index)
        atomic_write_bytes(ring, data, **self._write_options)
        atomic_write_bytes(self.current_path, data, **self._write_options)
        if self.history_keep > 0:
            self._write_history(data, index)
        self.last_timings = FrameTimings((encoded - start) * 1e3, (time.perf_counter() - encoded) * 1e3, len(data))
        return ring

    def write_keyframe(self, image: Image.Image, segment: int) -> None:
        """With history on, keep K_s as it went into the VAE: keyframes/keyframe_{segment:06d}.png
        (atomic), pruned to the newest `history_keep`. Does nothing when history_keep == 0.
        Raises AtomicWriteError (an OSError) when the file cannot be written."""
        if self.history_keep > 0:
            path = self.keyframes_dir / f"keyframe_{segment:06d}.png"
            atomic_write_bytes(path, self.encode(image), **self._write_options)
            self.keyframe_history.add(path, self.history_keep)

    def _write_history(self, data: bytes, index: int) -> None:
        path = self.history_dir / f"frame_{index:08d}.png"
        atomic_write_bytes(path, data, **self._write_options)
        self.frame_history.add(path, self.history_keep)


class _History:
    """The files of one history folder in write order, oldest first: seeded once from disk (a
    previous run's files count against the limit), then kept in memory so pruning never lists the
    folder again."""

    def __init__(self, folder: Path, pattern: str):
        self._files: dict[Path, None] = dict.fromkeys(sorted(folder.glob(pattern))) if folder.is_dir() else {}

    def __len__(self) -> int:
        return len(self._files)

    def add(self, path: Path, keep: int) -> None:
        self._files.pop(path, None)  # a name written again (restart from 0) moves to the newest end
        self._files[path] = None
        self.prune(keep)

    def prune(self, keep: int) -> None:
        """Delete all but the newest `keep` files."""
        excess = len(self._files) - keep
        for oldest in list(itertools.islice(self._files, max(0, excess))):
            try:
                oldest.unlink(missing_ok=True)
            except OSError:
                continue  # held by a viewer (Windows): stays listed and is tried again after the next write
            del self._files[oldest]
