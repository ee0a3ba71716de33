"""Everything a render checks before its first frame: config defaults, the walk, outputs, the codec,
the workflow, the servers, the checkpoint, its family, sampler names. Each failure is a UsageError
with one sentence saying what to do; no frame has been written by then.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class UsageError(Exception):
    """A problem the user fixes before a render starts: printed as one sentence, exit 2."""


@dataclass(frozen=True)
class Outputs:
    video: Path | None
    png_dir: Path | None


def outputs(path: Path, no_png: bool, resume: bool) -> Outputs:
    """Where the frames go; UsageError unless every place can be written."""
    if path.suffix.lower() == ".mp4":
        out = Outputs(path, None if no_png else path.with_name(path.stem + "_frames"))
    elif path.suffix:
        raise UsageError(f"--output {path}: give an .mp4 file or a folder for PNGs")
    else:
        out = Outputs(None, path)
    if resume and out.png_dir is None:
        raise UsageError("--resume reads the frames back from the PNG folder: drop --no-png")
    for folder in {p for p in (out.png_dir, out.video.parent if out.video else None) if p is not None}:
        probe = folder / ".reverie-write-test"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise UsageError(f"cannot write to {folder} ({exc.strerror or exc}): choose another --output") from None
    return out




@dataclass
class RenderJob:
    frames: list
    frame_job: object
    pool: object
    sink: object
    outputs: Outputs
    family: object
    family_reason: str


def _config(path: Path):
    from backend.config import ConfigError, load_config, parse_config

    if not path.exists():
        if path.name == "config.yaml" and path.parent == Path(__file__).resolve().parents[2]:
            return parse_config({})          # no config.yaml at all: the built-in defaults
        raise UsageError(f"--config {path} does not exist")
    try:
        return load_config(path)
    except ConfigError as exc:
        raise UsageError(f"{exc}") from None


def prepare(args) -> RenderJob:
    from backend.comfyui.errors import ComfyError
    from backend.comfyui.pool import PoolError, ServerPool
    from backend.comfyui.workflow import WorkflowError, load_workflow
    from backend.render.families import FAMILIES, detect, refusal
    from backend.render.frames_out import FrameSink, claim_png_dir
    from backend.render.graphs import check_walkable
    from backend.render.transfer import checkpoint_metadata
    from backend.render.video import VideoError, check_codec
    from backend.render.walk import FrameJob, WalkError, plan_walk

    config = _config(args.config)
    try:
        frames = plan_walk(list(args.seeds), args.frames, loop=args.loop)
    except WalkError as exc:
        raise UsageError(str(exc)) from None
    out = outputs(args.output, args.no_png, args.resume)
    if out.video is not None:
        try:
            check_codec(args.codec)
        except VideoError as exc:
            raise UsageError(str(exc)) from None
    try:
        workflow = load_workflow(args.workflow or config.comfyui.txt2img_workflow, config.comfyui.node_ids)
        check_walkable(workflow)
    except WorkflowError as exc:
        raise UsageError(str(exc)) from None

    urls = args.url or [config.comfyui.url]
    pool = ServerPool(urls)
    try:
        client = pool.first_healthy()
        names = client.checkpoints()
        info = client.object_info()
    except (PoolError, ComfyError) as exc:
        pool.close()
        raise UsageError(str(exc)) from None
    try:
        checkpoint = args.checkpoint or config.comfyui.checkpoint or workflow.checkpoint()
        if checkpoint not in names:
            shown = ", ".join(names) if names else "none (put one in ComfyUI's models/checkpoints)"
            raise UsageError(f"checkpoint {checkpoint!r} is not on {client.url}; it has: {shown} (pass --checkpoint)")
        if args.family != "auto":
            family, reason = FAMILIES[args.family], "--family"
        else:
            family, reason = detect(checkpoint, workflow.class_types(), checkpoint_metadata(client.url, checkpoint))
        if not family.walkable:
            raise UsageError(f"{checkpoint} looks like {family.label} ({reason}): {refusal(family)}")
        missing = [n for n in ("LoadLatent", "KSamplerAdvanced") if n not in info]
        if missing:
            raise UsageError(f"the ComfyUI at {client.url} lacks the core node(s) {', '.join(missing)}: update ComfyUI")
        sampling = _sampling(args, config, checkpoint, info["KSamplerAdvanced"]["input"]["required"])
    except UsageError:
        pool.close()
        raise
    job = FrameJob(workflow, sampling, family, websocket_output="SaveImageWebsocket" in info)
    if out.png_dir is not None:
        settings = {"seeds": list(args.seeds), "frames": args.frames, "loop": args.loop, "family": family.name,
                    "workflow": workflow.source, **sampling.__dict__}
        try:
            claim_png_dir(out.png_dir, settings, resume=args.resume)
        except (ValueError, OSError) as exc:
            pool.close()
            raise UsageError(str(exc)) from None
    sink = FrameSink(video=out.video, png_dir=out.png_dir, fps=args.fps or config.display.fps,
                     size=(sampling.width, sampling.height), crf=args.crf, codec=args.codec)
    return RenderJob(frames, job, pool, sink, out, family, reason)


def _sampling(args, config, checkpoint: str, schema: dict):
    from backend.render.graphs import Sampling

    keyframes = config.keyframes
    width, height = args.resolution or config.generation.resolution
    sampler = args.sampler or keyframes.sampler
    scheduler = args.scheduler or keyframes.scheduler
    for what, name, allowed in (("sampler", sampler, schema["sampler_name"][0]),
                                ("scheduler", scheduler, schema["scheduler"][0])):
        if name not in allowed:
            raise UsageError(f"ComfyUI has no {what} {name!r}; it has: {', '.join(allowed)} (pass --{what})")
    steps = args.steps if args.steps is not None else keyframes.steps
    cfg = args.cfg if args.cfg is not None else keyframes.cfg
    if not 1 <= steps <= 10000 or not 0.0 <= cfg <= 100.0:
        raise UsageError(f"--steps must be 1..10000 and --cfg 0..100, got {steps} and {cfg}")
    prompt = keyframes.prompts[0]
    return Sampling(prompt=args.prompt if args.prompt is not None else prompt.prompt,
                    negative=args.negative if args.negative is not None else prompt.negative,
                    steps=steps, cfg=float(cfg), sampler=sampler, scheduler=scheduler, checkpoint=checkpoint,
                    width=width, height=height)
