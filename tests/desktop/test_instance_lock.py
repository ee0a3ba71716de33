"""One daemon per output folder: the second is refused with the first one's PID, stale locks
(dead PID, reused PID, junk from a crash) are taken over, and racing daemons get one winner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from backend.desktop.instance_lock import LOCK_NAME, AlreadyRunning, InstanceLock, instance_tag, pid_alive

REPO = Path(__file__).resolve().parents[2]
HOLD = ("import sys, time; from backend.desktop.instance_lock import InstanceLock; "
        "InstanceLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)")


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_second_daemon_on_the_same_folder_is_refused_naming_the_running_pid(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(AlreadyRunning) as caught:
            InstanceLock(tmp_path).acquire()
        assert caught.value.pid == holder.pid
        message = str(caught.value)
        assert f"PID {holder.pid}" in message and str(tmp_path) in message and "\n" not in message
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_daemon_that_died_is_taken_over(tmp_path, caplog):
    pid = dead_pid()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": pid, "started": time.time() - 60, "token": "old"}))
    with caplog.at_level("INFO"):
        lock = InstanceLock(tmp_path).acquire()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert f"PID {pid} is not running" in caplog.text
    lock.release()


def test_a_pid_reused_by_a_later_process_does_not_hold_the_folder(tmp_path):
    # Our own PID is alive, but this process started long after the lock says its daemon did.
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "started": 1_000_000.0}))
    with InstanceLock(tmp_path) as lock:
        assert lock.held


def test_junk_left_by_a_crash_mid_write_is_taken_over_once_it_is_old(tmp_path):
    junk = tmp_path / LOCK_NAME
    junk.write_bytes(b"")
    os.utime(junk, (time.time() - 30, time.time() - 30))
    with InstanceLock(tmp_path) as lock:
        assert lock.held and json.loads(junk.read_text())["token"] == lock.token


def test_release_removes_only_our_own_lock(tmp_path):
    lock = InstanceLock(tmp_path).acquire()
    assert (tmp_path / LOCK_NAME).exists()
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()
    first = InstanceLock(tmp_path).acquire()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "token": "someone-else"}))
    first.release()  # the file is another daemon's now (it took over): left alone
    assert json.loads((tmp_path / LOCK_NAME).read_text())["token"] == "someone-else"


def test_of_daemons_racing_for_a_stale_lock_exactly_one_wins(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead_pid(), "started": 1.0}))
    results: list[str] = []
    start = threading.Barrier(6)

    def race() -> None:
        start.wait()
        try:
            InstanceLock(tmp_path).acquire()
            results.append("won")
        except AlreadyRunning:
            results.append("refused")

    threads = [threading.Thread(target=race) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == ["refused"] * 5 + ["won"]


def test_pid_alive_tells_a_running_process_from_a_finished_one():
    assert pid_alive(os.getpid())
    assert not pid_alive(dead_pid())
    assert not pid_alive(0)


def test_the_instance_tag_is_stable_per_folder_and_differs_between_folders(tmp_path):
    a, b = instance_tag(tmp_path / "a"), instance_tag(tmp_path / "b")
    assert a == instance_tag(tmp_path / "a" / ".." / "a") and a != b
    assert len(a) == 8 and all(c in "0123456789abcdef" for c in a)


def test_a_takeover_guard_left_by_a_daemon_that_died_mid_takeover_does_not_block_forever(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead_pid(), "started": 1.0}))
    guard = tmp_path / (LOCK_NAME + ".takeover")
    guard.write_text("{}")
    os.utime(guard, (time.time() - 60, time.time() - 60))
    with InstanceLock(tmp_path) as lock:
        assert lock.held and not guard.exists()
