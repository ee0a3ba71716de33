"""Model families a seed walk can render, and how the family of a checkpoint is found.

Only families whose sampler starts from ``noise * sigma + latent`` (EPS and v-prediction:
SD1.x, SD2.x, SDXL) can take a walk's noise through a loaded latent. Flow-matching families
(SD3.x, FLUX) start from ``sigma * noise + (1 - sigma) * latent`` with sigma = 1, which
multiplies any loaded latent by zero: a walk needs a node that accepts sampler noise there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def _discrete_sigma_max(beta_start: float = 0.00085, beta_end: float = 0.012, steps: int = 1000) -> float:
    """Largest sigma of the "scaled linear" 1000-step schedule SD1.x/SD2.x/SDXL were trained with."""
    root_start, root_end = math.sqrt(beta_start), math.sqrt(beta_end)
    alpha_bar = 1.0
    for i in range(steps):
        beta = (root_start + (root_end - root_start) * i / (steps - 1)) ** 2
        alpha_bar *= 1.0 - beta
    return math.sqrt((1.0 - alpha_bar) / alpha_bar)


@dataclass(frozen=True)
class Family:
    name: str               # sd1 | sd2 | sdxl | sd3 | flux
    label: str              # for messages: "SD 1.x"
    channels: int           # latent channels
    scaling_factor: float   # raw latent -> the model's latent space
    sigma_max: float | None  # None: flow matching (no loaded-latent transport)

    @property
    def walkable(self) -> bool:
        return self.sigma_max is not None


_SIGMA_MAX = _discrete_sigma_max()
FAMILIES = {f.name: f for f in (
    Family("sd1", "SD 1.x", 4, 0.18215, _SIGMA_MAX),
    Family("sd2", "SD 2.x", 4, 0.18215, _SIGMA_MAX),
    Family("sdxl", "SDXL", 4, 0.13025, _SIGMA_MAX),
    Family("sd3", "SD 3.x", 16, 1.5305, None),
    Family("flux", "FLUX", 16, 0.3611, None),
)}

# Nodes that only appear in flow-matching graphs.
_FLOW_NODES = {"ModelSamplingSD3": "sd3", "EmptySD3LatentImage": "sd3", "TripleCLIPLoader": "sd3",
               "ModelSamplingFlux": "flux", "FluxGuidance": "flux", "DualCLIPLoader": "flux"}
# safetensors metadata "modelspec.architecture" prefixes (the Stability model spec).
_ARCHITECTURES = (("stable-diffusion-xl", "sdxl"), ("stable-diffusion-v3", "sd3"), ("stable-diffusion-3", "sd3"),
                  ("flux", "flux"), ("stable-diffusion-v2", "sd2"), ("stable-diffusion-v1", "sd1"))
_NAME_HINTS = (("flux", "flux"), ("sd3", "sd3"), ("sd_3", "sd3"), ("sdxl", "sdxl"), ("_xl", "sdxl"),
               ("-xl", "sdxl"), ("xl_", "sdxl"), ("xl-", "sdxl"), ("pony", "sdxl"), ("illustrious", "sdxl"),
               ("v2-1", "sd2"), ("sd2", "sd2"))


def detect(checkpoint: str, class_types: set[str], metadata: dict | None) -> tuple[Family, str]:
    """The family of `checkpoint` and how it was decided (for the render summary).

    Evidence in order: flow-only nodes in the workflow, the file's model-spec metadata (which
    the server serves at /view_metadata), then words in the file name; SD 1.x when none says.
    """
    for node, name in _FLOW_NODES.items():
        if node in class_types:
            return FAMILIES[name], f"the workflow uses {node}"
    architecture = str((metadata or {}).get("modelspec.architecture", "")).lower()
    for prefix, name in _ARCHITECTURES:
        if architecture.startswith(prefix):
            return FAMILIES[name], f"its metadata says {architecture}"
    lowered = checkpoint.lower()
    for hint, name in _NAME_HINTS:
        if hint in lowered:
            return FAMILIES[name], f"its name contains {hint!r}"
    return FAMILIES["sd1"], "nothing says otherwise (pass --family to choose)"


def refusal(family: Family) -> str:
    """The one-sentence reason a flow-matching family cannot be walked yet."""
    return (f"{family.label} is a flow-matching family: its sampler starts from pure noise at sigma 1, "
            f"where a loaded latent is multiplied by zero, so a seed walk cannot hand it the slerped noise; "
            f"use an SD 1.x, SD 2.x or SDXL checkpoint (or pass --family if this one was misdetected)")
