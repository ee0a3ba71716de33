"""The ``.latent`` file ComfyUI's LoadLatent reads, and the start latent that carries seed noise.

Format (ComfyUI's SaveLatent/LoadLatent): a safetensors file with ``latent_tensor`` (float,
``[B, C, h, w]``) and an empty ``latent_format_version_0`` tensor. Without the marker LoadLatent
divides by 0.18215 (files from before the format had a version), so the marker must be present.

The transport (EPS and v-prediction models, i.e. SD1.x, SD2.x, SDXL): KSampler with
add_noise starts sampling from ``noise * sqrt(1 + sigma_max**2) + latent`` in the model's
scaled space, and KSamplerAdvanced with ``add_noise: disable`` starts from the (scaled) latent
alone. A loaded latent is scaled by the family's ``scaling_factor`` on its way in, so storing
``noise * sqrt(1 + sigma_max**2) / scaling_factor`` makes the sampler start exactly where the
seed would have put it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LATENT_KEY = "latent_tensor"
VERSION_MARKER = "latent_format_version_0"


def start_latent(noise: Tensor, *, sigma_max: float, scaling_factor: float) -> Tensor:
    """Unit noise ``[1, C, h, w]`` -> the unscaled latent to store (float32)."""
    return (noise.double() * (math.sqrt(1.0 + sigma_max ** 2) / scaling_factor)).float()


def latent_bytes(latent: Tensor) -> bytes:
    """``[B, C, h, w]`` float tensor -> the bytes of a ``.latent`` file LoadLatent accepts."""
    from safetensors.torch import save

    if latent.dim() != 4:
        raise ValueError(f"a latent is [B, C, h, w], got shape {tuple(latent.shape)}")
    return save({LATENT_KEY: latent.detach().to("cpu", torch.float32).contiguous(),
                 VERSION_MARKER: torch.tensor([])})


def read_latent(data: bytes) -> Tensor:
    """The inverse of latent_bytes, with LoadLatent's rule for files without the marker."""
    from safetensors.torch import load

    tensors = load(data)
    multiplier = 1.0 if VERSION_MARKER in tensors else 1.0 / 0.18215
    return tensors[LATENT_KEY].float() * multiplier
