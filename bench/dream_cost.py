"""The dream's per-keyframe cost at 512x512: metrics + detail grounding + palette grounding.

    python bench/dream_cost.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.dream.detail import ground_detail  # noqa: E402
from backend.dream.metrics import measure  # noqa: E402
from backend.dream.palette import PaletteTarget, ground  # noqa: E402


def cost_at_512() -> dict[str, float]:
    """Median ms of metrics, detail grounding and palette grounding on a 512x512 picture."""
    from skimage import data
    image, ref = Image.fromarray(data.astronaut()), Image.fromarray(data.coffee()).resize((512, 512))
    target, target_sharpness = PaletteTarget.of(ref), measure(ref).sharpness
    timings = {"metrics": [], "detail": [], "reinhard": [], "histogram": []}
    for _ in range(15):
        for name, fn in (("metrics", lambda: measure(image)),
                         ("detail", lambda: ground_detail(image, target_sharpness * 0.5)),
                         ("reinhard", lambda: ground(image, target, mode="reinhard")),
                         ("histogram", lambda: ground(image, target, mode="histogram"))):
            start = time.perf_counter()
            fn()
            timings[name].append((time.perf_counter() - start) * 1000)
    return {k: statistics.median(v) for k, v in timings.items()}



def describe_cost(cost: dict[str, float]) -> str:
    return ("cost at 512x512 (median ms): " + ", ".join(f"{k} {v:.1f}" for k, v in cost.items())
            + f"; per keyframe, metrics + detail + histogram (the default) = "
              f"{cost['metrics'] + cost['detail'] + cost['histogram']:.1f} ms, with reinhard "
              f"{cost['metrics'] + cost['detail'] + cost['reinhard']:.1f} ms")


if __name__ == "__main__":
    print(describe_cost(cost_at_512()))
