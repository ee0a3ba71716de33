"""Security basics: no listening socket, a warning for plain http to another machine, server images
size-capped before decoding, server-supplied file names never used as local paths, and a control
file that cannot make the daemon write outside its output folder."""

from __future__ import annotations

import io
import ipaddress
import os
import resource
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from tests.fake_comfyui import FakeComfyUI
from tests.reliability.conftest import (DaemonRun, log_text, read_status, run_cli, start_daemon, wait_until,
                                        write_config)
from tests.reliability.test_bad_input import png_claiming


def test_the_daemon_opens_no_listening_socket_and_talks_only_to_loopback(tmp_path, tiny_vae):
    with FakeComfyUI(latency=0.05) as fake:
        write_config(tmp_path, tiny_vae, fake.url, display={"history_keep": 0})
        daemon = start_daemon(tmp_path)
        try:
            wait_until(lambda: (read_status(tmp_path) or {}).get("frame", -1) >= 6, timeout=120,
                       what="frames", check=lambda: daemon.poll() is None or pytest.fail(daemon.stderr.read()))
            process = psutil.Process(daemon.pid)
            connections = process.net_connections(kind="all")
        finally:
            daemon.terminate()
            daemon.communicate(timeout=30)
    listening = [c for c in connections if c.status == psutil.CONN_LISTEN]
    assert listening == []
    inet = [c for c in connections if c.family in (2, 10)]  # AF_INET, AF_INET6
    assert inet, "the daemon should be talking to the fake ComfyUI"
    for conn in inet:
        assert ipaddress.ip_address(conn.laddr.ip).is_loopback
        assert not conn.raddr or (ipaddress.ip_address(conn.raddr.ip).is_loopback and conn.raddr.port == fake.port)
    udp = [c for c in inet if c.type == 2]  # SOCK_DGRAM
    assert udp == []


def test_plain_http_to_another_machine_logs_a_warning(tmp_path, tiny_vae, log_records, no_discovery):
    from backend.assembly import build_source
    from backend.config import load_config

    # 192.0.2.1 is TEST-NET-1: never routed, so the connection attempt just times out.
    config = load_config(write_config(tmp_path, tiny_vae, "http://192.0.2.1:8188",
                                      comfyui={"url": "http://192.0.2.1:8188", "request_timeout": 0.2}))
    source, client = build_source(config)
    source.close()
    warnings = [r.getMessage() for r in log_records if r.levelname == "WARNING"]
    assert any("192.0.2.1" in w and ("http" in w.lower() or "encrypt" in w.lower()) and "reachable" not in w
               for w in warnings), warnings


def test_loopback_urls_draw_no_such_warning(tmp_path, tiny_vae, log_records):
    from backend.assembly import build_source
    from backend.config import load_config

    with FakeComfyUI() as fake:
        config = load_config(write_config(tmp_path, tiny_vae, fake.url))
        source, client = build_source(config)
        source.close()
    assert not [r for r in log_records if r.levelname == "WARNING"], log_text(log_records)


