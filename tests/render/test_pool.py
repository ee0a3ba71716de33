"""ServerPool: frames spread over servers, results in order, failover, bounded look-ahead."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from backend.comfyui.errors import ExecutionFailed
from backend.comfyui.pool import PoolError, ServerPool
from tests.real_comfyui.server import free_port
from tests.render.conftest import quick_client
from tests.render.standin import StandInJob, expected


def _pool(urls, **kw):
    return ServerPool(urls, client_factory=quick_client, retry_interval=0.2, **kw)


def _assert_in_order(images, count):
    assert len(images) == count
    for index, image in enumerate(images):
        assert np.array_equal(np.asarray(image), expected(index)), f"frame {index} is not the frame asked for"


def test_two_servers_share_the_frames_and_results_come_back_in_order(fakes):
    pool = _pool([f.url for f in fakes])
    try:
        images = list(pool.map_ordered(list(range(10)), StandInJob(), ahead=4))
    finally:
        pool.close()
    _assert_in_order(images, 10)
    assert all(s.done >= 2 for s in pool.stats), pool.summary()
    assert sum(s.done for s in pool.stats) == 10


def test_a_server_killed_mid_render_loses_no_frame(fakes):
    a, b = fakes
    a.latency = 0.5
    job = StandInJob()

    def job_that_kills_a(client, worker, index):
        if worker == 0 and index >= 2:
            threading.Timer(0.2, setattr, (a, "refuse_connections", True)).start()   # dies mid-job
        return job(client, worker, index)

    pool = _pool([a.url, b.url])
    try:
        images = list(pool.map_ordered(list(range(8)), job_that_kills_a, ahead=4))
    finally:
        pool.close()
        a.refuse_connections = False
    _assert_in_order(images, 8)
    assert pool.stats[0].lost >= 1 and not pool.stats[0].up, pool.summary()
    assert pool.stats[1].done >= 6


def test_a_url_nobody_listens_on_is_skipped(fakes):
    pool = _pool([f"http://127.0.0.1:{free_port()}", fakes[0].url])
    try:
        assert pool.check() == [fakes[0].url]
        images = list(pool.map_ordered(list(range(4)), StandInJob()))
    finally:
        pool.close()
    _assert_in_order(images, 4)
    assert pool.stats[0].done == 0 and pool.stats[1].done == 4


def test_no_server_answering_ends_the_map_with_one_clear_error():
    pool = _pool([f"http://127.0.0.1:{free_port()}"], give_up_after=0.5)
    pool.check()
    try:
        with pytest.raises(PoolError, match="no ComfyUI has answered"):
            list(pool.map_ordered([0, 1], StandInJob()))
    finally:
        pool.close()
    with pytest.raises(PoolError, match="no ComfyUI answers at"):
        pool.first_healthy()


def test_an_execution_error_is_retried_and_the_frame_still_made(fakes):
    fakes[0].fail_next_execution = 1
    fakes[1].fail_next_execution = 1
    pool = _pool([f.url for f in fakes])
    try:
        images = list(pool.map_ordered(list(range(4)), StandInJob()))
    finally:
        pool.close()
    _assert_in_order(images, 4)
    assert sum(s.failed for s in pool.stats) == 2


def test_a_frame_failing_on_every_try_stops_the_map_with_that_error(fakes):
    fakes[0].fail_next_execution = 10
    pool = _pool([fakes[0].url], attempts=2)
    try:
        with pytest.raises(ExecutionFailed):
            list(pool.map_ordered(list(range(3)), StandInJob()))
    finally:
        pool.close()
    assert pool.stats[0].failed == 2


def test_workers_never_run_more_than_ahead_frames_past_the_oldest_unread(fakes):
    started: list[int] = []
    job = StandInJob()
    consumed = [-1]
    overshoot = []

    def recording_job(client, worker, index):
        overshoot.append(index - consumed[0])
        started.append(index)
        return job(client, worker, index)

    pool = _pool([f.url for f in fakes])
    try:
        for index, _ in enumerate(pool.map_ordered(list(range(12)), recording_job, ahead=3)):
            consumed[0] = index
            threading.Event().wait(0.05)      # a slow consumer (an encoder) behind fast servers
    finally:
        pool.close()
    assert sorted(started) == list(range(12))
    # frames started but not yet handed out (index - last handed out - 1) stay below `ahead`
    assert max(overshoot) - 1 < 3
    assert max(overshoot) - 1 == 2, "the look-ahead should be used, or the servers idle"
