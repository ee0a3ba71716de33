"""The latents of the keyframes in play: z = encode(K) and decode(z), each made once.

Segment s ends on z_{s+1} and segment s+1 opens on the very same tensor (the continuity rule),
so a keyframe's latent and its decoded slot are made once and kept while the keyframe is one of
the ends of the segment playing (or the one after). Every decode is timed into the pacing, so
batch sizes and the fps cap follow what this VAE costs here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from backend.frames import Keyframe
from backend.pacing import Pacing


class Encoder(Protocol):
    """What the schedule needs of latent_encoder.LatentEncoder."""

    def encode(self, images: list[Image.Image]) -> torch.Tensor:
        """RGB images at the frame resolution -> scaled latents [B, C, H/8, W/8]."""
        ...

    def decode_to_uint8(self, latents: torch.Tensor) -> np.ndarray:
        """Scaled latents [B, C, h, w] -> pixels [B, H, W, 3] uint8."""
        ...


LatentListener = Callable[[Keyframe, torch.Tensor], None]


@dataclass
class _Entry:
    keyframe: Keyframe
    latent: torch.Tensor | None = None   # [1, C, H/8, W/8] scaled
    pixels: np.ndarray | None = None     # decode(latent) [H, W, 3] uint8


class LatentCache:
    """`latent(k)` and `pixels(k)` for the last `keep` keyframes asked about (matched by identity)."""

    def __init__(self, encoder: Encoder, pacing: Pacing, on_latent: LatentListener | None = None,
                 keep: int = 3) -> None:
        self.encoder, self.pacing, self.on_latent, self.keep = encoder, pacing, on_latent, keep
        self._entries: list[_Entry] = []

    def _entry(self, keyframe: Keyframe) -> _Entry:
        for entry in self._entries:
            if entry.keyframe is keyframe:
                return entry
        entry = _Entry(keyframe)
        self._entries = [*self._entries, entry][-self.keep:]
        return entry

    def latent(self, keyframe: Keyframe) -> torch.Tensor:
        entry = self._entry(keyframe)
        if entry.latent is None:
            entry.latent = self.encoder.encode([keyframe.image])  # [1, C, H/8, W/8]
            if self.on_latent is not None:
                self.on_latent(keyframe, entry.latent)
        return entry.latent

    def has_pixels(self, keyframe: Keyframe) -> bool:
        return self._entry(keyframe).pixels is not None

    def pixels(self, keyframe: Keyframe) -> np.ndarray:
        entry = self._entry(keyframe)
        if entry.pixels is None:
            entry.pixels = self.decode(self.latent(keyframe))[0]
        return entry.pixels

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """[B, C, h, w] -> [B, H, W, 3] uint8, its cost per frame recorded in the pacing."""
        started = self.pacing.clock()
        pixels = self.encoder.decode_to_uint8(latents)
        self.pacing.record_decode(self.pacing.clock() - started, len(latents))
        return pixels
