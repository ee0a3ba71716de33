"""Pacing on a fake clock: the cadence, the measured costs and the fps cap, auto-N's frame counts."""

from __future__ import annotations

import dataclasses

import pytest

from backend.assembly import schedule_settings
from backend.config import DisplayConfig, parse_config
from backend.interpolation.hybrid_generator import ScheduleSettings
from backend.pacing import Pacing
from tests.interpolation.gated import FakeClock


def pacing(fps: float = 10.0, now: float = 50.0) -> tuple[Pacing, FakeClock]:
    clock = FakeClock(now)
    return Pacing(fps, clock), clock


def test_the_fps_is_the_target_until_decode_and_write_are_measured_to_sustain_less():
    p, _ = pacing(12.0)
    assert p.fps_cap is None and p.fps == 12.0
    p.decode_seconds, p.write_seconds = 0.15, 0.05
    assert p.fps_cap == pytest.approx(5.0) and p.fps == pytest.approx(5.0)
    p.target_fps = 3.0
    assert p.fps == 3.0 and p.period == pytest.approx(1 / 3)


def test_costs_are_moving_averages_per_frame_and_a_zero_reading_clock_still_gives_a_cost():
    p, _ = pacing()
    p.record_decode(0.8, frames=4)
    assert p.decode_seconds == pytest.approx(0.2)
    p.record_decode(0.4, frames=4)
    assert p.decode_seconds == pytest.approx(0.2 + 0.2 * (0.1 - 0.2))
    p.record_write(0.01)
    assert p.write_seconds == 0.01
    coarse, _ = pacing()
    coarse.record_decode(0.0, frames=8)  # a 15.6 ms Windows tick read 0 s
    assert coarse.decode_seconds > 0 and coarse.batch(8) >= 1


def test_the_deadline_advances_one_period_per_frame_and_restarts_instead_of_bursting_when_late():
    p, clock = pacing(10.0, now=50.0)
    p.restart()
    assert p.deadline == 50.0
    p.advance()
    p.advance()
    assert p.deadline == pytest.approx(50.2)  # no drift: the deadline is not "now + period"
    clock.now = 51.0  # a second late: the missed frames are not shown in a burst
    p.advance()
    assert p.deadline == pytest.approx(51.1)
    clock.now = 60.0
    p.restart()
    assert p.deadline == 60.0


def test_an_fps_change_applies_from_the_next_frame():
    p, _ = pacing(10.0, now=0.0)
    p.restart()
    p.advance()
    p.target_fps = 2.0
    p.advance()
    assert p.deadline == pytest.approx(0.1 + 0.5)


def test_work_ahead_counts_each_decode_at_twice_its_cost_and_nothing_before_it_is_measured():
    p, clock = pacing(10.0, now=0.0)
    assert p.decodes_before(1.0) == 0
    p.decode_seconds = 0.1
    assert p.decodes_before(1.0) == 5
    assert p.decodes_before(0.19) == 0
    clock.now = 2.0
    assert p.decodes_before(1.0) == 0  # the deadline has passed


def test_a_decode_batch_fits_in_one_frame_interval_after_the_write():
    p, _ = pacing(10.0)
    assert p.batch(8) == 1  # the cost is unknown: one frame
    p.decode_seconds, p.write_seconds = 0.02, 0.02
    assert p.batch(8) == 4  # (0.1 - 0.02) / 0.02
    assert p.batch(3) == 3
    p.decode_seconds = 0.5
    assert p.batch(8) == 1


def test_auto_frame_counts_round_up_so_a_segment_is_never_shorter_than_asked():
    p, _ = pacing(10.0)
    assert p.frames_to_last(1.2) == 11   # 12 frames at 10 fps = 1.2 s
    assert p.frames_to_last(1.21) == 12
    assert p.frames_until(arrival=7.0, after=5.0) == 20
    assert p.frames_until(arrival=5.05, after=5.0) == 1


def test_the_schedule_fps_is_the_config_fps_and_has_no_default_of_its_own():
    fps = next(f for f in dataclasses.fields(ScheduleSettings) if f.name == "fps")
    assert fps.default is dataclasses.MISSING
    assert schedule_settings(parse_config({})).fps == DisplayConfig().fps
    assert schedule_settings(parse_config({"display": {"fps": 7}})).fps == 7
