"""Reachability: transitions only, the idle probe, and the client reporting every request."""

from __future__ import annotations

import ast
import time
from pathlib import Path

from backend.comfyui.client import ComfyClient
from backend.comfyui.errors import ComfyUnavailable
from backend.comfyui.reachability import Reachability, ReachabilityWatch

COMFYUI = Path(__file__).resolve().parents[2] / "backend" / "comfyui"


def test_listeners_hear_each_change_once_with_the_reason():
    heard = []
    reach = Reachability()
    reach.subscribe(lambda ok, error: heard.append((ok, error)))
    for ok, error in [(True, ""), (True, ""), (False, "refused"), (False, "refused again"), (True, "")]:
        reach.report(ok, error)
    assert heard == [(True, ""), (False, "refused"), (True, "")]
    assert reach.ok is True and reach.error == ""


def test_every_request_tells_the_client_whether_the_server_answered(fake, client):
    client.system_stats()
    assert client.reachability.ok is True
    fake.refuse_connections = True
    try:
        client.queue_ids()
    except ComfyUnavailable:
        pass
    assert client.reachability.ok is False and "did not answer GET /queue" in client.reachability.error
    fake.refuse_connections = False
    client.checkpoints()
    assert client.reachability.ok is True


def test_the_watch_probes_only_when_nothing_else_reported_and_finds_an_outage(fake):
    client = ComfyClient(fake.url, request_timeout=2.0)
    watch = ReachabilityWatch(client, interval=0.2, timeout=1.0).start()
    try:
        deadline = time.monotonic() + 10
        while client.reachability.ok is not True:
            assert time.monotonic() < deadline, "the probe never reported"
            time.sleep(0.02)
        fake.refuse_connections = True
        while client.reachability.ok is not False:
            assert time.monotonic() < deadline, "the probe never found the outage"
            time.sleep(0.02)
    finally:
        watch.stop(timeout=3.0)
        fake.refuse_connections = False
        client.close()
    assert not watch.alive


def test_no_comfyui_module_reaches_into_another_modules_private_attributes():
    """The job runner talks to the HTTP client through its public methods only: `x._name` is
    allowed only where the module itself defines `_name` (its own classes)."""
    reach_ins = []
    for path in sorted(COMFYUI.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        own = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)}
        own |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
                    and node.attr not in own):
                reach_ins.append(f"{path.name}:{node.lineno} .{node.attr}")
    assert reach_ins == []


def test_a_server_that_accepts_but_never_answers_is_unreachable_after_the_probe_timeout():
    """A hung ComfyUI (port open, no answer) is found by the probe's short timeout, not the
    job's request_timeout."""
    import socket

    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)                        # connections are queued, never answered
        client = ComfyClient(f"http://127.0.0.1:{hung.getsockname()[1]}", request_timeout=30.0)
        try:
            assert client.probe(timeout=0.3) is False
        finally:
            client.close()
    assert client.reachability.ok is False and "did not answer GET /system_stats" in client.reachability.error
