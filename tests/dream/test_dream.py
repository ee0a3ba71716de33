"""The Dream hooks (contract I4): anchor walk across prompt changes and edits, the collapse and
blank guard, references, quality.csv and status fields."""

from __future__ import annotations

import csv
import dataclasses
import threading

import numpy as np
import pytest
from PIL import Image

from backend.dream.dream import Dream, InputPlan
from backend.dream.metrics import pool_latent as pool
from backend.dream.settings import DreamSettings
from backend.frames import Keyframe
from tests.dream.test_metrics import photo

QUIET = DreamSettings(collapse_novelty=0.0, chroma_band=10.0, sharpness_band=10.0, magenta_max=1.0)


def picture(seed: int) -> Image.Image:
    return Image.fromarray(photo(seed=seed))


def keyframe(seed: int, origin: str = "img2img", image: Image.Image | None = None) -> Keyframe:
    return Keyframe(picture(seed) if image is None else image, 0.1, "p", seed, True, origin)


def latent(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(4, 8, 16)).astype(np.float32)


def walk(dream: Dream, count: int, start: Keyframe, *, prompt_change_at: set[int] = frozenset(), settle=None):
    """Drive the keyframe-thread hooks like ComfyUISource does; returns the plans' reasons."""
    reasons, previous = [], start
    for n in range(1, count + 1):
        plan = dream.plan_input(previous)
        assert isinstance(plan, InputPlan)
        reasons.append(plan.reason)
        previous = keyframe(n)
        dream.keyframe_made(previous)
        if n in prompt_change_at:
            dream.prompt_changed()
    return reasons


def test_every_sixteenth_keyframe_is_made_from_the_anchor_at_the_anchor_denoise():
    dream = Dream(QUIET)
    start = Keyframe(picture(0), generated=False, origin="start_image")
    plans = []
    previous = start
    for n in range(1, 34):
        plans.append(dream.plan_input(previous))
        previous = keyframe(n)
        dream.keyframe_made(previous)
    anchored = [n for n, plan in enumerate(plans, start=1) if plan.reason == "anchor"]
    assert anchored == [16, 32]
    assert plans[15].denoise == 0.6 and plans[14].denoise is None
    assert dream.status_fields()["events"]["anchor"] == 2


def test_the_anchor_plan_sends_the_anchor_image_not_the_previous_keyframe():
    dream = Dream(dataclasses.replace(QUIET, anchor_every=2, grounding="off", detail_strength=0.0))
    k0 = keyframe(0, "txt2img")
    dream.keyframe_made(k0)
    first = dream.plan_input(k0)
    k1 = keyframe(1)
    dream.keyframe_made(k1)
    second = dream.plan_input(k1)
    assert np.array_equal(np.asarray(first.image), np.asarray(k0.image))
    assert second.reason == "anchor" and np.array_equal(np.asarray(second.image), np.asarray(k0.image))
    k2 = keyframe(2)
    dream.keyframe_made(k2)                       # made from the anchor: the new anchor
    third = dream.plan_input(k2)
    k3 = keyframe(3)
    dream.keyframe_made(k3)
    fourth = dream.plan_input(k3)
    assert third.reason == "" and fourth.reason == "anchor"
    assert np.array_equal(np.asarray(fourth.image), np.asarray(k2.image))


def test_a_prompt_change_settles_ungrounded_then_restarts_the_anchor_count():
    dream = Dream(dataclasses.replace(QUIET, anchor_every=8, prompt_settle=3))
    reasons = walk(dream, 20, keyframe(0, "txt2img"), prompt_change_at={5})
    # keyframes 6..8 settle on the new prompt, 8 becomes the anchor, 8 + 8 = 16 is made from it
    assert reasons[5:8] == ["prompt"] * 3
    assert [n for n, r in enumerate(reasons, start=1) if r == "anchor"] == [16]


def test_a_config_edit_of_anchor_every_applies_from_the_next_keyframe():
    dream = Dream(dataclasses.replace(QUIET, anchor_every=16))
    previous = keyframe(0, "txt2img")
    dream.keyframe_made(previous)
    reasons = []
    for n in range(1, 13):
        if n == 5:
            dream.update(dataclasses.replace(QUIET, anchor_every=4))
        reasons.append(dream.plan_input(previous).reason)
        previous = keyframe(n)
        dream.keyframe_made(previous)
    assert [n for n, r in enumerate(reasons, start=1) if r == "anchor"] == [5, 9]


