"""Finding a running ComfyUI: portable/manual installs listen on 8188, ComfyUI Desktop on 8000 or
the next free port up to 9000.

The ports are probed with non-blocking TCP connects, a wave of them at once, before any HTTP
request is made. Waiting for each refusal in turn is not an option: on Windows a refused
loopback connect takes about a second (SYN retries), which made a sequential scan of ~1000
ports take minutes. A listening loopback port accepts at once, so a port still pending after
`probe_wait` counts as closed.
"""

from __future__ import annotations

import errno
import selectors
import socket
import time
from urllib.parse import urlsplit

import requests

DESKTOP_PORTS = tuple(range(8000, 9001))
ALL_PORTS = (8188, *(p for p in DESKTOP_PORTS if p != 8188))       # 8188 first, then 8000, 8001, ...
LIKELY_PORTS = (8188, *range(8000, 8011))                          # a quick look (the daemon's start)
WAVE = 256                    # sockets in flight at once: under Windows' 512-socket select() limit
_IN_PROGRESS = {errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY, errno.EAGAIN, 10035}  # 10035: WSAEWOULDBLOCK


def discover(url_hint: str | None = None, *, timeout: float = 1.0, ports=ALL_PORTS,
             probe_wait: float = 0.25) -> str | None:
    """Find a running ComfyUI: the hint, then 127.0.0.1 on `ports` in order (default 8188, then
    ComfyUI Desktop's 8000..9000). Returns its URL, or None.

    timeout: seconds per HTTP request; probe_wait: seconds a wave of TCP probes may take (the
    whole default range is 4 waves, so about a second where refusals are slow).
    """
    candidates = [url_hint.rstrip("/")] if url_hint else []
    candidates += [f"http://127.0.0.1:{port}" for port in ports]
    candidates = list(dict.fromkeys(candidates))
    session = requests.Session()
    session.trust_env = False
    try:
        for start in range(0, len(candidates), WAVE):
            wave = candidates[start:start + WAVE]
            probed = {url: _address(url) for url in wave}
            open_now = _open_ports([a for a in probed.values() if a is not None], probe_wait)
            for url in wave:
                if probed[url] is not None and probed[url] not in open_now:
                    continue
                if _is_comfyui(session, url, timeout):
                    return url
    finally:
        session.close()
    return None


def _address(url: str) -> tuple[str, int] | None:
    """(127.0.0.1, port) for a URL worth a TCP probe first; None: ask it over HTTP directly."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    return ("127.0.0.1", port) if parts.hostname == "127.0.0.1" else None


def _is_comfyui(session: requests.Session, url: str, timeout: float) -> bool:
    try:
        data = session.get(url + "/system_stats", timeout=timeout).json()
    except (requests.RequestException, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("system"), dict)


def _open_ports(addresses: list[tuple[str, int]], wait: float) -> set[tuple[str, int]]:
    """The addresses that accept a TCP connection within `wait` seconds, all probed at once."""
    found: set[tuple[str, int]] = set()
    selector = selectors.DefaultSelector()
    sockets = []
    try:
        for address in addresses:
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            except OSError:            # out of handles: treat as closed rather than fail the scan
                continue
            sockets.append(sock)
            sock.setblocking(False)
            code = sock.connect_ex(address)
            if code == 0:
                found.add(address)
            elif code in _IN_PROGRESS:
                selector.register(sock, selectors.EVENT_WRITE, address)
        deadline = time.monotonic() + wait
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                break                  # still pending: nobody listens (Windows retries refused SYNs)
            for key, _ in selector.select(left):
                selector.unregister(key.fileobj)
                if key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    found.add(key.data)
    finally:
        selector.close()
        for sock in sockets:
            sock.close()
    return found
