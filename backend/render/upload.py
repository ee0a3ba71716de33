"""Upload a `.latent` file to a ComfyUI server's input folder.

ComfyClient.upload_image only sends PNGs; /upload/image itself stores any file under the name
given (LoadLatent lists `*.latent`), so this posts the bytes the same way, straight to the URL.
"""

from __future__ import annotations

import requests

from backend.comfyui.errors import ComfyError, ComfyUnavailable

SUBFOLDER = "reverie"


def upload_latent(url: str, data: bytes, name: str, timeout: float = 30.0) -> str:
    """Store `data` as input/reverie/`name` (overwriting); returns the LoadLatent reference."""
    if not name.endswith(".latent") or any(c in name for c in "/\\") or ".." in name:
        raise ValueError(f"a latent upload name is a plain file name ending in .latent, got {name!r}")
    try:
        # No Origin header (ComfyUI answers 403 when it differs from Host), no proxy for a LAN server.
        with requests.Session() as session:
            session.trust_env = False
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
