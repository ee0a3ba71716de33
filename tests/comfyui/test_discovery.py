"""discover() scanning 127.0.0.1:8000..9000 (ComfyUI Desktop's ports) with real servers on them."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from backend.comfyui.client import discover
from backend.comfyui.discovery import LIKELY_PORTS
from tests.fake_comfyui import FakeComfyUI

SCAN = [p for p in range(8000, 9001) if p != 8188]


def _free_ports(count: int) -> list[int]:
    """The lowest `count` ports of the scan range nobody listens on (keeps the scan short)."""
    found = []
    for port in SCAN:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    pytest.skip(f"fewer than {count} free ports in 127.0.0.1:8000..9000")


@pytest.fixture
def quiet_range():
    """Skip when some ComfyUI (another test run's fake, a real one) already answers in the range."""
    other = discover()
    if other is not None:
        pytest.skip(f"a ComfyUI already answers at {other}: the scan would rightly stop there")


class _NotComfy(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"status": "ok"}'          # JSON, but not ComfyUI's /system_stats
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_discover_without_a_hint_finds_a_server_on_a_desktop_port(quiet_range, tmp_path):
    port, = _free_ports(1)
    with FakeComfyUI(root=tmp_path, port=port) as fake:
        assert discover() == fake.url == f"http://127.0.0.1:{port}"


def test_discover_passes_over_another_http_service_to_reach_comfyui(quiet_range, tmp_path):
    other_port, comfy_port = _free_ports(2)
    other = ThreadingHTTPServer(("127.0.0.1", other_port), _NotComfy)
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    try:
        with FakeComfyUI(root=tmp_path, port=comfy_port) as fake:
            assert discover(f"http://127.0.0.1:{other_port}") == fake.url
    finally:
        other.shutdown()
        other.server_close()
        thread.join(timeout=5)


def test_discover_returns_none_when_nothing_answers(quiet_range):
    assert discover("http://127.0.0.1:9") is None


def _black_holes(count: int) -> list[socket.socket]:
    """Listening ports in the scan range whose backlog is full: a connect to them hangs (SYN
    retries), the way a refused loopback connect does on Windows for about a second."""
    holes, servers = [], 0
    for port in SCAN:
        if servers == count:
            break
        server = socket.socket()
        try:
            server.bind(("127.0.0.1", port))
        except OSError:
            server.close()
            continue
        server.listen(0)
        holes.append(server)
        servers += 1
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            holes.append(filler)
    return holes


def test_discover_scans_the_whole_range_in_bounded_time_even_when_connects_hang(quiet_range, tmp_path):
    holes = _black_holes(40)          # a sequential scan with a 0.2 s probe timeout needs > 8 s here
    try:
        port = next(p for p in reversed(SCAN) if _bindable(p))     # the end of the range: a full scan
        with FakeComfyUI(root=tmp_path, port=port) as fake:
            started = time.monotonic()
            found = discover()
            elapsed = time.monotonic() - started
        assert found == fake.url and elapsed < 3.0
    finally:
        for sock in holes:
            sock.close()


def test_the_quick_look_at_start_probes_only_the_likely_ports(quiet_range, tmp_path):
    port = next(p for p in reversed(SCAN) if _bindable(p))
    with FakeComfyUI(root=tmp_path, port=port):
        assert discover(ports=LIKELY_PORTS) is None
    assert LIKELY_PORTS[:2] == (8188, 8000) and set(LIKELY_PORTS) == {8188, *range(8000, 8011)}


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
