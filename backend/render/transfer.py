"""The two HTTP calls a render makes by URL rather than through its ComfyClient: a `.latent`
upload and checkpoint metadata.

Both go through a short-lived ComfyHTTP, so they send the same requests (no system proxy, no
Origin header: ComfyUI answers 403 when it differs from Host) and raise the same errors as every
other call. /upload/image stores any file under the name given (LoadLatent lists `*.latent`).
/view_metadata serves a safetensors file's ``__metadata__`` (the model-spec architecture, when
the file has one), which is how a family is told apart without reading the weights.
"""

from __future__ import annotations

from backend.comfyui.errors import ComfyError
from backend.comfyui.http import ComfyHTTP

SUBFOLDER = "reverie"


def checkpoint_metadata(url: str, checkpoint: str, timeout: float = 10.0) -> dict:
    """The checkpoint's safetensors metadata, {} when it has none (or is not a .safetensors)."""
    try:
        with ComfyHTTP(url, request_timeout=timeout) as http:
            return http.get_json("/view_metadata/checkpoints", params={"filename": checkpoint})
    except ComfyError:      # no answer, not 200, not a JSON object: no metadata to go by
        return {}


def upload_latent(url: str, data: bytes, name: str, timeout: float = 30.0) -> str:
    """Store `data` as input/reverie/`name` (overwriting); returns the LoadLatent reference."""
    if not name.endswith(".latent") or any(c in name for c in "/\\") or ".." in name:
        raise ValueError(f"a latent upload name is a plain file name ending in .latent, got {name!r}")
    with ComfyHTTP(url, request_timeout=timeout) as http:
        return http.upload_bytes(data, name, SUBFOLDER)
