"""VideoWriter: H.264/yuv420p MP4 that a real decoder (PyAV) reads back frame for frame."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from backend.render.video import VideoError, VideoWriter, check_codec, read_frames

av = pytest.importorskip("av", reason="PyAV is not installed (pip install av)")


def _frame(i: int, h: int = 48, w: int = 64) -> np.ndarray:
    return np.full((h, w, 3), (i * 13) % 256, np.uint8)


def test_every_frame_written_is_read_back_at_the_right_size_even_the_last_ones(tmp_path):
    """17 frames: H.264 holds frames back for B-frames; a writer that skips the flush loses them."""
    path = tmp_path / "v.mp4"
    with VideoWriter(path, 12) as writer:
        for i in range(17):
            writer.write(_frame(i))
    frames = read_frames(path)
    assert len(frames) == 17 == writer.frames
    assert all(f.shape == (48, 64, 3) for f in frames)
    assert [abs(int(f.mean()) - (i * 13) % 256) <= 2 for i, f in enumerate(frames)] == [True] * 17


def test_the_file_is_h264_yuv420p_at_the_rate_asked_with_the_index_first(tmp_path):
    path = tmp_path / "v.mp4"
    with VideoWriter(path, 8) as writer:
        for i in range(3):
            writer.write(_frame(i))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert stream.average_rate == 8
    head = path.read_bytes()[:4096]
    assert head.find(b"moov") < head.find(b"mdat") or b"mdat" not in head   # +faststart


def test_odd_sizes_lose_their_last_row_and_column(tmp_path):
    path = tmp_path / "v.mp4"
    with VideoWriter(path, 8) as writer:
        writer.write(_frame(0, 33, 45))
    assert read_frames(path)[0].shape == (32, 44, 3)


def test_a_frame_of_another_size_is_refused(tmp_path):
    with VideoWriter(tmp_path / "v.mp4", 8) as writer:
        writer.write(_frame(0))
        with pytest.raises(ValueError, match="the video is 64x48"):
            writer.write(_frame(1, 32, 32))


def test_a_codec_pyav_lacks_is_one_clear_error():
    with pytest.raises(VideoError, match="cannot encode 'no-such-codec'"):
        check_codec("no-such-codec")


def test_missing_pyav_says_how_to_install_it():
    code = ("import sys; sys.modules['av'] = None\n"
            "from backend.render.video import VideoError, check_codec\n"
            "try:\n    check_codec()\nexcept VideoError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install av" in out


def test_an_unwritable_path_is_a_video_error(tmp_path):
    with pytest.raises(VideoError, match="cannot write the video"):
        VideoWriter(tmp_path / "missing" / "v.mp4", 8)
