"""Finding a running ComfyUI for `--check`: portable/manual installs listen on 8188, ComfyUI
Desktop on 8000 or the next free port up to 9000. Closed loopback ports refuse instantly, so a
TCP probe skips them before any HTTP request is made.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import requests


def discover(url_hint: str | None = None, *, timeout: float = 1.0) -> str | None:
    """Find a running ComfyUI: the hint, then 127.0.0.1:8188 (portable/manual installs), then
    127.0.0.1:8000..9000 (ComfyUI Desktop takes 8000 or the next free port). Returns the URL."""
    candidates = [url_hint.rstrip("/")] if url_hint else []
    candidates.append("http://127.0.0.1:8188")
    candidates += [f"http://127.0.0.1:{port}" for port in range(8000, 9001) if port != 8188]
    session = requests.Session()
    session.trust_env = False
    try:
        for url in dict.fromkeys(candidates):
            parts = urlsplit(url)
            if parts.hostname in ("127.0.0.1", "localhost") and not _port_open(parts.hostname, parts.port or 80):
                continue
            try:
                data = session.get(url + "/system_stats", timeout=timeout).json()
            except (requests.RequestException, ValueError):
                continue
            if isinstance(data, dict) and isinstance(data.get("system"), dict):
                return url
    finally:
        session.close()
    return None


def _port_open(host: str, port: int) -> bool:
    """A quick TCP probe: a closed loopback port refuses in well under a millisecond."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False
