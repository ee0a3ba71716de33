"""FailoverClient with two or three fake ComfyUI servers, one of them killed mid-run."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from backend.comfyui.client import ComfyClient
from backend.comfyui.errors import ComfyUnavailable, JobLost, WorkflowRejected
from backend.comfyui.failover import FailoverClient
from tests.comfyui.conftest import (InThread, comfy_source, invert_graph, keyframe_generator, record_jobs, seeds_of,
                                    wait_for)
from tests.fake_comfyui import FakeComfyUI, fake_sample

FAST = dict(request_timeout=2.0, job_timeout=30.0, poll_interval=0.2, failover_grace=1.0)


@pytest.fixture
def servers(tmp_path):
    fakes = [FakeComfyUI(root=tmp_path / name, history_delay=0.02).start() for name in "abc"]
    yield fakes
    for fake in fakes:
        fake.stop()


@pytest.fixture
def two(servers):
    client = FailoverClient([servers[0].url, servers[1].url], **FAST)
    yield servers[0], servers[1], client
    client.close()


def chain(src, start, count: int) -> list:
    """`count` keyframes from `start` (a Keyframe or an image), each checked against the fake's exact sampler."""
    keyframes, previous, image = [], start, getattr(start, "image", start)
    for _ in range(count):
        keyframe = src.next_keyframe(previous)
        assert np.array_equal(np.asarray(keyframe.image), fake_sample(image, keyframe.seed, 0.5)), keyframe.seed
        keyframes.append(keyframe)
        previous, image = keyframe, keyframe.image
    return keyframes


def test_it_offers_every_public_name_a_comfyclient_has(two):
    _, _, client = two
    plain = ComfyClient("http://127.0.0.1:9")
    missing = {name for name in dir(plain) if not name.startswith("_")} - set(dir(client))
    plain.close()
    assert missing == {"jobs"}      # the job runner is per server: each of client.clients has one


def test_jobs_go_to_the_first_server_while_it_answers(two, picture):
    first, second, client = two
    on_first, on_second = record_jobs(first), record_jobs(second)
    src = comfy_source(client)
    try:
        chain(src, picture, 3)
    finally:
        src.close()
    assert client.current_url == first.url and len(on_first) == 3 and on_second == []


def test_a_server_killed_mid_job_the_keyframe_is_made_on_the_next_with_the_same_seed(two, picture, caplog):
    first, second, client = two
    on_first, on_second = record_jobs(first), record_jobs(second)
    src = comfy_source(client)
    try:
        made = chain(src, picture, 2)                       # seeds 100, 101 on the first server
        first.latency = 2.0
        job = InThread(lambda: src.next_keyframe(made[-1]))
        wait_for(lambda: first.running is not None, "seed 102 to run on the first server")
        with caplog.at_level(logging.INFO):
            first.refuse_connections = True                 # killed for good, mid-job
            third = job.join()
        made += [third, *chain(src, third, 2)]
    finally:
        src.close()
    # Another server answered all along: no outage shown, the job counted as lost, not failed.
    assert "ComfyUI unavailable" not in caplog.text
    assert "making it again with the same seed" in caplog.text
    assert [k.seed for k in made] == [100, 101, 102, 103, 104]      # nothing skipped
    assert all(k.generated and k.origin == "img2img" for k in made)
    assert np.array_equal(np.asarray(third.image), fake_sample(made[1].image, 102, 0.5))
    assert seeds_of(on_first) == [100, 101, 102] and seeds_of(on_second) == [102, 103, 104]
    assert client.current_url == second.url
    assert f"ComfyUI at {first.url} stopped answering" in caplog.text and second.url in caplog.text
    assert src.state == "connected" and src.last_error == ""


def test_it_stays_on_the_working_server_when_the_first_one_comes_back(two, picture):
    first, second, client = two
    src = comfy_source(client)
    try:
        made = chain(src, picture, 1)
        first.refuse_connections = True
        made += chain(src, made[-1], 1)
        assert client.current_url == second.url
        first.refuse_connections = False
        on_first = record_jobs(first)
        chain(src, made[-1], 3)
    finally:
        src.close()
    assert on_first == [] and client.current_url == second.url


