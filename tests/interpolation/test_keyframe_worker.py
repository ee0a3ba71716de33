"""The one-ahead keyframe thread: when a keyframe is in flight, on a clock the test moves."""

from __future__ import annotations

import pytest
from PIL import Image

from backend.frames import Keyframe
from backend.interpolation.keyframe_worker import KeyframeWorker
from tests.interpolation.gated import FakeClock, Gated, wait_until


class GatedSource(Gated):
    """Each keyframe finishes only when the test calls `finish()`; it reports `seconds` s."""

    def __init__(self, seconds: float = 1.0) -> None:
        super().__init__()
        self.seconds = seconds

    def next_keyframe(self, previous):
        self.calls += 1
        if not self._wait_for_finish():
            return None
        return Keyframe(Image.new("RGB", (8, 8), (self.calls, 0, 0)), self.seconds)


@pytest.fixture
def worker():
    clock, source = FakeClock(10.0), GatedSource()
    made = KeyframeWorker(source, clock=clock)
    made.clock, made.gate = clock, source
    made.start()
    yield made
    assert made.close()


def test_the_first_keyframe_is_in_flight_from_when_the_thread_asks_for_it(worker):
    wait_until(lambda: worker.gate.calls == 1)
    assert worker.in_flight_since == 10.0


def test_nothing_is_in_flight_while_the_finished_keyframe_waits_to_be_taken(worker):
    worker.gate.finish()
    wait_until(lambda: worker.made == 1)
    worker.clock.now = 12.0
    assert worker.in_flight_since is None and worker.ready is not None


def test_the_next_keyframe_is_in_flight_from_the_moment_the_last_one_is_taken(worker):
    worker.gate.finish()
    wait_until(lambda: worker.made == 1)
    worker.clock.now = 13.5
    assert worker.take(timeout=1) is not None
    # Stamped by take() itself, not when the thread wakes up: no window where it reads None.
    assert worker.in_flight_since == 13.5
    worker.clock.now = 20.0
    wait_until(lambda: worker.gate.calls == 2)
    assert worker.in_flight_since == 13.5


def test_a_pause_before_the_next_keyframe_starts_leaves_nothing_in_flight(worker):
    worker.gate.finish()
    wait_until(lambda: worker.made == 1)
    worker.pause()
    worker.clock.now = 11.0
    worker.take(timeout=1)
    assert worker.in_flight_since is None
    worker.clock.now = 15.0
    worker.resume()
    wait_until(lambda: worker.gate.calls == 2)
    assert worker.in_flight_since == 15.0  # the pause does not count as keyframe time



def test_an_unavailable_source_has_nothing_in_flight_so_an_outage_is_not_taken_for_latency(worker):
    wait_until(lambda: worker.gate.calls == 1)
    worker.gate.state = "unavailable"
    assert worker.in_flight_since is None
    worker.gate.state = "connected"
    assert worker.in_flight_since == 10.0
