"""The pieces a daemon runs on, built from a Config (backend.assembly does the building).

`Assembly(config)` builds the Dream once, at start (bad reference images stop it there, exit 2),
and is then the daemon's `build` seam: each call builds a keyframe source whose hooks call that
same Dream, which the daemon also observes every keyframe with (contract C3):

    assembly = Assembly(config)
    Daemon(config, path, shutdown, dream=assembly.dream, build=assembly)

A test (or a bench) hands the daemon its own `build` returning fakes: a keyframe source, no
ComfyUI client, a tiny encoder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from backend.assembly import build_dream, build_encoder, build_source
from backend.config import Config

if TYPE_CHECKING:
    from backend.comfyui.client import ComfyClient
    from backend.dream.dream import Dream
    from backend.folder_source import FolderSource
    from backend.interpolation.latent_encoder import LatentEncoder
    from backend.keyframes import ComfyUISource


class Parts(NamedTuple):
    source: ComfyUISource | FolderSource  # makes the keyframes (keyframe_worker.KeyframeSource)
    client: ComfyClient | None       # the ComfyUI client, None for a folder (pause frees its memory)
    encoder: LatentEncoder | None    # the VAE, None when no frame needs one


def build_parts(config: Config, dream: Any = None) -> Parts:
    """`dream`: the Dream the ComfyUI source's hooks call (None: the loop is not steered)."""
    source, client = build_source(config, dream)
    return Parts(source, client, build_encoder(config))


class Assembly:
    """The Dream of this run and the `build` seam that hands it to the keyframe source."""

    def __init__(self, config: Config) -> None:
        self.dream: Dream = build_dream(config)   # UserError: bad reference images, each named

    def __call__(self, config: Config) -> Parts:
        return build_parts(config, self.dream)
