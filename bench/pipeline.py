"""The whole pipeline against the fake ComfyUI: does it play at a steady cadence?

    python bench/pipeline.py [--latency 0.5] [--fps 10] [--frames 100] [--n 7] [--resolution 64] [--easing-segments 6]

Runs, in one process and against one fake ComfyUI whose keyframes take `latency` s each:
fixed N, fixed N with display.record on (MP4 segments encoded on the recorder's thread; its
wall/bound should match the row without), fixed N with the dream on (metrics and grounding on
every keyframe, as main.py builds it; likewise), auto N, auto N with the latency tripled at frame 50,
the VAE schedule showing raw keyframes in the slot, and the seed guide's sequential loop (a keyframe generated synchronously
at every keyframe slot plus a second one, the interpolation target, at position 1). Prints the
wall time for `frames` frames against its lower bound, stalls, frame intervals against 1/fps,
the per-frame cost split and the picture step at keyframe boundaries vs inside segments.

The lower bound is the larger of two. Generation: keyframes are made one after another, so the
frames shown take at least the sum of the configured latencies (what the fake slept, logged per
job, so exact across the switch) of the keyframes they need under the continuity schedule:
K_0..K_S when S+1 segments were shown, plus K_{S+1} when the last frame is an in-between. That
count is the same for every scenario, so the sequential loop's second keyframe per segment earns
no credit. Frames: K_0 and K_1 before frame 1, then one frame period per frame.

Then, unless --easing-segments 0, the picture step at keyframe boundaries vs inside segments for each
easing curve (linear, smoothstep, cosine): the real schedule on the same keyframes, fixed N,
pulled unpaced (no timing involved).
The VAE is the real TAEF2 tiny autoencoder from ../shared/models/taesd (CPU, fp32).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from pathlib import Path
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.assembly import build_encoder, build_source, schedule_settings  # noqa: E402
from backend.config import parse_config  # noqa: E402
from backend.daemon import Daemon  # noqa: E402
from backend.frame_writer import FrameWriter  # noqa: E402
from backend.frames import Keyframe  # noqa: E402
from backend.images import fit_cover  # noqa: E402
from backend.interpolation.hybrid_generator import HybridGenerator  # noqa: E402
from backend.interpolation.latent_encoder import LatentEncoder  # noqa: E402
from backend.interpolation.spherical_lerp import EASINGS, slerp  # noqa: E402
from backend.shutdown import Shutdown  # noqa: E402
from backend.status import StatusWriter, new_status  # noqa: E402
from tests.fake_comfyui import FakeComfyUI  # noqa: E402
from tests.fake_comfyui.executor import Executor  # noqa: E402

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


class JobLog:
    """Wraps the fake's Executor.run to log, per job, when it started and the latency it slept."""

    def __init__(self) -> None:
        self.jobs: list[tuple[float, float]] = []  # (monotonic start, configured latency s)
        run = Executor.run

        async def logged(executor, job):
            self.jobs.append((time.monotonic(), executor.fake.latency + 0.0))
            return await run(executor, job)

        Executor.run = logged


class Run:
    """What one scenario recorded: per-frame write time, position, pixels and cost split."""

    def __init__(self, name: str) -> None:
        self.name, self.times, self.positions, self.pixels = name, [], [], []
        self.segments: list[tuple[int, int]] = []  # (segment, segment_frames) of each frame
        self.png, self.write, self.status = [], [], []
        self.start = 0.0
        self.stalls, self.stall_seconds, self.keyframes = 0, 0.0, 0
        self.latencies: list[float] = []  # configured latency of keyframe k (job k of the run)

    def record(self, pixels, position: int, png_ms: float, write_ms: float, status_ms: float,
               segment: tuple[int, int]) -> None:
        self.times.append(time.monotonic())
        self.positions.append(position)
        self.segments.append(segment)
        self.pixels.append(pixels.astype(np.int16))
        self.png.append(png_ms)
        self.write.append(write_ms)
        self.status.append(status_ms)