def test_anchor_every_zero_never_reanchors_and_control_off_never_touches_the_input():
    dream = Dream(dataclasses.replace(QUIET, anchor_every=0))
    assert "anchor" not in walk(dream, 40, keyframe(0, "txt2img"))
    off = Dream(DreamSettings(control=False))
    start = keyframe(0, "txt2img")
    off.keyframe_made(start)
    plan = off.plan_input(start)
    assert plan.image is start.image and plan.denoise is None and not plan.fresh_seed


def test_grounding_pulls_a_drifted_input_back_toward_the_anchor_palette():
    dream = Dream(DreamSettings())
    k0 = keyframe(0, "txt2img")
    dream.keyframe_made(k0)
    tinted = np.asarray(k0.image, np.float64) * 0.7 + np.array([255, 0, 255]) * 0.3
    drifted = keyframe(1, image=Image.fromarray(tinted.astype(np.uint8)))
    dream.keyframe_made(drifted)
    from backend.dream.metrics import measure
    grounded = dream.plan_input(drifted).image
    from backend.dream.palette import PaletteTarget
    anchor_ab, drifted_ab, grounded_ab = (PaletteTarget.of(i).mean[1:] for i in (k0.image, drifted.image, grounded))
    assert measure(grounded).magenta < 0.7 * measure(drifted.image).magenta
    # chroma strength 0.6: the a*/b* means go about 60 % of the way back to the anchor's
    assert np.linalg.norm(grounded_ab - anchor_ab) < 0.55 * np.linalg.norm(drifted_ab - anchor_ab)


def observe_all(dream: Dream, frames: list[tuple[Keyframe, np.ndarray]]) -> list[str]:
    events = []
    previous = None
    for kf, lat in frames:
        if previous is not None:
            dream.plan_input(previous)
        dream.keyframe_made(kf)
        events.append(dream.observe(kf, lat)["event"])
        previous = kf
    return events


def test_the_collapse_guard_fires_on_a_repeating_sequence_and_asks_for_a_fresh_seed():
    dream = Dream(DreamSettings(collapse_novelty=1e-3, collapse_patience=3))
    same = latent(1)
    frames = [(keyframe(0, "txt2img"), latent(0))] + [(keyframe(n), same + 1e-6 * n) for n in range(1, 5)]
    events = observe_all(dream, frames)
    assert events.count("collapse") == 1 and events.index("collapse") == 4   # three still keyframes: 2, 3, 4
    plan = dream.plan_input(frames[-1][0])
    assert plan.fresh_seed and plan.reason == "collapse" and plan.denoise == 0.6
    assert dream.status_fields()["events"]["collapse"] == 1


def test_the_collapse_guard_stays_quiet_on_a_healthy_moving_sequence():
    dream = Dream(DreamSettings(collapse_novelty=1e-3, collapse_patience=3))
    frames = [(keyframe(0, "txt2img"), latent(0))] + [(keyframe(n), latent(n)) for n in range(1, 30)]
    assert set(observe_all(dream, frames)) == {""}


def test_a_metric_far_outside_its_band_fires_the_drift_guard():
    dream = Dream(DreamSettings())
    k0 = keyframe(0, "txt2img")
    tinted = np.asarray(photo(seed=9), np.float64) * 0.3 + np.array([230, 20, 200]) * 0.7
    magenta = keyframe(1, image=Image.fromarray(tinted.astype(np.uint8)))
    events = observe_all(dream, [(k0, latent(0)), (magenta, latent(1))])
    assert events == ["", "drift"]
    assert dream.plan_input(magenta).reason == "drift"


def test_blank_and_flat_keyframes_are_rejected_and_counted():
    dream = Dream(DreamSettings())
    assert "black" in dream.check_blank(Image.new("RGB", (64, 32), (2, 2, 2)))
    assert "flat" in dream.check_blank(Image.new("RGB", (64, 32), (120, 140, 160)))
    nan = Image.fromarray(np.full((32, 64), np.nan, np.float32), "F")
    assert "not finite" in dream.check_blank(nan)
    assert dream.check_blank(picture(3)) == ""
    assert dream.status_fields()["events"]["blank_rejected"] == 3


