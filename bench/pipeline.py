"""The whole pipeline against the fake ComfyUI: does it play at a steady cadence?

    python bench/pipeline.py [--latency 0.5] [--fps 10] [--frames 100] [--n 7] [--resolution 64]

Runs, in one process and against one fake ComfyUI whose keyframes take `latency` s each:
fixed N, auto N, auto N with the latency tripled at frame 50, the VAE schedule showing raw
keyframes in the slot, and the seed guide's sequential loop (a keyframe generated synchronously
at every keyframe slot plus a second one, the interpolation target, at position 1). Prints the
wall time for `frames` frames against its lower bound, stalls, frame intervals against 1/fps,
the per-frame cost split and the picture step at keyframe boundaries vs inside segments.
The VAE is the real TAEF2 tiny autoencoder from ../shared/models/taesd (CPU, fp32).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.assembly import build_encoder, build_source  # noqa: E402
from backend.config import parse_config  # noqa: E402
from backend.daemon import Daemon  # noqa: E402
from backend.frame_writer import FrameWriter  # noqa: E402
from backend.images import fit_cover  # noqa: E402
from backend.interpolation.latent_encoder import LatentEncoder  # noqa: E402
from backend.interpolation.spherical_lerp import slerp  # noqa: E402
from backend.shutdown import Shutdown  # noqa: E402
from backend.status import StatusWriter, new_status  # noqa: E402
from tests.fake_comfyui import FakeComfyUI  # noqa: E402

TAESD = Path(__file__).resolve().parents[2] / "shared" / "models" / "taesd"


class Timed:
    """Wraps LatentEncoder.decode_to_uint8 / encode to add up their cost (seconds, count)."""

    def __init__(self) -> None:
        self.decode, self.decoded, self.encode, self.encoded = 0.0, 0, 0.0, 0
        dec, enc = LatentEncoder.decode_to_uint8, LatentEncoder.encode

        def decode_to_uint8(encoder, latents):
            t = time.perf_counter()
            out = dec(encoder, latents)
            self.decode += time.perf_counter() - t
            self.decoded += len(latents)
            return out

        def encode(encoder, images):
            t = time.perf_counter()
            out = enc(encoder, images)
            self.encode += time.perf_counter() - t
            self.encoded += len(images)
            return out

        LatentEncoder.decode_to_uint8, LatentEncoder.encode = decode_to_uint8, encode


class Run:
    """What one scenario recorded: per-frame write time, position, pixels and cost split."""

    def __init__(self, name: str) -> None:
        self.name, self.times, self.positions, self.pixels = name, [], [], []
        self.png, self.write, self.status = [], [], []
        self.start = 0.0
        self.stalls, self.stall_seconds, self.keyframes, self.segment_frames = 0, 0.0, 0, set()

    def record(self, pixels, position: int, png_ms: float, write_ms: float, status_ms: float) -> None:
        self.times.append(time.monotonic())
        self.positions.append(position)
        self.pixels.append(pixels.astype(np.int16))
        self.png.append(png_ms)
        self.write.append(write_ms)
        self.status.append(status_ms)


class BenchDaemon(Daemon):
    """The real daemon, recording each frame it shows; `on_frame(count)` hooks the scenario."""

    def __init__(self, *args, run: Run, on_frame=None, **kw) -> None:
        super().__init__(*args, **kw)
        self.run_record, self.on_frame = run, on_frame

    def _play(self, max_frames):
        self.run_record.start = time.monotonic()
        super()._play(max_frames)
        record = self.run_record
        record.stalls, record.stall_seconds = self.gen.stalls, self.gen.stall_seconds
        record.keyframes = self.gen.worker.made

    def _show(self, frame) -> None:
        super()._show(frame)
        timings = self.writer.last_timings
        self.run_record.record(frame.pixels, frame.position, timings.encode_ms, timings.write_ms, self.status_ms)
        self.run_record.segment_frames.add(frame.segment_frames)
        if self.on_frame is not None:
            self.on_frame(len(self.run_record.times))


def make_config(out: Path, url: str, args, **hybrid_display):
    display = {"fps": args.fps, "output_dir": str(out), "history_keep": 0,
               "show_raw_keyframes": hybrid_display.pop("show_raw_keyframes", False)}
    return parse_config({
        "generation": {"resolution": [args.resolution] * 2,
                       "hybrid": {"interpolation_frames": args.n, "keyframe_denoise": 0.5, **hybrid_display}},
        "comfyui": {"url": url},
        "keyframes": {"seed": {"policy": "increment", "value": 1}},
        "vae": {"kind": "tiny", "source": str(TAESD), "device": "cpu", "max_batch": 8},
        "display": display, "control": {"file": None}, "logging": {"file": None, "level": "WARNING"}})


def run_daemon(name, config, frames, on_frame=None) -> Run:
    record = Run(name)
    BenchDaemon(config, Path("nonexistent.yaml"), Shutdown(), run=record, on_frame=on_frame).run(frames)
    return record


def run_sequential(config, frames: int, n: int) -> Run:
    """The seed guide's loop: everything on one thread, each diffusion run blocks the display."""
    record = Run("seed guide (sequential)")
    source, client = build_source(config)
    encoder = build_encoder(config)
    size = tuple(config.generation.resolution)
    writer = FrameWriter(config.display.output_dir, png_compression=1)
    status = StatusWriter(config.display.output_dir)
    period = 1.0 / config.display.fps
    record.start = deadline = time.monotonic()
    previous = None
    for index in range(frames):
        j = index % (n + 1)
        if j == 0:  # a new keyframe at the slot (from the last target), generated synchronously
            key = source.next_keyframe(previous)
            record.keyframes += 1
            z0 = encoder.encode([fit_cover(key.image, size)])
            pixels = encoder.decode_to_uint8(z0)[0]
        else:
            if j == 1:  # the interpolation target: a second diffusion run in the same segment
                target = source.next_keyframe(key.image)
                record.keyframes += 1
                previous = target.image
                z1 = encoder.encode([fit_cover(target.image, size)])
            pixels = encoder.decode_to_uint8(slerp(z0, z1, j / (n + 1)))[0]
        time.sleep(max(0.0, deadline - time.monotonic()))
        writer.write(pixels, index)
        t = time.perf_counter()
        status.write(new_status(state="live", frame=index))
        timings = writer.last_timings
        record.record(pixels, j, timings.encode_ms, timings.write_ms, (time.perf_counter() - t) * 1e3)
        deadline += period
        if deadline < time.monotonic():
            deadline = time.monotonic() + period
    record.segment_frames.add(n + 1)
    source.close()
    return record


