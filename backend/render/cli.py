"""`python backend/main.py render ...`: render a seed walk through ComfyUI into an MP4 and PNGs.

Exit codes: 0 = every frame written; 2 = a problem to fix before rendering (one message, nothing
rendered); 1 = the render stopped part way (ComfyUI gone for good, a frame failing everywhere:
what was made is kept, --resume carries on); 130 = stopped by Ctrl-C (the files are playable).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from backend.render.families import FAMILIES
from backend.render.setup import UsageError, prepare

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config.yaml"
MAX_SEED = 2 ** 64 - 1


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed is 0..{MAX_SEED}, got {value}")
    return value


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"resolution is WIDTHxHEIGHT, e.g. 512x512, got {text!r}") from None
    if width % 8 or height % 8 or width < 64 or height < 64:
        raise argparse.ArgumentTypeError(f"width and height must be multiples of 8 and at least 64, got {text}")
    return width, height


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="reverie render", description="Render a seed walk: each seed's noise made exactly as ComfyUI "
        "makes it, slerped between the seeds, every frame a full diffusion run in ComfyUI, written to MP4 "
        "and PNGs. Unset options come from config.yaml.")
    p.add_argument("--seeds", type=_seed, nargs="+", required=True, metavar="SEED", help="two or more seeds")
    p.add_argument("--loop", action="store_true", help="walk back to the first seed (a seamless loop)")
    p.add_argument("--frames", type=int, default=16, metavar="N",
                   help="frames per leg, both ends included (default 16)")
    p.add_argument("--prompt", help="positive prompt (default: the first of keyframes.prompts)")
    p.add_argument("--negative", help="negative prompt (default: the first prompt's negative)")
    p.add_argument("--resolution", type=_size, metavar="WxH", help="default: generation.resolution")
    p.add_argument("--steps", type=int, help="default: keyframes.steps")
    p.add_argument("--cfg", type=float, help="default: keyframes.cfg")
    p.add_argument("--sampler", help="ComfyUI sampler_name (default: keyframes.sampler)")
    p.add_argument("--scheduler", help="ComfyUI scheduler (default: keyframes.scheduler)")
    p.add_argument("--fps", type=float, help="video frame rate (default: display.fps)")
    p.add_argument("--output", type=Path, default=Path("output/walk.mp4"), metavar="PATH",
                   help="an .mp4 file (PNGs go to PATH_frames/ beside it) or a folder for PNGs only "
                   "(default: output/walk.mp4)")
    p.add_argument("--no-png", action="store_true", help="write only the MP4 (then --resume cannot work)")
    p.add_argument("--resume", action="store_true", help="keep the frames already in the PNG folder")
    p.add_argument("--checkpoint", help="checkpoint name on the server (default: comfyui.checkpoint, "
                   "else the workflow's)")
    p.add_argument("--workflow", help="API-format txt2img workflow (default: comfyui.txt2img_workflow)")
    p.add_argument("--family", choices=["auto", *FAMILIES], default="auto",
                   help="model family of the checkpoint (default: detect)")
    p.add_argument("--url", nargs="+", metavar="URL", help="one or more ComfyUI servers (default: comfyui.url)")
    p.add_argument("--codec", default="libx264", help="PyAV video encoder (default libx264: H.264)")
    p.add_argument("--crf", type=int, default=18, help="H.264 quality, lower is better (default 18)")
    p.add_argument("--config", type=Path, default=REPO_CONFIG, metavar="PATH", help="config file for defaults")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)       # argparse's own errors already exit 2 with one line
    try:
        return _run(args)
    except UsageError as problem:
        print(f"reverie render: {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:          # during the checks, before any frame: nothing to keep
        print("reverie render: stopped before the first frame", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    from backend.comfyui.errors import ComfyError
    from backend.comfyui.pool import PoolError
    from backend.render.renderer import render

    job = prepare(args)     # every check that can fail before the first frame (UsageError)
    began = time.monotonic()
    try:
        result = render(job.frames, job.frame_job, job.pool, job.sink, resume=args.resume, progress=not args.quiet)
    except (PoolError, ComfyError) as exc:
        job.sink.close()
        print(f"reverie render: stopped after {job.sink.written} of {len(job.frames)} frames: {exc}\n"
              f"  the frames so far are kept; rerun with --resume to carry on", file=sys.stderr)
        return 1
    finally:
        job.pool.close()
    spent = time.monotonic() - began
    per = f", {spent / result.rendered:.1f} s/frame" if result.rendered else ""
    where = " and ".join(str(p) for p in (job.outputs.video, job.outputs.png_dir) if p is not None)
    print(f"{'stopped by Ctrl-C: ' if result.interrupted else ''}{result.written} of {result.total} frames in "
          f"{where} ({result.rendered} rendered in {spent:.0f} s{per}, {result.resumed} resumed)")
    for line in job.pool.summary():
        print("  " + line)
    if result.interrupted:
        return 130
    return 0 if result.complete else 1
