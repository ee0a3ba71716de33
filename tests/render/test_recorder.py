"""Recorder: segments of the right frame count, rename on completion, disk cap, kill-safe, non-blocking."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from backend.render.recorder import Recorder
from backend.render.video import read_frames

pytest.importorskip("av", reason="PyAV is not installed (pip install av)")


def _frame(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)


def _finished(folder: Path) -> list[Path]:
    return sorted(folder.glob("reverie_*.mp4"))


def test_a_scaled_down_session_gives_segments_whose_frames_add_up_to_the_frames_shown(tmp_path):
    """A '10-minute' session at 10 fps in 1-minute segments, scaled by 1/120: 50 frames, 5 per segment."""
    recorder = Recorder(tmp_path, segment_seconds=0.5, fps=10, max_bytes=10**9)
    for i in range(53):
        assert recorder.submit(_frame(i))
        time.sleep(0.002)              # the display's cadence; the queue absorbs encoder hiccups
    recorder.close()
    files = _finished(tmp_path)
    assert [s.frames for s in recorder.segments] == [5] * 10 + [3]
    assert [len(read_frames(p)) for p in files] == [5] * 10 + [3]
    assert recorder.dropped == 0 and recorder.submitted == 53
    assert not list(tmp_path.glob("*.part"))


def test_submit_never_waits_for_the_encoder_it_drops_and_counts_instead(tmp_path):
    recorder = Recorder(tmp_path, segment_seconds=10, fps=10, max_bytes=10**9, queue_frames=2)
    results = [recorder.submit(_frame(i)) for i in range(200)]   # far faster than any encoder
    recorder.close()
    written = sum(s.frames for s in recorder.segments)
    assert recorder.dropped == results.count(False) > 0
    assert written == results.count(True) == 200 - recorder.dropped


def test_the_oldest_segments_go_when_the_folder_passes_the_cap(tmp_path):
    probe = Recorder(tmp_path / "probe", segment_seconds=0.5, fps=10, max_bytes=10**9)
    for i in range(5):
        probe.submit(_frame(i))
    probe.close()
    one = probe.segments[0].path.stat().st_size
    recorder = Recorder(tmp_path / "capped", segment_seconds=0.5, fps=10, max_bytes=int(one * 3.5))
    for i in range(40):
        recorder.submit(_frame(i))
        time.sleep(0.002)
    recorder.close()
    kept = _finished(tmp_path / "capped")
    assert len(recorder.segments) == 8
    assert kept == [s.path for s in recorder.segments[-len(kept):]], "the newest segments are the ones kept"
    assert 2 <= len(kept) <= 4
    assert sum(p.stat().st_size for p in kept) <= int(one * 3.5) * 1.2


def test_a_frame_of_a_new_size_starts_a_new_segment(tmp_path):
    recorder = Recorder(tmp_path, segment_seconds=10, fps=10, max_bytes=10**9)
    recorder.submit(_frame(0))
    recorder.submit(np.zeros((32, 32, 3), np.uint8))
    recorder.close()
    assert [s.frames for s in recorder.segments] == [1, 1]


_KILLED = textwrap.dedent("""
    import sys, time
    import numpy as np
    from backend.render.recorder import Recorder
    folder = sys.argv[1]
    recorder = Recorder(folder, segment_seconds=0.5, fps=10, max_bytes=10**9)
    i = 0
    while True:                       # frames forever; the test kills this process
        recorder.submit(np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8))
        i += 1
        if len(recorder.segments) >= 3 and i % 5 == 2:
            print("ready", flush=True)
        time.sleep(0.01)
""")


def test_a_killed_process_leaves_every_finished_segment_playable(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", _KILLED, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                               cwd=Path(__file__).resolve().parents[2])
    try:
        assert process.stdout.readline().strip() == "ready"
        process.kill()                 # no goodbye: like a crash or a closed console
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    files = _finished(tmp_path)
    assert len(files) >= 3
    assert all(len(read_frames(p)) == 5 for p in files)
    assert len(list(tmp_path.glob("*.part"))) <= 1      # at most the segment being written is lost
    Recorder(tmp_path, segment_seconds=1, fps=10, max_bytes=10**9).close()
    assert not list(tmp_path.glob("*.part")), "the next start clears the unfinished segment"
