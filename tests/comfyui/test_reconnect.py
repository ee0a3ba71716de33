"""ComfyClient.busy and reconnect(), and what a PC sleep or a silent WebSocket does to a job.

The daemon's health watch (backend.desktop.health) calls reconnect() after a sleep or three
failed probes; these tests drive the same calls against the fake server by hand.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from backend.comfyui.client import ComfyClient
from tests.comfyui.conftest import InThread, comfy_source, invert_graph, record_jobs, seeds_of, wait_for
from tests.comfyui.conftest import keyframe_generator as generator
from tests.fake_comfyui import FakeComfyUI, fake_sample


def test_busy_is_true_only_while_our_job_is_in_flight(fake, client, picture):
    ref = client.upload_image(picture, "in.png")
    assert client.busy is False
    fake.latency = 0.6
    job = InThread(lambda: client.run(invert_graph(ref)))
    wait_for(lambda: fake.running is not None, "the job to run")
    assert client.busy is True
    job.join()
    assert client.busy is False


def test_busy_ignores_another_clients_job(fake, client, picture):
    other = ComfyClient(fake.url, poll_interval=0.3)
    ref = other.upload_image(picture, "other.png")
    fake.latency = 0.6
    job = InThread(lambda: other.run(invert_graph(ref)))
    wait_for(lambda: fake.running is not None, "the other client's job to run")
    assert client.busy is False and other.busy is True
    job.join()
    other.close()


def test_reconnect_between_jobs_opens_a_new_socket_under_the_same_client_id(fake, client, picture):
    ref = client.upload_image(picture, "in.png")
    client.run(invert_graph(ref, "SaveImageWebsocket"))
    first_socket = fake.sockets[client.client_id][0]
    client.reconnect()
    images = client.run(invert_graph(ref, "SaveImageWebsocket"))
    assert fake.sockets[client.client_id][0] is not first_socket
    wait_for(lambda: first_socket.closed, "the old socket to be closed, not leaked")
    assert np.array_equal(np.asarray(images[0]), 255 - np.asarray(picture))


def test_reconnect_makes_the_idle_probe_ask_again_at_once(client):
    client.system_stats()
    assert client.reachability.quiet_for() < 5.0
    client.reconnect()
    assert client.reachability.quiet_for() == float("inf") and client.reachability.ok is True


def test_reconnect_during_a_job_reopens_the_socket_and_the_job_finishes_once(fake, client, picture):
    gen = generator(client)
    gen.preflight()
    jobs = record_jobs(fake)
    fake.latency = 1.0
    job = InThread(lambda: gen.generate_keyframe(picture, "sky", "", seed=7, denoise=0.5))
    wait_for(lambda: fake.running is not None and client.client_id in fake.sockets, "the job to run")
    before = fake.sockets[client.client_id][0]
    client.reconnect()                  # mid-sampler: the images are still to come, on the new socket
    keyframe = job.join()
    assert fake.sockets[client.client_id][0] is not before
    assert np.array_equal(np.asarray(keyframe.image), fake_sample(picture, 7, 0.5))
    assert seeds_of(jobs) == [7] and fake.history == {}


@pytest.mark.parametrize("websocket_node", [False, True])
def test_a_pc_sleep_during_a_job_ends_in_connected_with_each_keyframe_queued_once(tmp_path, picture,
                                                                                 websocket_node):
    """Asleep: the server cannot be reached and the socket dies; at wake the health watch calls
    reconnect(). The job ComfyUI finished meanwhile is collected from /history, not made again."""
    with FakeComfyUI(root=tmp_path / "comfy", websocket_node=websocket_node, history_delay=0.02) as fake:
        client = ComfyClient(fake.url, request_timeout=2.0, job_timeout=30.0, poll_interval=0.3, unavailable_grace=20.0)
        src = comfy_source(client)
        jobs = record_jobs(fake)
        states: list[str] = []
        watching = threading.Event()

        def watch() -> None:
            while not watching.is_set():
                if not states or states[-1] != src.state:
                    states.append(src.state)
                time.sleep(0.005)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            fake.latency = 1.5
            job = InThread(lambda: src.next_keyframe(picture))
            wait_for(lambda: fake.running is not None, "the job to run")
            fake.refuse_connections = True          # the PC sleeps: nothing answers, sockets die
            wait_for(lambda: src.state == "unavailable", "the outage to show")
            wait_for(lambda: fake.running is None, "ComfyUI to finish the job meanwhile")
            fake.refuse_connections = False         # awake
            client.reconnect()
            first = job.join()
            fake.latency = 0.0
            second = src.next_keyframe(first)
        finally:
            watching.set()
            watcher.join()
            src.close()
        assert np.array_equal(np.asarray(first.image), fake_sample(picture, 100, 0.5)) and first.seed == 100
        assert np.array_equal(np.asarray(second.image), fake_sample(first.image, 101, 0.5))
        if websocket_node:
            # its SaveImageWebsocket frames went to a dead socket: made again once, same seed, in turn
            assert seeds_of(jobs) == [100, 100, 101]
        else:
            assert seeds_of(jobs) == [100, 101]
        assert fake.peak_queue == 1, "two of our jobs were queued at once"
        assert states[-1] == "connected" and "unavailable" in states and src.last_error == ""


def test_a_websocket_silent_for_many_keyframes_never_shows_unavailable_nor_queues_a_seed_twice(tmp_path, picture):
    with FakeComfyUI(root=tmp_path / "comfy", websocket_node=False, history_delay=0.02) as fake:
        client = ComfyClient(fake.url, request_timeout=2.0, job_timeout=30.0, poll_interval=0.2)
        src = comfy_source(client)
        jobs = record_jobs(fake)
        fake.silent_socket = True       # not one event arrives; /history is the truth
        previous, previous_image, seen = picture, picture, set()
        try:
            for _ in range(6):
                keyframe = src.next_keyframe(previous)
                seen.add(src.state)
                assert np.array_equal(np.asarray(keyframe.image), fake_sample(previous_image, keyframe.seed, 0.5))
                previous, previous_image = keyframe, keyframe.image
            client.reconnect()              # a reconnect while the socket is silent changes nothing
            keyframe = src.next_keyframe(keyframe)
        finally:
            src.close()
        assert seeds_of(jobs) == list(range(100, 107)) and keyframe.seed == 106
        assert seen == {"connected"} and src.state == "connected" and src.last_error == ""
