"""The dream's per-keyframe cost at 512x512: metrics + detail grounding + palette grounding.

    python bench/dream_cost.py

Measured through the Dream's own hooks in the daemon's order, per keyframe: `check_blank` on
ComfyUI's result, `keyframe_made`, `observe` on the schedule's fitted copy of it (with a
[4, 64, 64] latent for novelty), and `plan_input` with it as the next img2img input (detail
and palette grounding toward K_0). Each keyframe is a new picture object (the hooks share one
analysis of it, as in the daemon), cycling through 12 different 512x512 pictures; K_0 is
scikit-image's coffee photo, the keyframes variations of its astronaut photo. The component
rows time each step alone on one picture, for where the time goes.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.dream.detail import ground_detail  # noqa: E402
from backend.dream.dream import Dream  # noqa: E402
from backend.dream.metrics import analyse  # noqa: E402
from backend.dream.palette import PaletteTarget, ground  # noqa: E402
from backend.dream.settings import DreamSettings  # noqa: E402
from backend.frames import Keyframe  # noqa: E402

ROUNDS = 60


def pictures() -> tuple[Image.Image, list[Image.Image]]:
    from skimage import data
    k0 = Image.fromarray(data.coffee()).resize((512, 512))
    astronaut = Image.fromarray(data.astronaut())
    variants = []
    for n in range(12):
        image = astronaut.rotate(n * 7, resample=Image.BILINEAR) if n % 2 else astronaut.transpose(n % 3)
        variants.append(ImageEnhance.Color(image).enhance(0.8 + 0.1 * n))
    return k0, variants


def per_keyframe(settings: DreamSettings, k0: Image.Image, variants: list[Image.Image]) -> dict[str, float]:
    """Median ms of each hook per keyframe, and of their sum."""
    dream, rng = Dream(settings), np.random.default_rng(0)
    previous = Keyframe(k0, generated=False, origin="start_image")
    dream.plan_input(previous)
    times = {"check_blank": [], "observe": [], "plan_input": [], "total": []}
    for n in range(ROUNDS):
        made = Keyframe(variants[n % len(variants)].copy(), 1.0, "p", n, True, "img2img", prompt_id=str(n))
        latent = rng.normal(size=(4, 64, 64)).astype(np.float32)
        marks = [time.perf_counter()]
        dream.check_blank(made.image)
        dream.keyframe_made(made)
        marks.append(time.perf_counter())
        dream.observe(dataclasses.replace(made, image=made.image.copy()), latent)
        marks.append(time.perf_counter())
        plan = dream.plan_input(made)
        marks.append(time.perf_counter())
        assert plan.image is not made.image      # it was grounded
        for name, a, b in (("check_blank", 0, 1), ("observe", 1, 2), ("plan_input", 2, 3), ("total", 0, 3)):
            times[name].append((marks[b] - marks[a]) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def components(k0: Image.Image, image: Image.Image) -> dict[str, float]:
    """Median ms of each step alone, on one picture."""
    own, ref = analyse(image), analyse(k0)
    target = PaletteTarget.of_lab(ref.lab)
    steps = {
        "analysis (downscale, LAB, metrics)": lambda: analyse(image),
        "detail blend": lambda: ground_detail(image, ref.metrics.sharpness * 0.5, 1.0, sharpness=own.metrics.sharpness),
        "histogram grounding": lambda: ground(image, target, mode="histogram", lab=own.lab),
        "reinhard grounding": lambda: ground(image, target, mode="reinhard", lab=own.lab),
    }
    times = {name: [] for name in steps}
    for _ in range(30):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append((time.perf_counter() - start) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def cost_at_512() -> dict[str, dict[str, float]]:
    k0, variants = pictures()
    return {"histogram (default)": per_keyframe(DreamSettings(), k0, variants),
            "reinhard": per_keyframe(DreamSettings(grounding="reinhard"), k0, variants),
            "components": components(k0, variants[0])}


def describe_cost(cost: dict[str, dict[str, float]]) -> str:
    lines = [f"dream cost per keyframe at 512x512 (median ms over {ROUNDS} keyframes, the daemon's hook order):"]
    for mode in ("histogram (default)", "reinhard"):
        row = cost[mode]
        lines.append(f"  {mode:<20} total {row['total']:5.1f}  (check_blank {row['check_blank']:.1f}, "
                     f"observe {row['observe']:.1f}, plan_input {row['plan_input']:.1f})")
    lines.append("  components alone: " + ", ".join(f"{k} {v:.1f}" for k, v in cost["components"].items()))
    return "\n".join(lines)


if __name__ == "__main__":
    import os
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "")
    print(describe_cost(cost_at_512()))
