"""Interrupt, timeout, close and a shared queue, through our client: fake AND real ComfyUI.

Each test needs a job that stays running for a few seconds (`ServerUnderTest.slow_graph`).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from backend.comfyui.client import ComfyClient, ComfyTimeout, Interrupted
from backend.comfyui.discovery import discover
from tests.real_comfyui.raw import (RawSession, invert_graph, is_inverted, pattern, running_prompts,
                                    wait_until_idle, wait_until_running)


def _client(url: str, **overrides) -> ComfyClient:
    settings = dict(request_timeout=10.0, job_timeout=60.0, poll_interval=0.5, unavailable_grace=30.0)
    settings.update(overrides)
    return ComfyClient(url, **settings)


@pytest.fixture
def client(comfy_server):
    client = _client(comfy_server.url)
    yield client
    client.close()


def test_discover_finds_the_server_from_a_hint_and_free_is_accepted(client, comfy_server):
    assert discover(comfy_server.url) == comfy_server.url
    client.free()


def test_interrupting_our_running_prompt_raises_interrupted_and_frees_the_server(client, comfy_server):
    graph = comfy_server.slow_graph(client.upload_image(pattern(), "interrupt.png"))
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(client.run, graph)
        prompt_id = wait_until_running(comfy_server.url)
        other = _client(comfy_server.url)
        try:
            other.interrupt(prompt_id)
        finally:
            other.close()
        with pytest.raises(Interrupted):
            job.result(timeout=60)
    wait_until_idle(comfy_server.url, timeout=10)


def test_interrupt_of_a_prompt_that_is_not_running_spares_the_running_one(client, comfy_server):
    source = pattern()
    ref = client.upload_image(source, "foreign.png")
    raw = RawSession(comfy_server.url)
    try:
        answer = raw.queue(comfy_server.slow_graph(ref))
        foreign_id = answer.json()["prompt_id"]
        assert wait_until_running(comfy_server.url) == foreign_id
        client.interrupt("00000000-0000-4000-8000-000000000000")
        assert running_prompts(comfy_server.url) == [foreign_id]
        events = raw.events_until_done(foreign_id)
    finally:
        raw.close()
    assert "execution_success" in [event[0] for event in events]
    assert "execution_interrupted" not in [event[0] for event in events]


def test_our_job_queued_behind_another_clients_job_waits_and_completes(client, comfy_server):
    source = pattern(40, 24)
    ref = client.upload_image(source, "behind.png")
    raw = RawSession(comfy_server.url)
    try:
        raw.queue(comfy_server.slow_graph(ref))
        wait_until_running(comfy_server.url)
        if comfy_server.kind == "fake":
            comfy_server.handle.latency = 0.0      # only the foreign job is slow
        images = client.run(invert_graph(ref, prefix="reverie/behind"))
    finally:
        raw.close()
    assert is_inverted(images[0], np.asarray(source))


def test_job_timeout_raises_and_the_abandoned_prompt_does_not_block_the_next_job(comfy_server):
    client = _client(comfy_server.url, job_timeout=1.0)
    try:
        ref = client.upload_image(pattern(), "timeout.png")
        with pytest.raises(ComfyTimeout):
            client.run(comfy_server.slow_graph(ref, seconds=6.0))
        wait_until_idle(comfy_server.url, timeout=15)
        if comfy_server.kind == "fake":
            comfy_server.handle.latency = 0.0
        client.job_timeout = 60.0
        images = client.run(invert_graph(ref, prefix="reverie/after_timeout"))
    finally:
        client.close()
    assert is_inverted(images[0], np.asarray(pattern()))


def test_close_during_a_job_raises_interrupted_in_the_waiting_thread_and_stops_the_prompt(comfy_server):
    client = _client(comfy_server.url)
    graph = comfy_server.slow_graph(client.upload_image(pattern(), "close.png"))
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(client.run, graph)
        wait_until_running(comfy_server.url)
        client.close()
        with pytest.raises(Interrupted):
            job.result(timeout=60)
    wait_until_idle(comfy_server.url, timeout=15)


def _events_of(raw: RawSession, prompt_id: str) -> list[str]:
    return [event[0] for event in raw.events_until_done(prompt_id)]


def test_interrupt_current_stops_our_long_job_and_spares_another_clients_job_queued_behind(client, comfy_server):
    """Issue 14: pausing interrupts OUR running job at once, never somebody else's; the other
    client queues its job straight over HTTP, as ComfyUI's own page would."""
    ref = client.upload_image(pattern(), "ours_long.png")
    raw = RawSession(comfy_server.url)
    try:
        with ThreadPoolExecutor(1) as pool:
            job = pool.submit(client.run, comfy_server.slow_graph(ref, seconds=60.0, blurs=60))
            ours = wait_until_running(comfy_server.url)
            foreign_graph = comfy_server.slow_graph(ref, seconds=0.5)   # on the fake: from the next job on
            foreign = raw.queue(foreign_graph).json()["prompt_id"]
            assert client.busy and client.queue_ids() == ([ours], [foreign])
            assert client.interrupt_current() is True
            with pytest.raises(Interrupted):
                job.result(timeout=60)
        assert not client.busy and client.interrupt_current() is False
        events = _events_of(raw, foreign)
    finally:
        raw.close()
    assert "execution_success" in events and "execution_interrupted" not in events


def test_interrupt_current_unqueues_our_waiting_job_and_spares_another_clients_running_one(client, comfy_server):
    ref = client.upload_image(pattern(), "ours_waiting.png")
    raw = RawSession(comfy_server.url)
    try:
        foreign = raw.queue(comfy_server.slow_graph(ref, seconds=3.0, blurs=4)).json()["prompt_id"]
        assert wait_until_running(comfy_server.url) == foreign
        with ThreadPoolExecutor(1) as pool:
            job = pool.submit(client.run, invert_graph(ref, prefix="reverie/waiting"))
            deadline = time.monotonic() + 30
            while not client.queue_ids()[1]:           # ours is queued behind the foreign job
                assert time.monotonic() < deadline and not job.done(), "our job never got queued"
                time.sleep(0.02)
            assert client.interrupt_current() is True
            with pytest.raises(Interrupted, match="taken out of ComfyUI's queue"):
                job.result(timeout=60)
            assert running_prompts(comfy_server.url) == [foreign]
        events = _events_of(raw, foreign)
    finally:
        raw.close()
    assert "execution_success" in events and "execution_interrupted" not in events
