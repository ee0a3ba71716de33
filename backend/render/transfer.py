"""The two HTTP calls a render needs that ComfyClient lacks: a `.latent` upload, checkpoint metadata.

ComfyClient.upload_image only sends PNGs; /upload/image itself stores any file under the name
given (LoadLatent lists `*.latent`), so this posts the bytes the same way, straight to the URL.
/view_metadata serves a safetensors file's ``__metadata__`` (the model-spec architecture, when
the file has one), which is how a family is told apart without reading the weights.
"""

from __future__ import annotations

import requests

from backend.comfyui.errors import ComfyError, ComfyUnavailable

SUBFOLDER = "reverie"


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False       # no system proxy between us and a loopback or LAN server
    return session


def checkpoint_metadata(url: str, checkpoint: str, timeout: float = 10.0) -> dict:
    """The checkpoint's safetensors metadata, {} when it has none (or is not a .safetensors)."""
    try:
        with _session() as session:
            resp = session.get(url.rstrip("/") + "/view_metadata/checkpoints", params={"filename": checkpoint},
                               timeout=timeout)
        body = resp.json() if resp.status_code == 200 else {}
    except (requests.RequestException, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def upload_latent(url: str, data: bytes, name: str, timeout: float = 30.0) -> str:
    """Store `data` as input/reverie/`name` (overwriting); returns the LoadLatent reference."""
    if not name.endswith(".latent") or any(c in name for c in "/\\") or ".." in name:
        raise ValueError(f"a latent upload name is a plain file name ending in .latent, got {name!r}")
    try:
        # no Origin header: ComfyUI answers 403 when it differs from Host
        with _session() as session:
            resp = session.post(url.rstrip("/") + "/upload/image", timeout=timeout,
                                files={"image": (name, data, "application/octet-stream")},
                                data={"overwrite": "true", "type": "input", "subfolder": SUBFOLDER})
    except requests.RequestException as exc:
        raise ComfyUnavailable(f"ComfyUI at {url} did not take the latent upload: {exc}") from exc
    if resp.status_code != 200:
        raise ComfyError(f"upload of {name!r} to {url} answered HTTP {resp.status_code}")
    try:
        body = resp.json()
        stored, folder = str(body["name"]), str(body.get("subfolder") or "")
    except (ValueError, KeyError, TypeError) as exc:
        raise ComfyError(f"upload of {name!r} to {url} answered an unexpected body") from exc
    return f"{folder}/{stored}" if folder else stored