class BenchDaemon(Daemon):
    """The real daemon, recording each frame it writes; `on_frame(count)` hooks the scenario."""

    def __init__(self, *args, run: Run, on_frame=None, **kw) -> None:
        super().__init__(*args, **kw)
        self.run_record, self.on_frame = run, on_frame
        self.add_frame_listener(self._written)

    def _play(self, max_frames):
        self.run_record.start = time.monotonic()
        super()._play(max_frames)
        record = self.run_record
        record.stalls, record.stall_seconds = self.gen.stalls.count, self.gen.stalls.seconds
        record.keyframes = self.gen.worker.made
        recorder = self.citizen.recorder
        if recorder is not None:
            record.name += f" ({recorder.submitted - recorder.dropped} frames queued to MP4, {recorder.dropped} dropped)"

    def _written(self, pixels, index: int) -> None:
        # Called once the frame is written, before its status: status_ms is the last status
        # written (the previous frame's), the same cost in the median.
        timings, shown = self.writer.last_timings, self.screen.fields
        self.run_record.record(pixels, shown["position"], timings.encode_ms, timings.write_ms,
                               self.report.status_ms, (shown["segment"], shown["segment_frames"]))
        if self.on_frame is not None:
            self.on_frame(len(self.run_record.times))


def make_config(out: Path, url: str, args, **hybrid_display):
    """The scenario's Config, also saved as out/config.yaml for the daemon's config watcher."""
    display = {"fps": args.fps, "output_dir": str(out), "history_keep": 0,
               "show_raw_keyframes": hybrid_display.pop("show_raw_keyframes", False),
               "record": hybrid_display.pop("record", False)}
    data = {
        "generation": {"resolution": [args.resolution] * 2,
                       "hybrid": {"interpolation_frames": args.n, "keyframe_denoise": 0.5, **hybrid_display}},
        "comfyui": {"url": url},
        "keyframes": {"seed": {"policy": "increment", "value": 1}},
        "vae": {"kind": "tiny", "source": str(TAESD), "device": "cpu", "max_batch": 8},
        "display": display, "control": {"file": None}, "logging": {"file": None, "level": "WARNING"}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(json.dumps(data))  # JSON is YAML
    return parse_config(data)


def run_daemon(name, config, frames, jobs: JobLog, on_frame=None, dream: bool = False) -> Run:
    """One scenario through the real daemon; with `dream`, built as main.py builds it (the dream's
    metrics, grounding and anchor walk on every keyframe, quality.csv written)."""
    record = Run(name)
    first = len(jobs.jobs)
    path = config.display.output_dir / "config.yaml"
    seams = {}
    if dream:
        from backend.parts import Assembly
        assembly = Assembly(config)
        seams = {"dream": assembly.dream, "build": assembly}
    BenchDaemon(config, path, Shutdown(), run=record, on_frame=on_frame, **seams).run(frames)
    mine = jobs.jobs[first:]
    record.latencies = [latency for _, latency in mine]
    if mine:  # the worker starts K_0 just before the play loop: the wall time includes all of it
        record.start = min(record.start, mine[0][0])
    return record


def run_sequential(config, frames: int, n: int, jobs: JobLog) -> Run:
    """The seed guide's loop: everything on one thread, each diffusion run blocks the display."""
    record = Run("seed guide (sequential)")
    first = len(jobs.jobs)
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
        record.record(pixels, j, timings.encode_ms, timings.write_ms, (time.perf_counter() - t) * 1e3,
                      (index // (n + 1), n + 1))
        deadline += period
        if deadline < time.monotonic():
            deadline = time.monotonic() + period
    source.close()
    record.latencies = [latency for _, latency in jobs.jobs[first:]]
    return record


def keyframes_needed(positions: list[int]) -> int:
    """Keyframes the frames shown need under the continuity schedule: K_0..K_S for S+1
    segments shown, and K_{S+1} too when the last frame is an in-between (it heads there)."""
    segments = sum(1 for p in positions if p == 0)
    return segments + (1 if positions and positions[-1] != 0 else 0)


def picture_steps(pixels: list, positions: list[int]) -> tuple[float, float]:
    """Mean |step| between consecutive frames into a keyframe slot, and everywhere else."""
    steps = [np.abs(b - a).mean() for a, b in zip(pixels, pixels[1:])]
    boundary = [s for s, p in zip(steps, positions[1:]) if p == 0]
    inside = [s for s, p in zip(steps, positions[1:]) if p != 0]
    return (statistics.fmean(boundary) if boundary else math.nan), statistics.fmean(inside)


def segment_sizes(segments: list[tuple[int, int]]) -> str:
    """N of each segment as it ended, changes only ("5→15"), and how many grew while playing."""
    final: dict[int, int] = {}
    grew = set()
    for segment, frames in segments:
        if segment in final and frames != final[segment]:
            grew.add(segment)
        final[segment] = frames
    sizes = [n - 1 for n in final.values()]
    changes = [n for i, n in enumerate(sizes) if i == 0 or n != sizes[i - 1]]
    text = "→".join(map(str, changes)) if len(changes) <= 4 else f"{changes[0]}→…→{changes[-1]}"
    return text + (f" ({len(grew)} stretched)" if grew else "")


def summarize(record: Run, args) -> dict:
    period = 1.0 / args.fps
    n_first = sum(1 for segment, _ in record.segments if segment == 0)  # buffering, not playing
    intervals = np.diff(record.times[n_first:]) if len(record.times) > n_first + 1 else np.array([period])
    wall = record.times[-1] - record.start
    needed = keyframes_needed(record.positions)
    latency = record.latencies
    generation = sum(latency[:needed])
    frames = latency[0] + latency[1] + (len(record.times) - 2) * period
    bound = max(generation, frames)
    step_k, step_i = picture_steps(record.pixels, record.positions)
    holds = [i for i in intervals if i > 1.5 * period]
    return dict(
        name=record.name, wall=wall, bound=bound, ratio=wall / bound, keyframes=record.keyframes,
        needed=needed, generation=generation, frames=frames,
        stalls=record.stalls if record.name != "seed guide (sequential)" else len(holds),
        stall_s=record.stall_seconds if record.name != "seed guide (sequential)" else sum(holds) - len(holds) * period,
        p50=np.percentile(intervals, 50) / period, p95=np.percentile(intervals, 95) / period,
        max=intervals.max() / period, n=segment_sizes(record.segments),
        step_k=step_k, step_i=step_i,
        png=statistics.median(record.png), write=statistics.median(record.write),
        status=statistics.median(record.status))


class ListSource:
    """Keyframes from a list, as a folder would give them (no latency: nothing is timed here)."""

    def __init__(self, images: list) -> None:
        self.images = list(images)

    def next_keyframe(self, previous):
        image = self.images.pop(0) if self.images else None
        return None if image is None else Keyframe(image, generated=False, origin="bench")


def easing_steps(config, n: int, segments: int) -> list[dict]:
    """The picture step at keyframe boundaries vs inside segments for each easing curve: the real
    schedule (fixed N, decode(z_s) in the slot) over the same `segments + 1` keyframes."""
    source, _ = build_source(config)
    images = [source.next_keyframe(None).image]
    while len(images) < segments + 1:
        images.append(source.next_keyframe(images[-1]).image)
    source.close()
    encoder = build_encoder(config)
    rows = []
    for easing in EASINGS:
        settings = dataclasses.replace(schedule_settings(config), interpolation_frames=n, easing=easing)
        gen = HybridGenerator(ListSource(images), encoder, settings).start()
        frames = [gen.next_frame(timeout=10) for _ in range(segments * (n + 1) + 1)]
        gen.close()
        pixels = [f.pixels.astype(np.int16) for f in frames]
        step_k, step_i = picture_steps(pixels, [f.position for f in frames])
        inside = [np.abs(b - a).mean() for a, b, f in zip(pixels, pixels[1:], frames[1:]) if f.position != 0]
        rows.append(dict(easing=easing, step_k=step_k, step_i=step_i,
                         slowest=min(inside) / step_i, fastest=max(inside) / step_i))
    return rows


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
    parser.add_argument("--easing-segments", type=int, default=6,
                        help="segments per easing curve in the easing table (0: skip it)")
    parser.add_argument("--only", nargs="+", metavar="NAME", default=None,
                        help="run only the scenarios whose names start with one of these (e.g. 'fixed N')")
    args = parser.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    if not (TAESD / "taef2_encoder.pth").is_file():
        sys.exit(f"needs the TAEF2 weights at {TAESD}")
    timed, jobs = Timed(), JobLog()
    rows = []
    with FakeComfyUI(latency=args.latency) as fake:
        scenarios = [
            ("fixed N", {}, None),
            ("fixed N, recording on", {"record": True}, None),
            ("fixed N, dream on", {"dream": True}, None),
            ("auto N", {"interpolation_frames": "auto"}, None),
            ("auto N, L x3 at frame 50", {"interpolation_frames": "auto"}, 3.0),
            ("fixed N, raw keyframe slot", {"show_raw_keyframes": True}, None),
        ]
        if args.only:
            scenarios = [s for s in scenarios if any(s[0].startswith(prefix) for prefix in args.only)]
        for name, hybrid, factor in scenarios:
            fake.latency = args.latency
            costs = (timed.decode, timed.decoded)

            def on_frame(count, factor=factor):
                # The fake reads its latency when a job starts: the job log says which had which.
                if factor is not None and count == 50:
                    fake.latency = factor * args.latency

            hybrid = dict(hybrid)
            dream = hybrid.pop("dream", False)
            config = make_config(args.out / name.replace(" ", "_").replace(",", ""), fake.url, args, **hybrid)
            record = run_daemon(name, config, args.frames, jobs, on_frame, dream=dream)
            row = summarize(record, args)
            row["decode"] = (timed.decode - costs[0]) / max(1, timed.decoded - costs[1]) * 1e3
            rows.append(row)
        if not args.only or any("seed guide".startswith(prefix) for prefix in args.only):
            fake.latency = args.latency
            costs = (timed.decode, timed.decoded)
            record = run_sequential(make_config(args.out / "sequential", fake.url, args), args.frames, args.n, jobs)
            row = summarize(record, args)
            row["decode"] = (timed.decode - costs[0]) / max(1, timed.decoded - costs[1]) * 1e3
            rows.append(row)
        fake.latency = 0.0
        easing = (easing_steps(make_config(args.out / "easing", fake.url, args), args.n, args.easing_segments)
                  if args.easing_segments > 0 else [])
    print(f"\nL = {args.latency} s per keyframe, target {args.fps} fps (1/f = {1000 / args.fps:.0f} ms), "
          f"{args.frames} frames, {args.resolution}x{args.resolution}, TAEF2 on CPU ({args.threads} thread); "
          f"keyframe encode {timed.encode / max(1, timed.encoded) * 1e3:.1f} ms\n")
    print("| scenario | N | wall s | bound: generation / frames s | wall/bound | keyframes made / needed | "
          "stalls | stall s | interval p50/p95/max x 1/f | decode ms | PNG ms | write ms | status ms | "
          "step at keyframe | step inside | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['n']} | {r['wall']:.2f} | {r['generation']:.2f} / {r['frames']:.2f} | "
              f"{r['ratio']:.3f} | {r['keyframes']} / {r['needed']} | "
              f"{r['stalls']} | {r['stall_s']:.2f} | {r['p50']:.2f} / {r['p95']:.2f} / {r['max']:.2f} | "
              f"{r['decode']:.1f} | {r['png']:.2f} | {r['write']:.2f} | {r['status']:.2f} | {r['step_k']:.2f} | "
              f"{r['step_i']:.2f} | {r['step_k'] / r['step_i']:.2f} |")
    if easing:
        print(f"\nEasing, N = {args.n}, {args.easing_segments} segments on the same keyframes (mean |step| "
              "per pixel, 0-255; slowest / fastest in-segment step x the mean):\n")
        print("| easing | step at keyframe | step inside | ratio | slowest / fastest step inside |")
        print("|---|---|---|---|---|")
        for r in easing:
            print(f"| {r['easing']} | {r['step_k']:.2f} | {r['step_i']:.2f} | {r['step_k'] / r['step_i']:.2f} | "
                  f"{r['slowest']:.2f} / {r['fastest']:.2f} |")


if __name__ == "__main__":
    main()