def test_references_become_the_anchors_in_turn_and_the_palette_target():
    refs = [picture(10), picture(11)]
    dream = Dream(dataclasses.replace(QUIET, anchor_every=4), references=refs)
    previous = keyframe(0, "start_image")
    sources = []
    for n in range(1, 10):
        plan = dream.plan_input(previous)
        sources.append(next((i for i, r in enumerate(refs) if np.array_equal(np.asarray(plan.image),
                                                                             np.asarray(r))), None))
        previous = keyframe(n)
        dream.keyframe_made(previous)
    assert sources[0] == 0 and sources[4] == 1 and sources[8] == 0
    assert sources[1:4] == [None] * 3


def test_quality_csv_gets_a_row_per_observed_keyframe_and_rotates_by_size(tmp_path):
    path = tmp_path / "quality.csv"
    dream = Dream(dataclasses.replace(QUIET, quality_log_bytes=10_000, quality_log_keep=2), quality_path=path)
    frames = [(keyframe(0, "txt2img"), latent(0))] + [(keyframe(n % 7), latent(n)) for n in range(1, 160)]
    observe_all(dream, frames)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["quality.csv", "quality.csv.1", "quality.csv.2"]
    rows = [row for name in reversed(files) for row in csv.DictReader(open(tmp_path / name, encoding="utf-8"))]
    assert all(path.stat().st_size < 12_000 for path in tmp_path.iterdir())
    assert rows[-1]["keyframe"] == "159" and float(rows[-1]["chroma"]) > 0 and rows[-1]["novelty"] != ""


def test_status_fields_carry_latest_metrics_deviation_and_event_counts():
    dream = Dream(DreamSettings())
    observe_all(dream, [(keyframe(0, "txt2img"), latent(0)), (keyframe(1), latent(1))])
    fields = dream.status_fields()
    assert fields["keyframes"] == 2 and fields["metrics"]["chroma"] > 0
    assert fields["novelty"] > 0 and set(fields["deviation"]) >= {"chroma", "sharpness", "magenta", "hue"}
    assert set(fields["events"]) == {"anchor", "reference", "collapse", "drift", "blank", "blank_rejected"}
    import json
    json.dumps(fields)                                  # status.json must be able to carry it


def test_hooks_are_safe_to_call_from_two_threads_at_once():
    dream = Dream(DreamSettings())
    start = keyframe(0, "txt2img")
    dream.keyframe_made(start)
    errors = []

    def keyframes():
        try:
            walk(dream, 40, start)
        except Exception as exc:        # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=keyframes)
    thread.start()
    for n in range(40):
        dream.observe(keyframe(100 + n), latent(n))
        dream.status_fields()
    thread.join()
    assert errors == [] and dream.status_fields()["keyframes"] == 40


def test_made_from_anchor_tells_reanchored_keyframes_from_chained_ones():
    dream = Dream(dataclasses.replace(QUIET, anchor_every=3))
    previous = keyframe(0, "txt2img")
    dream.keyframe_made(previous)
    made = []
    for n in range(1, 7):
        dream.plan_input(previous)
        previous = keyframe(n)
        dream.keyframe_made(previous)
        made.append(dream.made_from_anchor(previous))
    assert made == [False, False, True, False, False, True]