def summarize(record: Run, args, latency_of) -> dict:
    period = 1.0 / args.fps
    n_first = min(record.segment_frames) if record.segment_frames else args.n + 1
    intervals = np.diff(record.times[n_first:]) if len(record.times) > n_first + 1 else np.array([period])
    wall = record.times[-1] - record.start
    # Lower bound: keyframes are made one after another (K_0 and K_1 before frame 1), and frames
    # 1..F-1 cannot come faster than 1/fps.
    generation = sum(latency_of(k) for k in range(record.keyframes))
    bound = max(generation, latency_of(0) + latency_of(1) + (len(record.times) - 2) * period)
    steps = [np.abs(b - a).mean() for a, b in zip(record.pixels, record.pixels[1:])]
    boundary = [s for s, p in zip(steps, record.positions[1:]) if p == 0]
    inside = [s for s, p in zip(steps, record.positions[1:]) if p != 0]
    holds = [i for i in intervals if i > 1.5 * period]
    return dict(
        name=record.name, wall=wall, bound=bound, ratio=wall / bound, keyframes=record.keyframes,
        stalls=record.stalls if record.name != "seed guide (sequential)" else len(holds),
        stall_s=record.stall_seconds if record.name != "seed guide (sequential)" else sum(holds) - len(holds) * period,
        p50=np.percentile(intervals, 50) / period, p95=np.percentile(intervals, 95) / period,
        max=intervals.max() / period, n=",".join(map(str, sorted(s - 1 for s in record.segment_frames))),
        step_k=statistics.fmean(boundary) if boundary else math.nan, step_i=statistics.fmean(inside),
        png=statistics.median(record.png), write=statistics.median(record.write),
        status=statistics.median(record.status))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.5, help="fake keyframe latency L, s")
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--n", type=int, default=7, help="fixed in-betweens (L <= (N+1)/fps)")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("/tmp/reverie_bench"))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: on a shared 2-core machine two threads spin against "
                             "other processes and decode ~10x slower)")
    args = parser.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    if not (TAESD / "taef2_encoder.pth").is_file():
        sys.exit(f"needs the TAEF2 weights at {TAESD}")
    timed = Timed()
    rows = []
    with FakeComfyUI(latency=args.latency) as fake:
        base = args.latency + 0.02  # the fake's sleep plus upload/queue/fetch on this machine
        scenarios = [
            ("fixed N", {}, None, lambda k: base),
            ("auto N", {"interpolation_frames": "auto"}, None, lambda k: base),
            ("auto N, L x3 at frame 50", {"interpolation_frames": "auto"}, "triple", None),
            ("fixed N, raw keyframe slot", {"show_raw_keyframes": True}, None, lambda k: base),
        ]
        for name, hybrid, hook, latency_of in scenarios:
            fake.latency = args.latency
            costs = (timed.decode, timed.decoded)
            switched = {}

            def on_frame(count, hook=hook, switched=switched):
                if hook == "triple" and count == 50:
                    fake.latency = 3 * args.latency
                    switched["at_keyframe"] = True

            config = make_config(args.out / name.replace(" ", "_").replace(",", ""), fake.url, args, **hybrid)
            record = run_daemon(name, config, args.frames, on_frame)
            if latency_of is None:  # roughly half the keyframes were made at 3x
                half = record.keyframes // 2
                latency_of = lambda k, half=half: base if k < half else 3 * args.latency + 0.02  # noqa: E731
            row = summarize(record, args, latency_of)
            row["decode"] = (timed.decode - costs[0]) / max(1, timed.decoded - costs[1]) * 1e3
            rows.append(row)
        fake.latency = args.latency
        costs = (timed.decode, timed.decoded)
        record = run_sequential(make_config(args.out / "sequential", fake.url, args), args.frames, args.n)
        row = summarize(record, args, lambda k: base)
        row["decode"] = (timed.decode - costs[0]) / max(1, timed.decoded - costs[1]) * 1e3
        rows.append(row)
    print(f"\nL = {args.latency} s per keyframe, target {args.fps} fps (1/f = {1000 / args.fps:.0f} ms), "
          f"{args.frames} frames, {args.resolution}x{args.resolution}, TAEF2 on CPU ({args.threads} thread); "
          f"keyframe encode {timed.encode / max(1, timed.encoded) * 1e3:.1f} ms\n")
    print("| scenario | N | wall s | lower bound s | wall/bound | keyframes | stalls | stall s | "
          "interval p50/p95/max x 1/f | decode ms | PNG ms | write ms | status ms | step at keyframe | "
          "step inside | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['n']} | {r['wall']:.2f} | {r['bound']:.2f} | {r['ratio']:.3f} | {r['keyframes']} | "
              f"{r['stalls']} | {r['stall_s']:.2f} | {r['p50']:.2f} / {r['p95']:.2f} / {r['max']:.2f} | "
              f"{r['decode']:.1f} | {r['png']:.2f} | {r['write']:.2f} | {r['status']:.2f} | {r['step_k']:.2f} | "
              f"{r['step_i']:.2f} | {r['step_k'] / r['step_i']:.2f} |")


if __name__ == "__main__":
    main()
