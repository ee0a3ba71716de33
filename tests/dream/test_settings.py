"""The dream: section and reference images: every problem named, in one list."""

from __future__ import annotations

import pytest
from PIL import Image

from backend.dream.references import ReferenceError, load_references, validate_references
from backend.dream.settings import DreamSettings, parse_dream_settings


def test_an_absent_section_means_the_defaults_with_every_control_on():
    settings, problems = parse_dream_settings(None, "dream")
    assert problems == [] and settings == DreamSettings() and settings.control and settings.anchor_every == 16


def test_valid_values_are_taken():
    settings, problems = parse_dream_settings({"anchor_every": 8, "grounding": "reinhard", "chroma_strength": 0.5,
                                               "references": "refs", "control": False}, "dream")
    assert problems == []
    assert (settings.anchor_every, settings.grounding, settings.chroma_strength) == (8, "reinhard", 0.5)
    assert settings.references == ("refs",) and settings.control is False


@pytest.mark.parametrize("raw, problem", [
    ({"anchor_evry": 8}, "dream.anchor_evry: unknown key"),
    ({"anchor_every": 2.5}, "dream.anchor_every: must be an integer"),
    ({"anchor_every": True}, "dream.anchor_every: must be an integer"),
    ({"chroma_strength": 1.5}, "dream.chroma_strength: must be a number from 0 to 1"),
    ({"grounding": "lut"}, "dream.grounding: must be one of reinhard, histogram, off"),
    ({"control": "yes"}, "dream.control: must be true or false"),
    ({"references": [3]}, "dream.references: must be an image path"),
    ("on", "dream: must be a mapping"),
])
def test_bad_values_are_named_by_their_key_path(raw, problem):
    settings, problems = parse_dream_settings(raw, "dream")
    assert len(problems) == 1 and problems[0].startswith(problem)
    assert settings == DreamSettings()


def test_all_problems_are_reported_at_once():
    _, problems = parse_dream_settings({"anchor_every": -1, "magenta_max": 2, "typo": 1}, "dream")
    assert [p.split(":")[0] for p in problems] == ["dream.typo", "dream.anchor_every", "dream.magenta_max"]


def test_references_from_files_and_folders_load_in_name_order(tmp_path):
    folder = tmp_path / "refs"
    folder.mkdir()
    for name, colour in (("b.png", (0, 0, 255)), ("a.jpg", (255, 0, 0))):
        Image.new("RGB", (16, 8), colour).save(folder / name)
    (folder / "notes.txt").write_text("not an image, not an image suffix either")
    Image.new("RGB", (16, 8), (0, 255, 0)).save(tmp_path / "single.png")
    images = load_references(["refs", str(tmp_path / "single.png")], base=tmp_path)
    assert [im.getpixel((0, 0))[:3] for im in images][1:] == [(0, 0, 255), (0, 255, 0)]
    assert images[0].getpixel((0, 0))[0] > 200 and len(images) == 3


def test_every_bad_reference_is_listed_in_one_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "text.jpg").write_text("hello")
    Image.new("RGB", (4, 4)).save(tmp_path / "good.png")
    entries = ["missing.png", "empty", "broken.png", "text.jpg", "good.png"]
    problems = validate_references(entries, base=tmp_path)
    assert len(problems) == 4
    assert any("missing.png: no such file" in p for p in problems)
    assert any("empty: the folder has no images" in p for p in problems)
    assert sum("not an image" in p or "unreadable" in p for p in problems) == 2
    with pytest.raises(ReferenceError) as caught:
        load_references(entries, base=tmp_path)
    message = str(caught.value)
    assert message.count(";") == 3 and message.endswith(".") and "dream.references" in message


def test_the_summary_names_the_controls_in_force():
    line = DreamSettings(references=("refs",)).summary()
    assert "histogram grounding (chroma 0.6, luma 0.2)" in line and "anchor every 16 at denoise 0.6" in line
    assert "1 reference entry" in line
    assert DreamSettings(control=False).summary().startswith("dream control off")


def test_a_fixed_seed_without_the_anchor_walk_gets_a_warning():
    from backend.dream.settings import seed_warning
    assert "fixed picture" in seed_warning(DreamSettings(anchor_every=0), "fixed")
    assert "fixed picture" in seed_warning(DreamSettings(control=False), "fixed")
    assert seed_warning(DreamSettings(), "fixed") == ""
    assert seed_warning(DreamSettings(anchor_every=0), "random") == ""


def test_a_reference_path_the_os_cannot_resolve_is_a_problem_not_a_crash(tmp_path):
    from backend.dream.settings import parse_dream_settings

    settings, problems = parse_dream_settings({"references": ["~nobody_here_at_all/x.png"]}, "dream", tmp_path)
    assert settings.references == ()
    assert len(problems) == 1 and problems[0].startswith("dream.references: cannot use this path (")
    fine, none = parse_dream_settings({"references": "refs"}, "dream", tmp_path)
    assert none == [] and fine.references == (str(tmp_path / "refs"),)