def test_a_decompression_bomb_from_the_server_is_refused_on_its_header(tmp_path):
    from backend.comfyui.client import ComfyClient, ExecutionFailed
    from backend.comfyui.images import decode_image

    started = time.monotonic()
    for width, height in ((50_000, 50_000), (9_000, 9_000), (200_000, 1)):
        with pytest.raises(ExecutionFailed):
            decode_image(png_claiming(width, height))
    assert time.monotonic() - started < 1.0
    # The same through the wire, with the peak memory of this process watched.
    with FakeComfyUI() as fake:
        fake.output_fault = "huge"
        client = ComfyClient(fake.url, request_timeout=5, job_timeout=30)
        try:
            ref = client.upload_image(Image.new("RGB", (64, 64)), "bomb.png")
            graph = {"1": {"class_type": "LoadImage", "inputs": {"image": ref}},
                     "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}}}
            peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            with pytest.raises(ExecutionFailed):
                client.run(graph)
            grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
        finally:
            client.close()
    assert grown_kib < 200 * 1024  # 50000x50000 RGB decoded would be 7 GB


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16"])
def test_grayscale_alpha_palette_and_16_bit_images_from_the_server_become_rgb(mode, monkeypatch):
    from backend.comfyui.client import ComfyClient
    from tests.fake_comfyui import nodes

    def encode(arr, fault=None):
        image = Image.fromarray(arr, "RGB")
        if mode == "I;16":
            image = Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)
        elif mode == "P":
            image = image.convert("P", palette=Image.Palette.ADAPTIVE)
        else:
            image = image.convert(mode)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    monkeypatch.setattr(nodes, "encode_png", encode)
    source = Image.fromarray(np.tile(np.arange(0, 256, 4, dtype=np.uint8)[None, :, None], (64, 1, 3)), "RGB")
    with FakeComfyUI() as fake:
        client = ComfyClient(fake.url, request_timeout=5, job_timeout=30)
        try:
            ref = client.upload_image(source, "modes.png")
            graph = {"1": {"class_type": "LoadImage", "inputs": {"image": ref}},
                     "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}}}
            image = client.run(graph)[0]
        finally:
            client.close()
    assert image.mode == "RGB" and image.size == (64, 64)
    assert np.abs(np.asarray(image).astype(int)[..., 0] - np.asarray(source)[..., 0]).max() <= 2


def test_server_supplied_file_names_with_dot_dot_are_never_used_as_local_paths(tmp_path, monkeypatch):
    from backend.comfyui.client import ComfyClient, ComfyError

    monkeypatch.chdir(tmp_path)
    target = tmp_path.parent / "reverie_evil.png"
    target.unlink(missing_ok=True)
    with FakeComfyUI(root=tmp_path / "server", websocket_node=False) as fake:
        original = fake.write_history

        def poisoned(job, ui, status_str, completed):
            ui = {node: {"images": [{"filename": "../../../reverie_evil.png", "subfolder": "../..",
                                     "type": "output"}]} for node in ui}
            original(job, ui, status_str, completed)

        fake.write_history = poisoned
        client = ComfyClient(fake.url, request_timeout=5, job_timeout=30)
        before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "server" not in p.parts)
        try:
            ref = client.upload_image(Image.new("RGB", (64, 64), (9, 9, 9)), "names.png")
            graph = {"1": {"class_type": "LoadImage", "inputs": {"image": ref}},
                     "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
            with pytest.raises(ComfyError):  # /view refuses the traversal: the keyframe fails, nothing else
                client.run(graph)
        finally:
            client.close()
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "server" not in p.parts)
    assert after == before and not target.exists()


def test_an_upload_name_from_the_server_with_dot_dot_stays_a_server_reference(tmp_path, monkeypatch):
    """The upload answer's name goes back to the server as a LoadImage value, never to the disk."""
    from backend.comfyui.client import ComfyClient

    monkeypatch.chdir(tmp_path)
    with FakeComfyUI(root=tmp_path / "server") as fake:
        client = ComfyClient(fake.url, request_timeout=5, job_timeout=30)
        try:
            with pytest.raises(ValueError):
                client.upload_image(Image.new("RGB", (8, 8)), "../../escape.png")
        finally:
            client.close()
    assert not (tmp_path.parent / "escape.png").exists()


HOSTILE_CONTROL = """[Variables]
PauseCount=1
PauseSeq=1
ResumeCount=1
ResumeSeq=2
NextPromptCount=99999999999999999999
NextPromptSeq=../../../../etc/passwd
NewKeyframeCount=3
NewKeyframeSeq=-5
OutputDir=../../outside
File=../../outside/pwned.png
Command=quit & touch ../../outside/pwned
{junk}
[ControlEnd]
"""


def test_the_control_file_cannot_make_the_daemon_write_outside_its_output_folder(tmp_path, tiny_vae):
    images = tmp_path / "run" / "images"
    images.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((64, 64, 3), 60 + 100 * i, np.uint8)).save(images / f"{i}.png")
    run_dir = tmp_path / "run"
    config = write_config(run_dir, tiny_vae, keyframes={"source": "folder", "folder": "images"},
                          display={"history_keep": 3}, logging={"file": None})
    (run_dir / "out").mkdir()
    control = run_dir / "out" / "control.ini"
    control.write_text("[Variables]\nQuitCount=0\n[ControlEnd]\n")

    def snapshot() -> set:
        return {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if "out" not in p.relative_to(tmp_path).parts}

    before = snapshot()
    run = DaemonRun(config).start()
    wait_until(lambda: (read_status(run_dir) or {}).get("frame", -1) >= 2, timeout=60, check=run.check)
    junk = "".join(chr(c) for c in range(1, 32) if c not in (10, 13)) + "\u2028" + "x" * 100_000
    control.write_text(HOSTILE_CONTROL.format(junk=junk), encoding="utf-8")
    time.sleep(1.5)
    control.write_bytes(os.urandom(4096))
    time.sleep(1.0)
    control.write_text(HOSTILE_CONTROL.format(junk="") + "[Variables]\nQuitCount=1\nQuitSeq=9\n")
    control.write_text(HOSTILE_CONTROL.format(junk="").replace("[ControlEnd]", "QuitCount=1\nQuitSeq=9\n[ControlEnd]"))
    assert run.join(60) == 0  # the quit command stopped it cleanly
    assert snapshot() == before
    assert not (tmp_path / "outside").exists() and not Path("/etc/pwned").exists()
    assert read_status(run_dir)["state"] == "stopped"


