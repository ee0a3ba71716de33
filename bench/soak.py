"""Soak: the daemon for N frames against the fake ComfyUI with jittered latency and injected faults,
measuring what a run of days would show: memory, threads, file handles, disk on both sides, stalls,
errors and lost frames.

    python bench/soak.py [--frames 20000] [--fps 60] [--size 64] [--out DIR]

The daemon runs in a child process (this script with --child: main.py's start-up, plus two seams:
a FrameWriter whose os.replace refuses current_frame.png k times while a flag file exists, like a
Windows reader holding it, and a record of every frame index handed to the writer). The parent runs
FakeComfyUI, injects faults at fixed points of the run (execution errors, a skipped keyframe, a kill
mid-job and restart, refused connections, PermissionError bursts), samples the child with psutil and
prints a table. Lost frames: every index 0..N-1 must reach the writer once, in order, and be written.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Faults by fraction of the run: (at, name). Each fires once when the status frame passes it.
FAULTS = [(0.15, "execution_error"), (0.25, "lock_burst"), (0.35, "kill_mid_job"), (0.45, "execution_error"),
          (0.55, "skip_keyframe"), (0.65, "lock_burst"), (0.70, "refuse_3s"), (0.80, "execution_error"),
          (0.85, "kill_mid_job"), (0.90, "lock_burst")]


# -- child: the daemon with two seams ------------------------------------------------------------
def child(config_path: Path, max_frames: int, record: Path, lock_flag: Path) -> int:
    from backend.config import load_config
    from backend.daemon import Daemon
    from backend.frame_writer import FrameWriter
    from backend.logging_setup import setup_logging
    from backend.shutdown import Shutdown

    config = load_config(config_path)
    setup_logging(config.logging.level, config.logging.file, max_bytes=config.logging.max_bytes,
                  backups=config.logging.backups, console=False)
    shutdown = Shutdown().install()
    daemon = Daemon(config, config_path, shutdown)
    refused = {"calls": 0, "refusals": 0}
    attempts: dict[str, int] = {}

    def replace(src: str, dst: str) -> None:
        # While lock_flag exists every replace of current_frame.png is refused k times (k in the flag).
        refused["calls"] += 1
        if dst.endswith("current_frame.png") and lock_flag.exists():
            k = int(lock_flag.read_text() or 5)
            attempts[src] = attempts.get(src, 0) + 1
            if attempts[src] <= k:
                refused["refusals"] += 1
                raise PermissionError(13, "locked by a reader", dst)
        attempts.pop(src, None)
        os.replace(src, dst)

    display = config.display
    writer = FrameWriter(display.output_dir, png_compression=display.png_compression, ring_size=display.ring_size,
                         history_keep=display.history_keep, replace=replace)
    seen = {"handed": 0, "written": 0, "out_of_order": 0, "failed": 0, "next": 0}
    real_write = writer.write

    def write(frame, index):
        seen["handed"] += 1
        if index != seen["next"]:
            seen["out_of_order"] += 1
        seen["next"] = index + 1
        try:
            path = real_write(frame, index)
        except Exception:
            seen["failed"] += 1
            raise
        seen["written"] += 1
        return path

    writer.write = write
    daemon.writer = writer
    try:
        code = daemon.run(max_frames)
    finally:
        shutdown.finished.set()
        record.write_text(json.dumps({**seen, **refused}))
    return code


# -- parent: fake ComfyUI, faults, sampling --------------------------------------------------------
def tiny_vae(folder: Path) -> Path:
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=[8, 8, 8, 8], down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1, sample_size=64)
    vae.save_pretrained(folder)
    return folder


def write_config(folder: Path, vae: Path, url: str, fps: float, size: int) -> Path:
    config = {
        "generation": {"resolution": [size, size], "hybrid": {"interpolation_frames": "auto", "keyframe_denoise": 0.5}},
        "comfyui": {"url": url, "request_timeout": 5, "job_timeout": 30},
        "keyframes": {"seed": {"policy": "random"}},
        "vae": {"kind": "kl", "source": str(vae), "family": "sd1", "device": "cpu", "max_batch": 8},
        "display": {"fps": fps, "output_dir": "out", "history_keep": 50, "ring_size": 3},
        "control": {"file": "out/control.ini"},
        "logging": {"file": "out/reverie.log", "level": "INFO", "max_bytes": 200_000, "backups": 2},
    }
    path = folder / "config.yaml"
    path.write_text(json.dumps(config, indent=1))
    return path


def read_status(out: Path) -> dict:
    try:
        return json.loads((out / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def sample(proc, out: Path, fake) -> dict:
    status = read_status(out)
    with proc.oneshot():
        return {"frame": status.get("frame", -1), "rss_mb": proc.memory_info().rss / 2**20,
                "threads": proc.num_threads(), "handles": proc.num_fds() if hasattr(proc, "num_fds")
                else proc.num_handles(), "sockets": len(proc.net_connections(kind="inet")),
                "out_files": sum(1 for p in out.rglob("*") if p.is_file()),
                "fake_files": sum(fake.file_counts().values()), "stalls": status.get("stalls", 0),
                "keyframes": status.get("keyframes", 0), "fps": status.get("fps", 0.0)}


def inject(name: str, fake, lock_flag: Path, log: list) -> None:
    log.append((time.strftime("%H:%M:%S"), name))
    if name == "execution_error":
        fake.fail_next_execution = 1
    elif name == "skip_keyframe":
        fake.fail_next_execution = 3
    elif name == "kill_mid_job":
        fake.kill_mid_run = True
    elif name == "lock_burst":
        lock_flag.write_text("5")
    elif name == "refuse_3s":
        fake.refuse_connections = True


def parent(args) -> int:
    import psutil

    from tests.fake_comfyui import FakeComfyUI

    work = Path(args.out or tempfile.mkdtemp(prefix="reverie-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    out, record, lock_flag = work / "out", work / "record.json", work / "lock.flag"
    vae = tiny_vae(work / "tiny-vae")
    with FakeComfyUI(root=work / "comfy", latency=args.latency, jitter=args.latency * 0.6) as fake:
        config = write_config(work, vae, fake.url, args.fps, args.size)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        started = time.monotonic()
        child_proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", "--config", str(config),
                                       "--frames", str(args.frames), "--record", str(record), "--lock-flag",
                                       str(lock_flag)], cwd=work, env=env, stderr=subprocess.PIPE, text=True)
        proc = psutil.Process(child_proc.pid)
        marks = {"warm (10%)": 0.10, "middle (50%)": 0.50, "end (99%)": 0.99}
        trend, next_tenth = [], 0.1   # (frame, RSS MiB) every tenth of the run, for the slope
        samples, faults, fault_log, peak = {}, list(FAULTS), [], {"threads": 0, "handles": 0}
        lock_until = refuse_until = 0.0
        while child_proc.poll() is None:
            time.sleep(0.25)
            try:
                now = sample(proc, out, fake)
            except psutil.Error:
                break
            if now["frame"] < 0:
                continue
            if "first frame" not in samples:
                samples["first frame"] = now
            peak = {k: max(peak[k], now[k]) for k in peak}
            done = now["frame"] / args.frames
            if done >= next_tenth:
                trend.append((now["frame"], now["rss_mb"]))
                next_tenth += 0.1
            for label, at in list(marks.items()):
                if done >= at:
                    samples[label] = now
                    del marks[label]
            while faults and done >= faults[0][0]:
                name = faults.pop(0)[1]
                inject(name, fake, lock_flag, fault_log)
                lock_until = time.monotonic() + 3 if name == "lock_burst" else lock_until
                refuse_until = time.monotonic() + 3 if name == "refuse_3s" else refuse_until
            if lock_until and time.monotonic() > lock_until:
                lock_flag.unlink(missing_ok=True)
                lock_until = 0.0
            if refuse_until and time.monotonic() > refuse_until:
                fake.refuse_connections = False
                refuse_until = 0.0
        stderr = child_proc.stderr.read()
        wall = time.monotonic() - started
        final = {"fake_files": fake.file_counts(), "history_entries": len(fake.history)}
        fake.refuse_connections = False
    rec = json.loads(record.read_text()) if record.exists() else {}
    status = read_status(out)
    log_text = "\n".join(p.read_text(errors="replace") for p in sorted(out.glob("reverie.log*")))
    report(args, work, child_proc.returncode, wall, samples, peak, rec, status, final, fault_log, log_text, out, stderr)
    print("\nRSS every tenth of the run (frame: MiB): " + ", ".join(f"{f}: {m:.1f}" for f, m in trend))
    if len(trend) >= 3:
        import numpy as np

        frames, rss = np.array(trend).T
        slope = np.polyfit(frames, rss, 1)[0] * 10_000
        print(f"least-squares RSS slope after warm-up: {slope:+.2f} MiB per 10,000 frames")
    return 0


def report(args, work, code, wall, samples, peak, rec, status, final, fault_log, log_text, out, stderr) -> None:
    print(f"# Reverie soak: {args.frames} frames at {args.size}x{args.size}, target {args.fps} fps, "
          f"fake latency {args.latency}s +-60%, work dir {work}\n")
    print(f"exit code {code}, wall {wall:.0f} s ({args.frames / max(wall, 1e-9):.1f} frames/s overall)\n")
    cols = ("frame", "rss_mb", "threads", "handles", "sockets", "out_files", "fake_files", "keyframes", "stalls", "fps")
    print("| point | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for label, s in samples.items():
        print(f"| {label} | " + " | ".join(f"{s[c]:.1f}" if isinstance(s[c], float) else str(s[c]) for c in cols) + " |")
    warm, end = samples.get("warm (10%)"), samples.get("end (99%)")
    growth = (end["rss_mb"] / warm["rss_mb"] - 1) * 100 if warm and end else float("nan")
    lost = args.frames - rec.get("written", 0)
    rows = [
        ("RSS growth after warm-up (10% -> 99%)", f"{growth:+.2f} %", "< 5 %"),
        ("threads warm / end / peak", f"{warm and warm['threads']} / {end and end['threads']} / {peak['threads']}",
         "constant"),
        ("open handles warm / end / peak", f"{warm and warm['handles']} / {end and end['handles']} / {peak['handles']}",
         "constant"),
        ("files in output/ at end", str(sum(1 for p in out.rglob('*') if p.is_file())), "bounded"),
        ("fake ComfyUI input/output/temp files at end", str(final["fake_files"]), "bounded"),
        ("fake ComfyUI history entries left", str(final["history_entries"]), "0-1"),
        ("frames handed to the writer / written", f"{rec.get('handed')} / {rec.get('written')}", f"{args.frames}"),
        ("out-of-order or repeated indices", str(rec.get("out_of_order")), "0"),
        ("frame writes failed", str(rec.get("failed")), "0"),
        ("lost frames", str(lost), "0"),
        ("PermissionError refusals absorbed", str(rec.get("refusals")), "> 0"),
        ("stalls (count / seconds)", f"{status.get('stalls')} / {status.get('stall_seconds', 0):.1f}", "few"),
        ("keyframes made", str(status.get("keyframes")), ""),
        ("keyframe retries / skips (log)", f"{log_text.count('retrying with a new seed')} / "
                                           f"{log_text.count('skipping it')}", ""),
        ("tracebacks in log / stderr", f"{log_text.count('Traceback')} / {stderr.count('Traceback')}", "0 / 0"),
        ("final state", str(status.get("state")), "stopped"),
    ]
    print("\n| measure | value | target |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\nfaults injected: " + ", ".join(f"{t} {n}" for t, n in fault_log))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000, help="frames to play (default 20000)")
    parser.add_argument("--fps", type=float, default=60.0, help="target fps (default 60, the config maximum)")
    parser.add_argument("--size", type=int, default=64, help="frame width = height, multiple of 8 (default 64)")
    parser.add_argument("--latency", type=float, default=0.25, help="fake keyframe latency in s (jitter +-60%%)")
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a new temp folder)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--record", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--lock-flag", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.config, args.frames, args.record, args.lock_flag)
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
