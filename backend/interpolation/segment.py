"""One segment of the schedule: K_s towards K_{s+1} in positions j = 0..N_s.

Position j shows t = ease(u(j)), where u is the linear progress through the segment. Planned,
u(j) = j / (N_s + 1); when auto N stretches a segment while it plays (`spread_rest`), the
positions not yet shown run on from where the last one shown was to u = 1 at N_s + 1, so the
segment still ends on z_{s+1}. The in-between latents are blended once per spread and decoded
in batches ahead of need.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

from backend.frames import Keyframe
from backend.interpolation.latent_cache import LatentCache
from backend.interpolation.spherical_lerp import ease, lerp, slerp


class Segment:
    """Segment `index` from `start` (K_s) to `end` (K_{s+1}, set when first needed)."""

    def __init__(self, index: int, start: Keyframe, frames: int) -> None:
        self.index, self.start = index, start
        self.end: Keyframe | None = None
        self.n = self.planned = frames          # N_s now, and as chosen when the segment began
        self.j = 0                              # the next position to serve
        self._j0, self._u0 = 0, 0.0             # position j0 showed u0
        self._latents: torch.Tensor | None = None  # [N_s, C, h, w] in-betweens
        self._decoded: deque[np.ndarray] = deque()  # decoded in-betweens not yet served
        self.decoded_upto = 0                   # in-betweens 1..this decoded

    def u(self, j: int | torch.Tensor) -> float | torch.Tensor:
        """Linear progress of position j: u0 at j0, 1 at N_s + 1."""
        return self._u0 + (1.0 - self._u0) * (j - self._j0) / (self.n + 1 - self._j0)

    def spread_rest(self, n: int, last: int) -> None:
        """N_s = n from now on: positions last+1..n run on from where `last` was shown to u = 1."""
        self._j0, self._u0 = last, self.u(last)
        self.n = n
        self._latents = None        # decoded-ahead frames had the old spacing
        self._decoded.clear()
        self.decoded_upto = last

    def crossfade(self, easing: str) -> np.ndarray:
        """Position j as a pixel blend of the two keyframe images (no VAE)."""
        t = ease(self.u(self.j), easing)
        a = np.asarray(self.start.image, dtype=np.float32)
        b = np.asarray(self.end.image, dtype=np.float32)
        return np.clip(np.rint(a + (b - a) * t), 0, 255).astype(np.uint8)

    def inbetween(self, cache: LatentCache, easing: str, method: str, batch: int) -> np.ndarray:
        """Position j >= 1 decoded, from the frames decoded ahead or a new batch of `batch`."""
        if not self._decoded:
            self.decode_ahead(cache, easing, method, batch)
        return self._decoded.popleft()

    def decode_ahead(self, cache: LatentCache, easing: str, method: str, count: int) -> None:
        """Decode the next `count` (>= 1) in-betweens into the serving queue."""
        if self._latents is None:
            z0, z1 = cache.latent(self.start), cache.latent(self.end)
            u = self.u(torch.arange(1, self.n + 1, dtype=torch.float64)).float()  # [N]
            t = ease(u, easing).to(z0.device)
            blend = slerp if method == "spherical" else lerp
            self._latents = blend(z0, z1, t)[:, 0]  # [N, 1, C, h, w] -> [N, C, h, w]
        first = self.decoded_upto
        count = max(1, min(count, self.n - first))
        self._decoded.extend(cache.decode(self._latents[first:first + count]))
        self.decoded_upto += count