def _free_port_in(low: int, high: int) -> int:
    import socket

    for port in range(low, high):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    pytest.skip(f"no free port in {low}..{high}")


def test_an_explicitly_configured_comfyui_that_is_down_at_start_is_not_replaced_by_another_local_server(tmp_path,
                                                                                                       tiny_vae):
    from backend.assembly import build_source
    from backend.config import load_config

    configured = f"http://127.0.0.1:{_free_port_in(9100, 9200)}"
    with FakeComfyUI(port=_free_port_in(8000, 8100)):
        config = load_config(write_config(tmp_path, tiny_vae, configured,
                                          comfyui={"url": configured, "request_timeout": 1}))
        source, client = build_source(config)
        source.close()
        assert client.url == configured


@pytest.mark.skipif(os.name == "nt", reason="Windows file names are UTF-16: none is undecodable there")
def test_a_corrupt_image_with_a_non_utf8_name_is_skipped_and_reported_without_a_crash(tmp_path, tiny_vae):
    """Folder mode over an image that cannot be read and whose name is not UTF-8 (Latin-1 bytes, a
    control character): the run goes on to --max-frames, status and log carry the name escaped,
    and no handler prints a logging traceback."""
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(np.full((64, 64, 3), 60 + 100 * i, np.uint8)).save(images / f"{i}.png")
    corrupt = os.path.join(os.fsencode(images), b"1a caf\xe9\x1b[31m.png")  # sorts between 0.png and 1.png
    with open(corrupt, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n but not a picture")
    write_config(tmp_path, tiny_vae, keyframes={"source": "folder", "folder": "images"},
                 display={"history_keep": 0})
    done = run_cli(tmp_path, "--config", "config.yaml", "--max-frames", "12")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Logging error" not in done.stderr and "UnicodeEncodeError" not in done.stderr
    assert read_status(tmp_path)["state"] == "stopped"
    txt = (tmp_path / "out" / "status.txt").read_text(encoding="utf-8")
    assert txt.startswith("state=stopped\n")
    log = (tmp_path / "out" / "reverie.log").read_text(encoding="utf-8")
    assert "Logging error" not in log and "caf\\xe9\\x1b[31m.png" in log
    assert "\x1b" not in log


def test_a_hostile_text_in_every_status_field_never_stops_the_status_writer(tmp_path):
    """The writer's contract end to end: whatever str arrives (surrogates, controls, huge), the
    three files are written, parse, and say the same."""
    import json

    from backend.status import STATUS_KEYS, StatusWriter, new_status

    nasty = "\udce9\ud800\x00\x1b[2J\n\u2028</script>" + "y" * 50_000
    writer = StatusWriter(tmp_path)
    writer.write(new_status(state="live", prompt=nasty, last_error=nasty, pause_reason=nasty, frame_file=nasty,
                            comfyui_server=nasty, config_problem=nasty, quality={nasty: 1.0}))
    data = json.loads((tmp_path / "status.json").read_text(encoding="utf-8"))
    js = (tmp_path / "status.js").read_text(encoding="utf-8")
    assert json.loads(js[len("window.REVERIE_STATUS = "):-2]) == data
    lines = (tmp_path / "status.txt").read_text(encoding="utf-8").splitlines()
    assert [line.split("=", 1)[0] for line in lines] == [*STATUS_KEYS, "comfyui_server", "config_problem"]


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_a_running_daemon_writes_its_output_with_the_permissions_of_the_umask(tmp_path, tiny_vae, umask, mode):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(np.full((64, 64, 3), 60 + 100 * i, np.uint8)).save(images / f"{i}.png")
    write_config(tmp_path, tiny_vae, keyframes={"source": "folder", "folder": "images"}, display={"history_keep": 3})
    previous = os.umask(umask)  # inherited by the daemon process
    try:
        done = run_cli(tmp_path, "--config", "config.yaml", "--max-frames", "6")
    finally:
        os.umask(previous)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "out"
    files = [out / name for name in ("current_frame.png", "status.txt", "status.json", "status.js")]
    files += sorted((out / "frames").iterdir()) + sorted((out / "history").iterdir()) + sorted((out / "keyframes").iterdir())
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: oct(mode) for p in files}