def test_preflight_runs_again_on_the_new_server_and_one_without_the_checkpoint_is_passed_over(tmp_path, picture,
                                                                                               caplog):
    servers = [FakeComfyUI(root=tmp_path / "a").start(),
               FakeComfyUI(root=tmp_path / "b", checkpoints=["other.safetensors"]).start(),
               FakeComfyUI(root=tmp_path / "c").start()]
    client = FailoverClient([s.url for s in servers], **FAST)
    on_b, on_c = record_jobs(servers[1]), record_jobs(servers[2])
    src = comfy_source(client)
    try:
        made = chain(src, picture, 1)
        servers[0].refuse_connections = True
        with caplog.at_level(logging.WARNING, logger="backend.comfyui.failover"):
            made += chain(src, made[-1], 2)
    finally:
        src.close()
        client.close()
        for server in servers:
            server.stop()
    assert [k.seed for k in made] == [100, 101, 102]
    assert on_b == [] and seeds_of(on_c) == [101, 102] and client.current_url == servers[2].url
    assert f"ComfyUI at {servers[1].url} cannot run Reverie's workflows" in caplog.text
    assert "other.safetensors" in caplog.text


def test_when_no_server_can_run_the_workflow_preflight_says_why(tmp_path):
    servers = [FakeComfyUI(root=tmp_path / name, checkpoints=["other.safetensors"]).start() for name in "ab"]
    client = FailoverClient([s.url for s in servers], **FAST)
    try:
        with pytest.raises(WorkflowRejected) as caught:
            keyframe_generator(client).preflight()
    finally:
        client.close()
        for server in servers:
            server.stop()
    assert "other.safetensors" in str(caught.value)


def test_with_no_server_answering_it_is_unavailable_then_takes_whichever_comes_back(two, picture):
    first, second, client = two
    src = comfy_source(client)
    try:
        made = chain(src, picture, 1)
        first.refuse_connections = second.refuse_connections = True
        wait_for(lambda: src.state == "unavailable", "the idle probe to find both servers down")
        assert client.current_url == first.url          # nowhere better to go: it stays
        second.refuse_connections = False
        wait_for(lambda: src.state == "connected", "the idle probe to find the second server")
        assert client.current_url == second.url
        made += chain(src, made[-1], 1)
    finally:
        src.close()
    assert [k.seed for k in made] == [100, 101] and src.last_error == ""


def test_an_input_uploaded_to_one_server_is_never_queued_on_another(two, picture):
    first, second, client = two
    ref = client.upload_image(picture, "in.png")
    first.refuse_connections = True
    with pytest.raises(ComfyUnavailable):
        client.system_stats()                      # finds the first server gone and moves on
    assert client.current_url == second.url
    on_second = record_jobs(second)
    with pytest.raises(JobLost, match="upload it again"):
        client.run_job(invert_graph(ref))
    assert on_second == []
    ref = client.upload_image(picture, "in.png")   # uploaded again, on the second server: it runs there
    assert np.array_equal(np.asarray(client.run(invert_graph(ref))[0]), 255 - np.asarray(picture))


def test_bytes_go_to_the_current_server_and_an_upload_that_meets_no_answer_moves_on(two):
    first, second, client = two
    assert client.upload_bytes(b"one", "walk.latent") == "reverie/walk.latent"
    assert first.resolve("input", "reverie", "walk.latent").read_bytes() == b"one"
    first.refuse_connections = True
    with pytest.raises(JobLost):                   # the second server answers: make it again there
        client.upload_bytes(b"two", "walk.latent")
    assert client.current_url == second.url
    assert client.upload_bytes(b"two", "walk.latent") == "reverie/walk.latent"
    assert second.resolve("input", "reverie", "walk.latent").read_bytes() == b"two"


def test_busy_and_interrupt_current_follow_the_server_running_our_job(two, picture):
    first, second, client = two
    ref = client.upload_image(picture, "in.png")
    first.latency = 30.0
    job = InThread(lambda: client.run(invert_graph(ref)))
    wait_for(lambda: first.running is not None, "the job to run")
    assert client.busy and client.interrupt_current() is True
    with pytest.raises(Exception, match="interrupted"):
        job.join()
    assert not client.busy and client.interrupt_current() is False


def test_reconnect_reaches_every_server(two, picture):
    _, _, client = two
    for sub in client.clients:
        sub.run(invert_graph(sub.upload_image(picture, "in.png")))
    client.reconnect()
    assert all(sub.reachability.quiet_for() == float("inf") for sub in client.clients)


def test_preflight_with_the_first_server_down_checks_the_next_one_at_once(two):
    first, second, client = two
    first.refuse_connections = True
    keyframe_generator(client).preflight()
    assert client.current_url == second.url
