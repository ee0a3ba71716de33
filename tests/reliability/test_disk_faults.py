"""Disk faults with the daemon in-process (folder source, so no keyframe is ever late and the only
trouble is the one injected): a reader locking current_frame.png (PermissionError from os.replace
k times, and for a long while), a full disk (the FrameWriter write seam, and a real tmpfs filled up
when the tests run as root), and the output folder deleted under the running daemon."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.frame_writer import FrameWriter
from tests.reliability.conftest import DaemonRun, history_indices, pixels, read_status, wait_until, write_config


def folder_config(tmp_path: Path, vae: Path, **sections) -> Path:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    for i in range(3):
        Image.fromarray(np.full((64, 64, 3), 40 + 80 * i, np.uint8)).save(images / f"{i}.png")
    keyframes = {"source": "folder", "folder": "images"}
    return write_config(tmp_path, vae, keyframes=keyframes, **sections)


class Locks:
    """os.replace stand-in: PermissionError for current_frame.png while `locked`, or for the first
    `k` attempts of every replace (as a Windows reader holding the file without FILE_SHARE_DELETE)."""

    def __init__(self, k: int = 0) -> None:
        self.k, self.locked, self.attempts, self.calls = k, False, {}, 0

    def __call__(self, src: str, dst: str) -> None:
        self.calls += 1
        if Path(dst).name == "current_frame.png":
            seen = self.attempts[src] = self.attempts.get(src, 0) + 1
            if self.locked or seen <= self.k:
                raise PermissionError(errno.EACCES, "The process cannot access the file because it is being "
                                                    "used by another process", dst)
        os.replace(src, dst)


class Disk:
    """os.write stand-in: ENOSPC while `full`."""

    def __init__(self) -> None:
        self.full, self.calls = False, 0

    def __call__(self, fd: int, data) -> int:
        self.calls += 1
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)


def with_writer(**seams):
    def prepare(daemon) -> None:
        display = daemon.config.display
        daemon.writer = FrameWriter(display.output_dir, png_compression=display.png_compression,
                                    ring_size=display.ring_size, history_keep=display.history_keep, **seams)
    return prepare


def current_is_whole(out: Path) -> bytes:
    data = (out / "current_frame.png").read_bytes()
    assert pixels(out / "current_frame.png").shape == (64, 64, 3)
    return data


def test_permission_error_k_times_on_replace_is_retried_and_no_frame_is_lost(tmp_path, tiny_vae):
    locks = Locks(k=5)
    config = folder_config(tmp_path, tiny_vae)
    assert DaemonRun(config, max_frames=12, prepare=with_writer(replace=locks)).start().join(120) == 0
    status = read_status(tmp_path)
    assert (status["state"], status["frame"], status["last_error"]) == ("stopped", 11, "")
    assert history_indices(tmp_path / "out") == list(range(12))
    assert all(count == 6 for count in locks.attempts.values())  # 5 refusals, then the replace went through


def test_a_current_frame_locked_for_long_keeps_the_daemon_running_and_frames_resume(tmp_path, tiny_vae):
    locks = Locks()
    config = folder_config(tmp_path, tiny_vae, display={"fps": 20, "history_keep": 0})
    run = DaemonRun(config, prepare=with_writer(replace=locks)).start()
    out = tmp_path / "out"
    try:
        wait_until(lambda: (read_status(tmp_path) or {}).get("frame", -1) >= 2, timeout=60, check=run.check)
        locks.locked = True
        before = current_is_whole(out)
        calls = locks.calls
        wait_until(lambda: locks.calls > calls + 10, timeout=30, what="the daemon to keep trying", check=run.check)
        assert current_is_whole(out) == before  # the picture stays: the old frame is intact
        locked_frame = read_status(tmp_path)["frame"]
        locks.locked = False
        wait_until(lambda: read_status(tmp_path)["frame"] > locked_frame + 3, timeout=30, check=run.check)
        assert current_is_whole(out) != before
    finally:
        assert run.stop() == 0
    assert read_status(tmp_path)["state"] == "stopped"


@pytest.mark.parametrize("fault", ["locked", "disk_full"])
def test_a_frame_that_cannot_be_written_is_reported_in_status_last_error(tmp_path, tiny_vae, fault):
    locks, disk = Locks(), Disk()
    config = folder_config(tmp_path, tiny_vae, display={"fps": 20, "history_keep": 0})
    run = DaemonRun(config, prepare=with_writer(replace=locks, write=disk)).start()
    try:
        wait_until(lambda: (read_status(tmp_path) or {}).get("frame", -1) >= 2, timeout=60, check=run.check)
        if fault == "locked":
            locks.locked = True
        else:
            disk.full = True
        words = "locked" if fault == "locked" else "disk full"
        wait_until(lambda: words in (read_status(tmp_path) or {}).get("last_error", ""), timeout=10,
                   what=f"status last_error to say {words}", check=run.check)
    finally:
        locks.locked = disk.full = False
        run.stop()


def test_a_full_disk_keeps_the_old_frame_and_the_daemon_goes_on(tmp_path, tiny_vae, log_records):
    disk = Disk()
    config = folder_config(tmp_path, tiny_vae, display={"fps": 20, "history_keep": 0})
    run = DaemonRun(config, prepare=with_writer(write=disk)).start()
    out = tmp_path / "out"
    try:
        wait_until(lambda: (read_status(tmp_path) or {}).get("frame", -1) >= 2, timeout=60, check=run.check)
        disk.full = True
        time.sleep(0.1)
        before = current_is_whole(out)
        calls = disk.calls
        wait_until(lambda: disk.calls > calls + 10, timeout=30, what="more write attempts", check=run.check)
        assert current_is_whole(out) == before
        assert not [p for p in out.rglob("*.tmp")], "a temp file was left behind"
        full_frame = read_status(tmp_path)["frame"]
        disk.full = False
        wait_until(lambda: read_status(tmp_path)["frame"] > full_frame + 3, timeout=30, check=run.check)
    finally:
        assert run.stop() == 0
    assert any("disk full" in r.getMessage() for r in log_records)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs (real ENOSPC); skipped unless this process may mount (root on Linux)."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("a real full disk needs a tmpfs mount (root on Linux)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(folder: Path) -> Path:
    filler = folder / "filler.bin"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_really_full_disk_keeps_the_old_frame_and_frames_resume_when_space_is_freed(tmp_path, tiny_vae,
                                                                                     small_tmpfs):
    out = small_tmpfs / "out"
    config = folder_config(tmp_path, tiny_vae, display={"fps": 20, "history_keep": 0, "output_dir": str(out)},
                           control={"file": None}, logging={"file": None})
    run = DaemonRun(config).start()
    try:
        wait_until(lambda: (out / "current_frame.png").exists() and (read_json(out) or {}).get("frame", -1) >= 2,
                   timeout=60, check=run.check)
        filler = fill(small_tmpfs)
        time.sleep(1.0)
        before = current_is_whole(out)
        time.sleep(1.0)
        assert current_is_whole(out) == before and run.thread.is_alive()
        filler.unlink()
        frame = (read_json(out) or {}).get("frame", -1)
        wait_until(lambda: (read_json(out) or {}).get("frame", -1) > frame + 3, timeout=30, check=run.check)
        assert current_is_whole(out) != before
    finally:
        assert run.stop() == 0


def read_json(out: Path) -> dict | None:
    import json

    try:
        return json.loads((out / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def test_the_output_folder_deleted_while_running_is_recreated_and_the_show_goes_on(tmp_path, tiny_vae):
    config = folder_config(tmp_path, tiny_vae, display={"fps": 20, "history_keep": 5}, logging={"file": None})
    run = DaemonRun(config).start()
    out = tmp_path / "out"
    try:
        wait_until(lambda: (read_status(tmp_path) or {}).get("frame", -1) >= 2, timeout=60, check=run.check)
        for _ in range(3):  # the daemon may be writing while it is deleted: repeat until it is gone once
            shutil.rmtree(out, ignore_errors=True)
        wait_until(lambda: (read_status(tmp_path) or {}).get("frame", -1) >= 0 and (out / "current_frame.png").exists(),
                   timeout=30, what="the folder to come back", check=run.check)
        frame = read_status(tmp_path)["frame"]
        wait_until(lambda: (read_status(tmp_path) or {}).get("frame", -1) > frame + 8, timeout=30, check=run.check)
        current_is_whole(out)
        assert len(list((out / "history").glob("*.png"))) <= 5
    finally:
        assert run.stop() == 0
    assert read_status(tmp_path)["state"] == "stopped"


def test_stopping_while_frames_fail_to_write_still_stops_within_seconds(tmp_path, tiny_vae):
    locks = Locks()
    config = folder_config(tmp_path, tiny_vae, display={"fps": 20, "history_keep": 0})
    run = DaemonRun(config, prepare=with_writer(replace=locks)).start()
    wait_until(lambda: (read_status(tmp_path) or {}).get("frame", -1) >= 1, timeout=60, check=run.check)
    locks.locked = True
    time.sleep(0.5)
    started = time.monotonic()
    stopper = threading.Thread(target=run.stop)
    stopper.start()
    stopper.join(10)
    assert time.monotonic() - started < 5.0 and run.result == 0
    assert read_status(tmp_path)["state"] == "stopped"
