"""Seed-walk rendering over several ComfyUI servers: throughput, failover, and the recorder's cost.

    python bench/render.py [--latency 0.5] [--frames 24] [--repeats 3]

Starts two fake ComfyUIs whose jobs take `latency` s each (the fake knows no LoadLatent, so each
frame is the stand-in txt2img job of tests/render/standin.py, a pure function of the frame
index) and renders `frames` frames into an MP4 + PNGs: with one server, with two, and with two
of which the first stops answering a third of the way in. For each it prints the median wall
time and frames/s over `repeats` runs, the speed-up over one server, and whether the video holds
exactly the frames asked for, in order. Then the live recorder at 512x512: the median time the
display thread spends in submit() and the frames per second its encoder thread sustains.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from backend.comfyui.client import ComfyClient  # noqa: E402
from backend.comfyui.pool import ServerPool  # noqa: E402
from backend.render.frames_out import FrameSink, png_name  # noqa: E402
from backend.render.recorder import Recorder  # noqa: E402
from backend.render.renderer import render  # noqa: E402
from backend.render.video import read_frames  # noqa: E402
from tests.fake_comfyui import FakeComfyUI  # noqa: E402
from tests.render.standin import SIZE, StandInJob, expected  # noqa: E402


def _client(url: str) -> ComfyClient:
    return ComfyClient(url, request_timeout=5.0, job_timeout=60.0, poll_interval=0.2, unavailable_grace=1.0)


def _in_order(folder: Path, frames: int) -> bool:
    from PIL import Image

    video = read_frames(folder / "walk.mp4")
    if len(video) != frames:
        return False
    return all(np.array_equal(np.asarray(Image.open(folder / "frames" / png_name(i)).convert("RGB")), expected(i))
               for i in range(frames))


def run_once(fakes, servers: int, frames: int, kill_first: bool) -> tuple[float, bool, list[str]]:
    for fake in fakes:
        fake.refuse_connections = False
    job = StandInJob()
    if kill_first:
        victim = fakes[0]

        def job_with_kill(client, worker, index, _job=job):
            if worker == 0 and index >= frames // 3:
                threading.Timer(0.1, setattr, (victim, "refuse_connections", True)).start()
            return _job(client, worker, index)
    with tempfile.TemporaryDirectory(prefix="reverie-bench-render-") as tmp:
        folder = Path(tmp)
        pool = ServerPool([f.url for f in fakes[:servers]], client_factory=_client, retry_interval=0.5)
        sink = FrameSink(video=folder / "walk.mp4", png_dir=folder / "frames", fps=12, size=SIZE)
        began = time.monotonic()
        try:
            render(list(range(frames)), job_with_kill if kill_first else job, pool, sink, progress=False)
        finally:
            pool.close()
        wall = time.monotonic() - began
        return wall, _in_order(folder, frames), pool.summary()


def bench_recorder(frames: int = 120) -> tuple[float, float]:
    """(median submit() seconds, encoder frames/s) at 512x512."""
    pictures = [np.random.default_rng(i).integers(0, 256, (512, 512, 3), dtype=np.uint8) for i in range(8)]
    with tempfile.TemporaryDirectory(prefix="reverie-bench-rec-") as tmp:
        recorder = Recorder(Path(tmp), segment_seconds=4, fps=30, max_bytes=10**9, queue_frames=frames + 1)
        costs = []
        began = time.monotonic()
        for i in range(frames):
            start = time.perf_counter()
            recorder.submit(pictures[i % len(pictures)])
            costs.append(time.perf_counter() - start)
        recorder.close(timeout=600)
        encode = time.monotonic() - began
        written = sum(s.frames for s in recorder.segments)
    return statistics.median(costs), written / encode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per fake job (default 0.5)")
    parser.add_argument("--frames", type=int, default=24, help="frames per render (default 24)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per scenario; medians are printed")
    args = parser.parse_args()

    with FakeComfyUI(latency=args.latency) as a, FakeComfyUI(latency=args.latency) as b:
        rows = []
        for name, servers, kill in (("1 server", 1, False), ("2 servers", 2, False),
                                    ("2 servers, 1 killed at 1/3", 2, True)):
            runs = [run_once([a, b], servers, args.frames, kill) for _ in range(args.repeats)]
            wall = statistics.median(r[0] for r in runs)
            rows.append((name, wall, all(r[1] for r in runs), runs[-1][2]))
    base = rows[0][1]
    print(f"\n{args.frames} frames, fake latency {args.latency} s, median of {args.repeats}")
    print(f"{'scenario':<28} {'wall s':>7} {'frames/s':>9} {'vs 1 server':>12}  complete+in order")
    for name, wall, ok, _ in rows:
        print(f"{name:<28} {wall:7.2f} {args.frames / wall:9.2f} {base / wall:11.2f}x  {'yes' if ok else 'NO'}")
    print("\nper server (last run of each scenario):")
    for name, _, _, summary in rows:
        print(f"  {name}:")
        for line in summary:
            print(f"    {line}")
    submit, fps = bench_recorder()
    print(f"\nrecorder at 512x512: submit() median {submit * 1e6:.0f} us on the display thread; "
          f"encoder thread {fps:.1f} frames/s")
    return 0 if all(r[2] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
