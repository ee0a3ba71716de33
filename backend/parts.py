"""The three pieces a daemon runs on, built from a Config (backend.assembly does the building).

A test (or a bench) hands the daemon its own `build` returning fakes: a keyframe source, no
ComfyUI client, a tiny encoder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from backend.assembly import build_encoder, build_source
from backend.config import Config

if TYPE_CHECKING:
    from backend.comfyui.client import ComfyClient
    from backend.folder_source import FolderSource
    from backend.interpolation.latent_encoder import LatentEncoder
    from backend.keyframes import ComfyUISource


class Parts(NamedTuple):
    source: ComfyUISource | FolderSource  # makes the keyframes (keyframe_worker.KeyframeSource)
    client: ComfyClient | None       # the ComfyUI client, None for a folder (pause frees its memory)
    encoder: LatentEncoder | None    # the VAE, None when no frame needs one


def build_parts(config: Config) -> Parts:
    source, client = build_source(config)
    return Parts(source, client, build_encoder(config))
