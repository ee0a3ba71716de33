"""Seed noise exactly as ComfyUI draws it, and the slerped noise between two seeds.

ComfyUI's KSampler makes its starting noise on the CPU with a fresh ``torch.manual_seed(seed)``
generator and one ``torch.randn`` over the whole latent, float32, whatever device samples
later. Drawing the same call here gives bit-identical noise, so a walk frame at t = 0 can be
the very picture KSampler makes for that seed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from backend.interpolation.spherical_lerp import slerp

MAX_SEED = 2 ** 64 - 1
LATENT_DOWNSCALE = 8


def latent_shape(channels: int, width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel size -> the ``[1, C, H/8, W/8]`` latent ComfyUI's EmptyLatentImage makes."""
    return (1, channels, height // LATENT_DOWNSCALE, width // LATENT_DOWNSCALE)


def seed_noise(seed: int, shape: tuple[int, ...]) -> Tensor:
    """Standard normal noise ``shape`` (float32, CPU) identical to ComfyUI's for `seed`."""
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be in [0, {MAX_SEED}], got {seed}")
    # ComfyUI reseeds torch's global CPU generator; a private generator seeded the same way
    # draws the same numbers without disturbing anyone else's random state.
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float32, device="cpu")


def walk_noise(seed_a: int, seed_b: int, t: float, shape: tuple[int, ...]) -> Tensor:
    """Noise on the great arc from `seed_a`'s (t = 0) to `seed_b`'s (t = 1), float32 ``shape``.

    Slerp keeps the norm of two independent normal draws (about sqrt(numel)), so every frame's
    noise looks like a real seed's to the sampler; a lerp halfway would shrink it by ~30 %.
    """
    a, b = seed_noise(seed_a, shape), seed_noise(seed_b, shape)
    if t == 0.0:
        return a
    if t == 1.0:
        return b
    return slerp(a.double(), b.double(), float(t)).float()
