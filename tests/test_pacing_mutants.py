"""Pacing's edges that tests/test_pacing.py leaves open (found with bench/mutation.py): the real
clock's wait, the decode cost of an empty batch, the cadence exactly on time, no cost at all."""

from __future__ import annotations

import threading
import time

import pytest

from backend.pacing import MonotonicClock, Pacing, ema
from tests.interpolation.gated import FakeClock


def test_the_real_clock_reads_monotonic_time():
    before = time.monotonic()
    now = MonotonicClock()()
    assert before <= now <= time.monotonic()


def test_the_real_clock_wait_returns_at_once_when_the_event_is_set_and_reports_it():
    event = threading.Event()
    assert MonotonicClock().wait(event, 0.0) is False
    event.set()
    assert MonotonicClock().wait(event, 30.0) is True  # a 30 s wait would hang the test


def test_the_real_clock_treats_a_wait_into_the_past_as_no_wait():
    event = threading.Event()
    setter = threading.Timer(0.5, event.set)
    setter.start()
    try:
        # Negative: a wait that cannot be made; it must not block until the event comes.
        assert MonotonicClock().wait(event, -5.0) is False
    finally:
        setter.cancel()


def test_a_moving_average_starts_at_its_first_sample_and_moves_a_fifth_of_the_way():
    assert ema(None, 3.0) == 3.0
    assert ema(1.0, 2.0) == pytest.approx(1.2)
    assert ema(1.0, 2.0, weight=0.5) == 1.5


def test_a_decode_of_no_frames_is_costed_as_one_frame():
    p = Pacing(10.0, FakeClock())
    p.record_decode(0.3, frames=0)
    assert p.decode_seconds == pytest.approx(0.3)


def test_no_cost_measured_or_a_zero_cost_sets_no_cap():
    p = Pacing(10.0, FakeClock())
    p.write_seconds = 0.0
    assert p.fps_cap is None and p.fps == 10.0
    p.write_seconds = 0.05
    assert p.fps_cap == pytest.approx(20.0) and p.fps == 10.0  # the cap is above the target


def test_a_frame_shown_exactly_on_time_keeps_the_cadence():
    clock = FakeClock(0.0)
    p = Pacing(4.0, clock)
    clock.now = 0.25  # the next frame is due now, and is shown now
    p.advance()
    assert p.deadline == 0.25
    p.advance()
    assert p.deadline == 0.5


def test_the_first_frame_is_due_when_the_pacing_is_made():
    clock = FakeClock(42.0)
    p = Pacing(10.0, clock)
    assert p.deadline == 42.0 and p.left(43.5) == 1.5
    assert (p.decode_seconds, p.write_seconds, p.target_fps) == (None, None, 10.0)


def test_a_batch_without_a_measured_write_uses_the_whole_interval():
    p = Pacing(10.0, FakeClock())
    p.decode_seconds = 0.025
    assert p.batch(8) == 4  # 0.1 s / 0.025 s
    p.decode_seconds = 0.2  # slower than a frame: still one
    assert p.batch(8) == 1


def test_the_write_cost_is_a_moving_average_of_the_writes():
    p = Pacing(10.0, FakeClock())
    p.record_write(0.01)
    p.record_write(0.06)
    assert p.write_seconds == pytest.approx(0.02)
