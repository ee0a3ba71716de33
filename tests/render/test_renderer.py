"""The render loop over fake servers: order, outputs, --resume, Ctrl-C leaves a playable file."""

from __future__ import annotations

import _thread

import numpy as np
import pytest
from PIL import Image

from backend.comfyui.pool import ServerPool
from backend.render.frames_out import FrameSink, claim_png_dir, png_name
from backend.render.renderer import render
from backend.render.video import read_frames
from tests.render.conftest import quick_client
from tests.render.standin import SIZE, StandInJob, expected

pytest.importorskip("av", reason="PyAV is not installed (pip install av)")


def _run(urls, tmp_path, count, job, **kw):
    pool = ServerPool(urls, client_factory=quick_client, retry_interval=0.2)
    sink = FrameSink(video=tmp_path / "walk.mp4", png_dir=tmp_path / "frames", fps=8, size=SIZE)
    try:
        return render(list(range(count)), job, pool, sink, progress=False, **kw)
    finally:
        pool.close()


def _png(tmp_path, index) -> np.ndarray:
    return np.asarray(Image.open(tmp_path / "frames" / png_name(index)).convert("RGB"))


def test_frames_from_two_servers_land_in_order_in_the_mp4_and_the_pngs(fakes, tmp_path):
    result = _run([f.url for f in fakes], tmp_path, 10, StandInJob())
    assert result.complete and result.rendered == 10
    video = read_frames(tmp_path / "walk.mp4")
    assert len(video) == 10 and video[0].shape == (SIZE[1], SIZE[0], 3)
    for index in range(10):
        assert np.array_equal(_png(tmp_path, index), expected(index))
        # H.264 is lossy; each video frame is still far nearer its own frame than its neighbour's
        own = np.abs(video[index].astype(int) - expected(index)).mean()
        other = np.abs(video[index].astype(int) - expected((index + 1) % 10)).mean()
        assert own < 4 and own < other


def test_resume_renders_only_the_missing_frames_and_the_mp4_is_whole(fakes, tmp_path):
    _run([fakes[0].url], tmp_path, 4, StandInJob())
    (tmp_path / "frames" / png_name(2)).unlink()
    (tmp_path / "frames" / png_name(3)).write_bytes(b"\x89PNG half a file")   # killed while writing
    job = StandInJob()
    result = _run([fakes[0].url], tmp_path, 6, job, resume=True)
    assert (result.rendered, result.resumed, result.written) == (4, 2, 6)
    assert len(job.workers) == 4
    assert len(read_frames(tmp_path / "walk.mp4")) == 6
    for index in range(6):
        assert np.array_equal(_png(tmp_path, index), expected(index))


def test_without_resume_every_frame_is_rendered_again(fakes, tmp_path):
    _run([fakes[0].url], tmp_path, 3, StandInJob())
    job = StandInJob()
    assert _run([fakes[0].url], tmp_path, 3, job).rendered == 3 and len(job.workers) == 3


def test_ctrl_c_stops_at_once_and_leaves_a_playable_mp4_with_the_frames_so_far(fakes, tmp_path):
    job = StandInJob()

    def interrupted_at_five(client, worker, index):
        if index == 5:
            _thread.interrupt_main()     # what Ctrl-C does: KeyboardInterrupt in the main thread
        return job(client, worker, index)

    result = _run([fakes[0].url], tmp_path, 20, interrupted_at_five)
    assert result.interrupted and not result.complete
    video = read_frames(tmp_path / "walk.mp4")
    assert 1 <= len(video) == result.written < 20
    assert sorted(p.name for p in (tmp_path / "frames").glob("*.png")) == [png_name(i) for i in range(result.written)]


def test_resume_refuses_pngs_of_a_walk_with_other_settings(tmp_path):
    folder = tmp_path / "frames"
    claim_png_dir(folder, {"seeds": [1, 2], "steps": 20}, resume=False)
    (folder / png_name(0)).write_bytes(b"x")
    with pytest.raises(ValueError, match="other seeds: drop --resume"):
        claim_png_dir(folder, {"seeds": [1, 3], "steps": 20}, resume=True)
    claim_png_dir(folder, {"seeds": [1, 2], "steps": 20}, resume=True)
    assert (folder / png_name(0)).exists(), "the same settings keep their frames"


def test_a_fresh_render_clears_the_frames_of_an_earlier_one_and_nothing_else(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for index in range(5):
        (folder / png_name(index)).write_bytes(b"x")
    (folder / "notes.txt").write_text("mine")
    claim_png_dir(folder, {"seeds": [1, 2]}, resume=False)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "render.json"]
