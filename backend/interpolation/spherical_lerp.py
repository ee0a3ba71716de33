"""Spherical and linear interpolation of batched latents, plus easing curves. Pure torch.

Shapes: ``v0`` and ``v1`` are ``[B, C, H, W]`` (any float dtype, any device). A float ``t``
(or a 0-d tensor) gives ``[B, C, H, W]``; a 1-D tensor of ``T`` values gives ``[T, B, C, H, W]``
in one vectorized call, which is how the frame schedule makes all in-betweens of a segment.

The blend is computed per sample over the flattened ``C*H*W`` vector in float32 (float64
inputs stay float64) and returned in the input dtype and device. ``t`` is meant to lie in
``[0, 1]``; values outside extrapolate along the same arc/line.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

EASINGS: tuple[str, ...] = ("linear", "smoothstep", "cosine")

# Norm product below which a sample is treated as degenerate (a zero latent): the angle between
# a zero vector and anything is undefined, so that sample falls back to lerp.
_ZERO_NORM = 1e-12


def _prepare(v0: Tensor, v1: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor, Tensor, bool]:
    """Flatten to ``[B, N]`` in the working dtype and shape ``t`` as ``[T, 1, 1]``."""
    if v0.shape != v1.shape:
        raise ValueError(f"v0 and v1 must have the same shape, got {tuple(v0.shape)} and {tuple(v1.shape)}")
    if v0.dim() < 1:
        raise ValueError("v0 and v1 need a leading batch dimension")
    work = torch.promote_types(v0.dtype, torch.float32)
    batch = v0.shape[0]
    a = v0.reshape(batch, -1).to(work)  # [B, N]
    b = v1.reshape(batch, -1).to(device=v0.device, dtype=work)  # [B, N]
    tt = torch.as_tensor(t, dtype=work, device=v0.device)
    if tt.dim() > 1:
        raise ValueError(f"t must be a float, a 0-d tensor or a 1-D tensor, got shape {tuple(tt.shape)}")
    vectorized = tt.dim() == 1
    return a, b, tt.reshape(-1, 1, 1), vectorized  # t: [T, 1, 1]


def _finish(out: Tensor, like: Tensor, vectorized: bool) -> Tensor:
    """``[T, B, N]`` -> ``[T, *like.shape]`` (or ``like.shape`` for a scalar t) in like's dtype."""
    out = out.reshape(out.shape[0], *like.shape).to(like.dtype)
    return out if vectorized else out[0]


def lerp(v0: Tensor, v1: Tensor, t: float | Tensor) -> Tensor:
    """Linear blend ``(1 - t) * v0 + t * v1``; shapes as in the module docstring."""
    a, b, tt, vectorized = _prepare(v0, v1, t)
    out = a.unsqueeze(0) + (b - a).unsqueeze(0) * tt  # [T, B, N]
    return _finish(out, v0, vectorized)


def slerp(v0: Tensor, v1: Tensor, t: float | Tensor, dot_threshold: float = 0.9995) -> Tensor:
    """Spherical blend along the great arc between each pair of samples.

    ``w0 = sin((1-t)θ)/sin θ`` and ``w1 = sin(tθ)/sin θ`` with ``θ`` the angle between the
    flattened samples, so two inputs of equal norm give outputs of that norm for every t.
    Samples whose cosine has ``|cos θ| > dot_threshold`` (nearly parallel, or nearly
    antiparallel, where the arc is undefined) or that contain a zero vector use lerp instead;
    every output is finite for finite inputs. ``t`` = 0 and 1 return v0 and v1.
    """
    a, b, tt, vectorized = _prepare(v0, v1, t)
    norms = a.norm(dim=1) * b.norm(dim=1)  # [B]
    cos = ((a * b).sum(dim=1) / norms.clamp_min(_ZERO_NORM)).clamp(-1.0, 1.0)  # [B]
    theta = torch.acos(cos).unsqueeze(1)  # [B, 1]
    sin_theta = torch.sin(theta).clamp_min(1e-8)
    w0 = torch.sin((1.0 - tt) * theta) / sin_theta  # [T, B, 1]
    w1 = torch.sin(tt * theta) / sin_theta
    # torch.where keeps this branch-free (no host sync on CUDA) and discards the unused weights.
    use_lerp = ((cos.abs() > dot_threshold) | (norms <= _ZERO_NORM)).reshape(1, -1, 1)  # [1, B, 1]
    w0 = torch.where(use_lerp, 1.0 - tt, w0)
    w1 = torch.where(use_lerp, tt.expand_as(w1), w1)
    out = w0 * a.unsqueeze(0) + w1 * b.unsqueeze(0)  # [T, B, N]
    return _finish(out, v0, vectorized)


def ease(t: float | Tensor, curve: str = "linear") -> float | Tensor:
    """Map ``t`` in [0, 1] to [0, 1], monotonic, with ease(0) = 0 and ease(1) = 1.

    ``linear`` is the identity, ``smoothstep`` is ``3t² - 2t³`` (ease-in-out), ``cosine`` is
    ``(1 - cos πt) / 2``. Inputs are clamped to [0, 1] first. Returns a float for a float and
    a tensor (same shape, dtype, device) for a tensor.
    """
    if curve not in EASINGS:
        raise ValueError(f"unknown easing {curve!r}; choose one of {', '.join(EASINGS)}")
    if isinstance(t, Tensor):
        x = t.clamp(0.0, 1.0)
        if curve == "smoothstep":
            return x * x * (3.0 - 2.0 * x)
        if curve == "cosine":
            return (1.0 - torch.cos(math.pi * x)) / 2.0
        return x
    x = min(max(float(t), 0.0), 1.0)
    if curve == "smoothstep":
        return x * x * (3.0 - 2.0 * x)
    if curve == "cosine":
        return (1.0 - math.cos(math.pi * x)) / 2.0
    return x
