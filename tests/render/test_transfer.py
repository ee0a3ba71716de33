"""transfer: the latent upload and the checkpoint metadata a render asks for by URL."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from backend.comfyui.errors import ComfyUnavailable
from backend.render.transfer import checkpoint_metadata, upload_latent
from tests.fake_comfyui import FakeComfyUI


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def fake(tmp_path):
    with FakeComfyUI(root=tmp_path / "comfy") as server:
        yield server


def test_a_latent_upload_stores_the_bytes_in_the_reverie_folder_and_overwrites(fake):
    assert upload_latent(fake.url + "/", b"latent one", "walk_0.latent") == "reverie/walk_0.latent"
    assert upload_latent(fake.url, b"latent two", "walk_0.latent") == "reverie/walk_0.latent"
    assert fake.resolve("input", "reverie", "walk_0.latent").read_bytes() == b"latent two"


@pytest.mark.parametrize("name", ["walk.png", "../walk.latent", "a/walk.latent", "a\\walk.latent"])
def test_a_latent_upload_name_must_be_a_plain_latent_file_name(name):
    with pytest.raises(ValueError, match="ending in .latent"):
        upload_latent("http://127.0.0.1:9", b"x", name)


def test_a_latent_upload_to_a_server_that_does_not_answer_says_comfyui_is_unavailable():
    with pytest.raises(ComfyUnavailable, match="did not answer POST /upload/image"):
        upload_latent(_closed_port_url(), b"x", "walk_0.latent", timeout=2.0)


class _MetadataServer(BaseHTTPRequestHandler):
    """Answers /view_metadata/checkpoints the way ComfyUI does for one .safetensors file."""

    def do_GET(self):  # noqa: N802 - the name http.server calls
        url = urlparse(self.path)
        filename = parse_qs(url.query).get("filename", [""])[0]
        if url.path != "/view_metadata/checkpoints" or filename != "sd.safetensors":
            self.send_response(404)
            self.end_headers()
            return
        body = json.dumps({"modelspec.architecture": "stable-diffusion-v1"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def metadata_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _MetadataServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_checkpoint_metadata_is_the_servers_metadata_object(metadata_url):
    assert checkpoint_metadata(metadata_url, "sd.safetensors") == {"modelspec.architecture": "stable-diffusion-v1"}


def test_checkpoint_metadata_is_empty_when_the_server_has_none_or_does_not_answer(metadata_url, fake):
    assert checkpoint_metadata(metadata_url, "other.ckpt") == {}
    assert checkpoint_metadata(fake.url, "sd.safetensors") == {}        # a server without the route
    assert checkpoint_metadata(_closed_port_url(), "sd.safetensors", timeout=2.0) == {}
