"""Benchmark the dream's drift control: 1,000 drifting keyframes with control off and on, side by side.

    python bench/drift.py                      # 1,000 keyframes each way at 128x64
    python bench/drift.py --keyframes 200 --size 256x128

Path: backend.keyframes.ComfyUISource(dream=...) -> KeyframeGenerator -> ComfyClient against the
fake ComfyUI with its drifting sampler (tests/fake_comfyui/drift.py), i.e. the daemon's own
keyframe path and hooks; `--direct` calls the same Dream hooks around drift_sample in-process
(no server), for a quick look. Latents for novelty come from the real TAEF2 tiny VAE in
../shared/models/taesd through LatentEncoder. K_0 is scikit-image's astronaut photo; the seed
policy is random (a fresh seed per keyframe), denoise 0.5. To exercise the guard, both runs get
the same faults: keyframes 600-605 come back as near-copies (collapse), keyframe 800 black.
The "picture step" is the mean absolute 8-bit difference between consecutive keyframes (the
in-betweens of a segment split it into N+1 smaller steps), split into transitions into a keyframe
made from the anchor (re-anchors and guard rescues) vs chained ones. The "displayed step" is
the same change between consecutive frames on screen: the segment's latents slerped with 8
in-betweens and decoded with TAEF2, for every segment into a re-anchor and every 10th other.
A third run, control on with Reinhard grounding instead of histogram matching, measures the two
modes against each other. Writes bench/out/drift_contact.png (every 50th keyframe: off, on,
on-reinhard from the top), bench/out/drift_plot.png (magenta share and chroma over keyframes)
and bench/out/quality_<run>.csv.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.dream.dream import Dream  # noqa: E402
from backend.dream.settings import DreamSettings  # noqa: E402
from backend.frames import Keyframe  # noqa: E402
from dream_cost import cost_at_512, describe_cost  # noqa: E402  (bench/dream_cost.py)

SHARED_TAESD = REPO.parent / "shared" / "models" / "taesd"
OUT = REPO / "bench" / "out"
CHECKPOINTS = (0, 100, 250, 500, 1000)
SHOWN = ("magenta", "chroma", "sharpness", "l_mean", "l_std", "saturation", "hue", "hue_entropy", "hf_ratio")
FAULTS = {**{k: "collapse" for k in range(600, 606)}, 800: "black"}
RESCUES = ("anchor", "reference", "collapse", "drift", "blank")


def start_image(width: int, height: int) -> Image.Image:
    from skimage import data
    return Image.fromarray(data.astronaut()).resize((width, height), Image.LANCZOS)


class Encoder:
    def __init__(self):
        import torch

        from backend.interpolation.latent_encoder import LatentEncoder
        torch.set_num_threads(1)     # a 128x64 encode is faster on one thread than fighting for two
        self.vae = LatentEncoder.load("tiny", source=str(SHARED_TAESD), device="cpu", dtype="float32")

    def __call__(self, image: Image.Image) -> np.ndarray:
        return self.vae.encode([image])[0].cpu().numpy()      # [C, h, w]

    def segment_steps(self, z0: np.ndarray, z1: np.ndarray, n: int) -> np.ndarray:
        """The displayed frames of one segment as the schedule makes them (decode(z0), then
        decode(slerp(z0, z1, j / (n + 1))) for j = 1..n, then decode(z1), where the next segment
        opens): the mean absolute 8-bit change between each pair of consecutive frames [n + 1]."""
        import torch

        from backend.interpolation.spherical_lerp import slerp
        a, b = torch.from_numpy(z0)[None], torch.from_numpy(z1)[None]
        latents = torch.cat([slerp(a, b, j / (n + 1)) for j in range(n + 2)])
        frames = self.vae.decode_to_uint8(latents).astype(np.int16)
        return np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))


def run_source(settings: DreamSettings, k0: Image.Image, count: int, encode, csv: Path, rng_seed: int):
    """Keyframes through ComfyUISource(dream=...) against the drifting fake ComfyUI."""
    from backend.comfyui.client import ComfyClient
    from backend.comfyui.keyframe import KeyframeGenerator
    from backend.comfyui.workflow import load_workflow
    from backend.keyframes import ComfyUISource, SeedPolicy
    from tests.fake_comfyui import FakeComfyUI

    dream = Dream(settings, quality_path=csv)
    prompts = [type("P", (), {"prompt": "a dreamlike landscape", "negative": ""})()]
    with FakeComfyUI(history_delay=0.0, previews=False) as fake:
        fake.sampler = "drift"
        client = ComfyClient(fake.url, request_timeout=10.0, poll_interval=0.5)
        gen = KeyframeGenerator(client, img2img=load_workflow("builtin:img2img"),
                                txt2img=load_workflow("builtin:txt2img"), checkpoint=None, steps=1, cfg=7.0,
                                sampler="euler", scheduler="normal", width=k0.width, height=k0.height)
        source = ComfyUISource(gen, prompts=prompts, prompt_period=10**9, seed=SeedPolicy("random", 0,
                               random.Random(rng_seed)), denoise=0.5, start_image=k0, client=client, dream=dream)
        try:
            def make(previous, index):
                if index in FAULTS:
                    fake.sampler_next = [FAULTS[index]]
                return source.next_keyframe(previous)
            return loop(dream, make, count, encode)
        finally:
            source.close()


def run_direct(settings: DreamSettings, k0: Image.Image, count: int, encode, csv: Path, rng_seed: int):
    """The same hook calls as ComfyUISource makes, around drift_sample in-process."""
    from tests.fake_comfyui import drift

    dream, rng = Dream(settings, quality_path=csv), random.Random(rng_seed)

    def make(previous, index):
        if previous is None:
            return Keyframe(k0, generated=False, origin="start_image")
        plan = dream.plan_input(previous)
        seed = rng.randrange(2**32)
        for _ in range(3):
            mode = FAULTS.get(index, "drift")
            pixels = np.asarray(plan.image)
            out = (drift.drift_sample(pixels, seed, plan.denoise or 0.5) if mode == "drift" else
                   drift.collapse_sample(pixels, seed) if mode == "collapse" else drift.black_sample(pixels, seed))
            keyframe = Keyframe(Image.fromarray(out), 0.0, "a dreamlike landscape", seed, True, "img2img")
            if not dream.check_blank(keyframe.image):
                dream.keyframe_made(keyframe)
                return keyframe
            seed, index = seed + 1, -1
        return Keyframe(previous.image, 0.0, previous.prompt, seed, False, "skipped")

    return loop(dream, make, count, encode)


INBETWEENS = 8      # in-betweens per segment for the displayed-frame steps (the daemon's auto N varies)


def loop(dream: Dream, make, count: int, encode) -> dict:
    keyframes, rows, steps, observe_ms, shown = [], [], [], [], []
    previous = previous_latent = None
    for index in range(count + 1):
        keyframe = make(previous, index)
        latent = encode(keyframe.image)
        start = time.perf_counter()
        row = dream.observe(keyframe, latent)
        observe_ms.append((time.perf_counter() - start) * 1000)
        anchored = row["reason"] in RESCUES
        # decoding every segment would take minutes: every segment into a re-anchor, every 10th other
        if previous_latent is not None and (anchored or index % 10 == 0):
            shown.append((encode.segment_steps(previous_latent, latent, INBETWEENS), anchored))
        previous_latent = latent
        if previous is not None:
            step = float(np.abs(np.asarray(keyframe.image, np.int16) - np.asarray(previous.image, np.int16)).mean())
            steps.append((step, row["reason"] in RESCUES))
        rows.append(row)
        keyframes.append(keyframe.image if index % 50 == 0 else None)
        previous = keyframe
    return {"rows": rows, "steps": steps, "shown": shown, "thumbs": keyframes, "status": dream.status_fields(),
            "observe_ms": statistics.median(observe_ms)}


def report(name: str, result: dict, threshold: float) -> None:
    rows = result["rows"]
    first = rows[0]
    print(f"\n== control {name} ==")
    print("keyframe " + " ".join(f"{m:>11}" for m in SHOWN) + "     novelty")
    for k in CHECKPOINTS:
        if k < len(rows):
            r = rows[k]
            nov = "" if r["novelty"] is None else f"{r['novelty']:.4f}"
            print(f"{k:>8} " + " ".join(f"{r[m]:>11.4g}" for m in SHOWN) + f"  {nov:>10}")
    worst = {m: max((r[m] / first[m] - 1 for r in rows), key=abs) for m in ("chroma", "sharpness", "l_mean",
                                                                              "l_std", "saturation")}
    print("worst deviation from K_0: " + ", ".join(f"{m} {v:+.1%}" for m, v in worst.items())
          + f", magenta max {max(r['magenta'] for r in rows):.3f}")
    novelty = [r["novelty"] for r in rows[1:] if r["novelty"] is not None]
    run = longest = 0
    for n in novelty:
        run = run + 1 if n < threshold else 0
        longest = max(longest, run)
    print(f"novelty: mean {statistics.mean(novelty):.4f}, median {statistics.median(novelty):.4f}, "
          f"below {threshold:g} for {sum(n < threshold for n in novelty)} keyframes, longest run {longest}")
    events = result["status"]["events"]
    print("events: " + ", ".join(f"{k} {v}" for k, v in events.items()))
    anchored = [s for s, a in result["steps"] if a]
    chained = [s for s, a in result["steps"] if not a]
    for label, values in (("into a keyframe made from the anchor", anchored), ("chained", chained)):
        if values:
            print(f"picture step {label}: mean {statistics.mean(values):.2f}, max {max(values):.2f} levels "
                  f"({len(values)} transitions)")
    for label, wanted in (("into a keyframe made from the anchor", True), ("chained", False)):
        frames = np.concatenate([f for f, a in result["shown"] if a == wanted] or [np.empty(0)])
        if frames.size:
            print(f"displayed frame-to-frame step, segments {label} ({INBETWEENS} in-betweens, TAEF2 decode of "
                  f"slerped latents): mean {frames.mean():.2f}, max {frames.max():.2f} levels "
                  f"({frames.size // (INBETWEENS + 1)} segments)")
    print(f"observe() per keyframe (metrics + novelty + quality.csv), median: {result['observe_ms']:.2f} ms; "
          f"grounding of the last plan: {result['status']['cost_ms']['grounding_ms']:.2f} ms")


def contact_sheet(runs: list[tuple[str, dict]], path: Path) -> None:
    """Every 50th keyframe, one row per run (control off on top)."""
    rows = [(name, [t for t in run["thumbs"] if t is not None]) for name, run in runs]
    w, h = rows[0][1][0].size
    label = 80
    sheet = Image.new("RGB", (label + len(rows[0][1]) * (w + 2), len(rows) * (h + 4) + 14), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for col in range(len(rows[0][1])):
        draw.text((label + col * (w + 2), 1), str(col * 50), fill=(200, 200, 200))
    for row, (name, images) in enumerate(rows):
        y = 14 + row * (h + 4)
        draw.text((4, y + h // 2 - 5), f"control {name}", fill=(230, 230, 230))
        for col, im in enumerate(images):
            sheet.paste(im, (label + col * (w + 2), y))
    sheet.save(path)


COLOURS = ((200, 30, 30), (30, 60, 200), (30, 150, 60))


def plot(runs: list[tuple[str, dict]], path: Path) -> None:
    """Magenta share and chroma (relative to K_0) over keyframes, one line per run."""
    width, height, pad = 1000, 300, 40
    image = Image.new("RGB", (width + 2 * pad, 2 * height + 3 * pad), "white")
    draw = ImageDraw.Draw(image)
    chroma0 = runs[0][1]["rows"][0]["chroma"]
    panels = (("magenta-crimson share, 0..1", lambda r: r["magenta"], 1.0, 0.2),
              ("chroma / chroma of K_0, 0..6", lambda r: r["chroma"] / chroma0, 6.0, 1.0))
    legend = "; ".join(f"{name}: {('red', 'blue', 'green')[i]}" for i, (name, _) in enumerate(runs))
    for p, (title, value, top, guide) in enumerate(panels):
        y0 = pad + p * (height + pad)
        draw.rectangle((pad, y0, pad + width, y0 + height), outline="black")
        draw.text((pad + 4, y0 + 4), f"{title} (grey line: {guide:g}) - control {legend}", fill="black")
        y_guide = y0 + height - guide / top * height
        draw.line((pad, y_guide, pad + width, y_guide), fill=(150, 150, 150))
        for (_, run), colour in zip(runs, COLOURS):
            rows = run["rows"]
            points = [(pad + i * width / max(1, len(rows) - 1), y0 + height - min(top, value(r)) / top * height)
                      for i, r in enumerate(rows)]
            draw.line(points, fill=colour, width=1)
    image.save(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keyframes", type=int, default=1000)
    parser.add_argument("--size", default="128x64")
    parser.add_argument("--direct", action="store_true", help="no fake server: the hooks around drift_sample")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    OUT.mkdir(parents=True, exist_ok=True)
    k0, encode = start_image(width, height), Encoder()
    import inspect

    from backend.keyframes import ComfyUISource
    has_hook = "dream" in inspect.signature(ComfyUISource).parameters
    direct = args.direct or not has_hook
    run = run_direct if direct else run_source
    print(f"path: {'Dream hooks around drift_sample in-process' if direct else 'ComfyUISource(dream=...) -> KeyframeGenerator -> ComfyClient -> fake ComfyUI (drift sampler)'}; "
          f"{args.keyframes} keyframes each way at {width}x{height}, latents from TAEF2")
    results = {}
    arms = (("off", DreamSettings(control=False)), ("on", DreamSettings()),
            ("on-reinhard", DreamSettings(grounding="reinhard")))
    for name, settings in arms:
        csv = OUT / f"quality_{name}.csv"
        for old in OUT.glob(f"quality_{name}.csv*"):
            old.unlink()
        start = time.perf_counter()
        results[name] = run(settings, k0, args.keyframes, encode, csv, args.seed)
        print(f"control {name}: {time.perf_counter() - start:.0f} s")
    threshold = DreamSettings().collapse_novelty
    for name, _ in arms:
        report(name, results[name], threshold)
    print("\n" + describe_cost(cost_at_512()))
    contact_sheet([(name, results[name]) for name, _ in arms], OUT / "drift_contact.png")
    plot([(name, results[name]) for name, _ in arms], OUT / "drift_plot.png")
    print(f"wrote {OUT / 'drift_contact.png'} and {OUT / 'drift_plot.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
