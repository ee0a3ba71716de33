"""A server killed and restarted mid-job, and a server without SaveImageWebsocket: fake AND real.

The two servers are driven differently (the fake has switches, the real one gets SIGKILL and a
slow model-free graph so the kill lands while the job runs), and the client must see the same.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from backend.comfyui.client import ComfyClient, JobLost, WorkflowRejected
from backend.comfyui.keyframe import KeyframeGenerator
from backend.comfyui.workflow import parse_workflow
from tests.real_comfyui import build
from tests.real_comfyui.conftest import NOT_SET_UP
from tests.real_comfyui.raw import RawSession, invert_graph, is_inverted, pattern, wait_until_running
from tests.real_comfyui.server import RealComfyUI

def test_server_killed_mid_job_gives_job_lost_then_a_resubmit_succeeds(comfy_server):
    server = comfy_server.require_handle()
    client = ComfyClient(comfy_server.url, request_timeout=5.0, job_timeout=120.0, poll_interval=0.5,
                         unavailable_grace=90.0)
    try:
        ref = client.upload_image(pattern(), "restart.png")
        if comfy_server.kind == "fake":
            server.kill_mid_run = True
            with pytest.raises(JobLost):
                client.run(invert_graph(ref, prefix="reverie/restart"))
        else:
            with ThreadPoolExecutor(1) as pool:
                job = pool.submit(client.run, comfy_server.slow_graph(ref))
                wait_until_running(comfy_server.url)
                server.kill()
                server.start()           # same port and folders; ComfyUI forgets queue and history
                with pytest.raises(JobLost):
                    job.result(timeout=150)
        images = client.run(invert_graph(ref, prefix="reverie/restart_again"))
        assert is_inverted(images[0], np.asarray(pattern()))
    finally:
        client.close()


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.real_comfyui)])
def server_without_websocket_node(request):
    """A server lacking SaveImageWebsocket, like ComfyUI Desktop or an install without the example node."""
    if request.param == "fake":
        from tests.fake_comfyui import FakeComfyUI

        with FakeComfyUI(websocket_node=False) as fake:
            yield fake.url, fake.root / "output"
        return
    if not build.is_ready():
        pytest.skip(NOT_SET_UP)
    with RealComfyUI(websocket_node=False) as real:
        yield real.url, real.output_dir


def test_without_save_image_websocket_keyframes_fall_back_to_save_image_files(server_without_websocket_node):
    url, output_dir = server_without_websocket_node
    websocket_graph = invert_graph("reverie/x.png", output="SaveImageWebsocket")
    raw = RawSession(url)
    try:
        answer = raw.queue(websocket_graph)
    finally:
        raw.close()
    assert answer.status_code == 400 and answer.json()["node_errors"] == {}
    assert answer.json()["error"]["type"] == "invalid_prompt"
    assert answer.json()["error"]["message"] == "Cannot execute because node SaveImageWebsocket does not exist."

    client = ComfyClient(url, request_timeout=10.0, job_timeout=60.0, poll_interval=0.5)
    try:
        with pytest.raises(WorkflowRejected):
            client.run(websocket_graph)
        workflow = parse_workflow(websocket_graph, "user.json")
        generator = KeyframeGenerator(client, img2img=workflow, txt2img=workflow, checkpoint=None, steps=1,
                                      cfg=1.0, sampler="euler", scheduler="normal", width=64, height=64)
        result = generator.generate_keyframe(pattern(), "p", "n", seed=3, denoise=0.5)
    finally:
        client.close()
    assert is_inverted(result.image, np.asarray(pattern()))
    saved = sorted(p.relative_to(output_dir).as_posix() for p in output_dir.rglob("*.png"))
    assert saved == ["reverie/keyframe_00001_.png"]


@pytest.mark.parametrize("output", ["SaveImage", "SaveImageWebsocket"])
def test_first_job_after_a_restart_between_jobs_succeeds(comfy_server, output):
    """ComfyUI restarted while we were idle: our socket is dead but nothing told us yet (and a
    freshly started real server sends WebSocket messages up to ~1 s behind its HTTP answers)."""
    server = comfy_server.require_handle()
    client = ComfyClient(comfy_server.url, request_timeout=5.0, job_timeout=60.0, poll_interval=0.5,
                         unavailable_grace=60.0)
    try:
        source = pattern()
        client.run(invert_graph(client.upload_image(source, "before.png"), output=output, prefix="reverie/before"))
        server.restart()
        ref = client.upload_image(source, "after.png")
        images = client.run(invert_graph(ref, output=output, prefix="reverie/after"))
        assert is_inverted(images[0], np.asarray(source))
    finally:
        client.close()


def test_failover_from_a_server_that_is_gone_runs_the_keyframe_on_the_next_one(comfy_server):
    """comfyui.url lists a dead server first: the preflight and the job move to the one that answers."""
    from backend.comfyui.failover import FailoverClient
    from tests.comfyui.test_discovery import _free_ports

    dead = f"http://127.0.0.1:{_free_ports(1)[0]}"
    client = FailoverClient([dead, comfy_server.url], request_timeout=5.0, job_timeout=60.0, poll_interval=0.5)
    try:
        workflow = parse_workflow(invert_graph("reverie/x.png", output="SaveImageWebsocket"), "user.json")
        generator = KeyframeGenerator(client, img2img=workflow, txt2img=workflow, checkpoint=None, steps=1,
                                      cfg=1.0, sampler="euler", scheduler="normal", width=64, height=64,
                                      upload_tag="failover")
        generator.preflight()
        assert client.current_url == comfy_server.url
        result = generator.generate_keyframe(pattern(), "p", "n", seed=3, denoise=0.5)
    finally:
        client.close()
    assert is_inverted(result.image, np.asarray(pattern()))
