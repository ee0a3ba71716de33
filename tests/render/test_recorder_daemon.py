"""display.record in the daemon: the recorder is a frame listener, closed when the daemon stops.

A scaled-down recorded session: 10 fps in 1 s segments (the shortest config allows), 35 frames
on the daemon's fake clock, so 10 + 10 + 10 + 5 frames in four playable MP4 segments that PyAV
reads back: as many frames as the daemon wrote, each the size shown.
"""

from __future__ import annotations

import numpy as np
import pytest

from backend.render.video import read_frames
from tests.test_daemon import Run

pytest.importorskip("av", reason="PyAV is not installed (pip install av)")


def test_a_recorded_session_gives_playable_segments_holding_every_frame_written(tmp_path):
    shown: list[np.ndarray] = []
    run = Run(tmp_path, record=True, record_segment_seconds=1.0, record_dir=str(tmp_path / "recordings"))
    run.daemon.add_frame_listener(lambda pixels, index: shown.append(pixels.copy()))
    run.start(max_frames=35)
    run.thread.join(60)
    assert run.result == 0 and len(shown) == 35
    recorder = run.daemon.citizen.recorder
    assert recorder.submitted == 35 and recorder.dropped == 0 and recorder.error == ""
    files = sorted((tmp_path / "recordings").glob("reverie_*.mp4"))
    decoded = [read_frames(path) for path in files]
    assert [len(frames) for frames in decoded] == [10, 10, 10, 5]
    assert not list((tmp_path / "recordings").glob("*.part"))       # every segment finished and renamed
    first = decoded[0][0].astype(np.int16)
    assert first.shape == shown[0].shape == (64, 64, 3)
    # H.264 is lossy: the recorded frame is close to the one written, far from a later one
    assert np.abs(first - shown[0]).mean() < np.abs(first - shown[34]).mean()


def test_recording_off_makes_no_recorder_and_no_folder(tmp_path):
    run = Run(tmp_path)
    run.start(max_frames=3)
    run.thread.join(60)
    assert run.result == 0 and run.daemon.citizen.recorder is None
    assert not (tmp_path / "out" / "recordings").exists()


def test_recording_without_a_working_pyav_stops_at_start_as_a_users_error_naming_the_fix(tmp_path, monkeypatch):
    import backend.render.video as video
    from backend.assembly import UserError

    def no_codec(codec: str = "libx264") -> None:
        raise video.VideoError(video.INSTALL_HINT)

    monkeypatch.setattr(video, "check_codec", no_codec)   # stands in for a machine without PyAV
    run = Run(tmp_path, record=True)
    run.start(max_frames=3)
    run.thread.join(60)
    assert isinstance(run.error, UserError) and not run.frames
    assert str(run.error) == f"display.record is on, but {video.INSTALL_HINT}"
    assert run.status()["state"] == "error"