def test_a_live_edit_of_the_quality_log_bounds_applies(tmp_path):
    dream = Dream(QUIET, quality_path=tmp_path / "quality.csv")
    dream.update(dataclasses.replace(QUIET, quality_log_bytes=10_000, quality_log_keep=1))
    observe_all(dream, [(keyframe(0, "txt2img"), latent(0))] + [(keyframe(n % 5), latent(n)) for n in range(1, 120)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quality.csv", "quality.csv.1"]


def test_with_control_off_deviations_are_still_measured_from_the_start_image():
    dream = Dream(DreamSettings(control=False))
    start = Keyframe(picture(0), generated=False, origin="start_image")
    dream.observe(start, latent(0))
    dream.plan_input(start)
    tinted = np.asarray(start.image, np.float64) * 0.5 + np.array([255, 0, 255]) * 0.5
    drifted = keyframe(1, image=Image.fromarray(tinted.astype(np.uint8)))
    dream.keyframe_made(drifted)
    row = dream.observe(drifted, latent(1))
    assert row["deviation"]["magenta"] > 0.2 and row["event"] == ""


def test_plans_name_what_an_ip_adapter_conditions_on_the_reference_else_the_anchor():
    refs = [picture(50), picture(51)]
    dream = Dream(dataclasses.replace(QUIET, anchor_every=3, reference_weight=0.8), references=refs)
    previous, plans = Keyframe(picture(0), generated=False, origin="start_image"), []
    for n in range(1, 6):
        plans.append(dream.plan_input(previous))
        previous = keyframe(n)
        dream.keyframe_made(previous)
    assert plans[0].reason == "reference" and plans[0].reference is refs[0]
    assert [p.reason for p in plans] == ["reference", "", "", "reference", ""]
    assert all(p.reference is refs[0] for p in plans[:3]) and plans[3].reference is refs[1]
    assert {p.reference_weight for p in plans} == {0.8}

    plain = Dream(QUIET)
    start = Keyframe(picture(0), generated=False, origin="start_image")
    plan = plain.plan_input(start)
    assert plan.reference is start.image and plan.reference_weight == 0.7
    plain.keyframe_made(keyframe(1))
    plain.prompt_changed()
    settling = plain.plan_input(keyframe(1))
    assert settling.reason == "prompt" and settling.reference is None and settling.reference_weight == 0.0
    off = Dream(DreamSettings(control=False)).plan_input(start)
    assert off.reference is None and off.reference_weight == 0.0


def test_the_schedule_s_fitted_copy_of_a_keyframe_is_still_recognised_when_observed():
    """The schedule observes a copy (its image fitted to the resolution, via dataclasses.replace),
    not the object the source handed the dream: the anchor, the plan reason and a rescue must
    still be found on it."""
    dream = Dream(dataclasses.replace(QUIET, anchor_every=2))
    start = Keyframe(picture(0), generated=False, origin="start_image")
    fitted = lambda k: dataclasses.replace(k, image=k.image.copy())  # noqa: E731
    dream.plan_input(start)                        # K_0 becomes the anchor
    assert dream.observe(fitted(start), latent(0))["novelty_anchor"] == 0.0
    previous, rows = start, []
    for n in range(1, 4):
        if n > 1:
            dream.plan_input(previous)
        previous = keyframe(n)
        dream.keyframe_made(previous)
        rows.append(dream.observe(fitted(previous), latent(n)))
        assert dream.made_from_anchor(fitted(previous)) == (rows[-1]["reason"] == "anchor")
    assert [r["reason"] for r in rows] == ["", "anchor", ""]
    assert rows[2]["novelty_anchor"] == pytest.approx(
        1 - float(np.dot(*(pool(latent(k)) for k in (2, 3)))), abs=1e-9)


def test_a_keyframe_is_analysed_once_though_it_is_checked_observed_and_grounded(monkeypatch):
    import backend.dream.dream as dream_module
    calls = []
    real = dream_module.analyse
    monkeypatch.setattr(dream_module, "analyse", lambda image: calls.append(image) or real(image))
    dream = Dream(QUIET)
    start = Keyframe(picture(0), generated=False, origin="start_image")
    dream.plan_input(start)
    made = keyframe(1)
    calls.clear()
    assert dream.check_blank(made.image) == ""        # ComfyUISource's order: checked, then made
    dream.keyframe_made(made)
    dream.observe(dataclasses.replace(made, image=made.image.copy()), latent(1))
    plan = dream.plan_input(made)
    assert plan.reason == "" and plan.image is not made.image          # grounded, from the memo
    assert [c for c in calls if c is not start.image] == [made.image]   # K_0 is analysed once as the target


def test_novelty_to_the_anchor_is_measured_when_the_anchor_was_observed_before_it_became_one():
    """In the daemon the schedule may encode K_0 before the keyframe thread plans from it."""
    dream = Dream(QUIET)
    start = Keyframe(picture(0), generated=False, origin="start_image")
    assert dream.observe(dataclasses.replace(start, image=start.image.copy()), latent(0))["novelty_anchor"] is None
    dream.plan_input(start)                                      # now K_0 is the anchor
    dream.keyframe_made(made := keyframe(1))
    row = dream.observe(made, latent(1))
    assert row["novelty_anchor"] == pytest.approx(1 - float(np.dot(pool(latent(0)), pool(latent(1)))), abs=1e-9)
