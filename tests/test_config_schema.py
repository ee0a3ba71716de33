"""config_schema's declarations, read back at test time: the field factories' metadata and
defaults, `declared`, and `restart_keys` over a small schema and over the real Config (the config
module computes RESTART_ONLY at import, which no test of the imported value can check)."""

from __future__ import annotations

import dataclasses

import pytest

from backend import config_schema as schema
from backend.config import RESTART_ONLY, Config
from backend.config_checks import Rule


def positive(value):
    return value


def parse_inner(raw, key_path, base_dir):
    return raw, []


def small_schema():
    """A two-level schema built now, so the factories run under the test (not at import)."""

    @dataclasses.dataclass
    class Inner:
        speed: float = schema.key(1.5, positive)
        size: int = schema.key(8, positive, restart=True)

    @dataclasses.dataclass
    class Whole:
        frozen: Inner = schema.section(Inner, restart=True)

    @dataclasses.dataclass
    class Parsed:
        level: int = 3

    @dataclasses.dataclass
    class Top:
        name: str = schema.key("reverie", positive, restart=True)
        tags: list = schema.key(list, positive)
        inner: Inner = schema.section(Inner)
        whole: Whole = schema.section(Whole)
        dream: Parsed = schema.parsed(Parsed, parse_inner, restart=("level", "refs"))
        live: Parsed = schema.parsed(Parsed, parse_inner)
        sizes: tuple = schema.derived()
        ratio: float = schema.derived(0.5)

    return Top, Inner


def metadata(cls) -> dict:
    return {f.name: dict(f.metadata) for f in dataclasses.fields(cls)}


def test_each_factory_records_its_checker_and_restart_flag_exactly():
    top, inner = small_schema()
    meta = metadata(top)
    assert meta["name"] == {"check": positive, "restart": True}
    assert meta["tags"] == {"check": positive, "restart": False}
    assert meta["inner"] == {"section": inner, "restart": False}
    whole = meta["whole"]["section"]
    assert meta["whole"] == {"section": whole, "restart": False}
    assert metadata(whole)["frozen"] == {"section": inner, "restart": True}
    assert meta["dream"] == {"parsed": parse_inner, "restart": False, "restart_fields": ("level", "refs")}
    assert meta["live"] == {"parsed": parse_inner, "restart": False, "restart_fields": ()}
    assert meta["sizes"] == meta["ratio"] == {"derived": True, "restart": False}
    assert metadata(inner)["speed"] == {"check": positive, "restart": False}


def test_each_factory_gives_its_default_and_a_fresh_mutable_one_per_instance():
    top, inner = small_schema()
    one, two = top(), top()
    assert (one.name, one.tags, one.sizes, one.ratio) == ("reverie", [], (), 0.5)
    assert one.tags is not two.tags and one.inner is not two.inner
    assert isinstance(one.inner, inner) and (one.inner.speed, one.inner.size) == (1.5, 8)
    assert isinstance(one.whole.frozen, inner) and one.dream.level == 3


def test_restart_keys_lists_flagged_keys_whole_sections_and_a_parsed_sections_own_keys():
    top, _inner = small_schema()
    assert schema.restart_keys(top) == frozenset(
        {"name", "inner.size", "whole.frozen", "dream.level", "dream.refs"})
    assert schema.restart_keys(top, "cfg.") == frozenset(
        {"cfg.name", "cfg.inner.size", "cfg.whole.frozen", "cfg.dream.level", "cfg.dream.refs"})


def test_restart_keys_of_the_config_are_the_keys_the_watcher_restarts_for():
    expected = frozenset({
        "comfyui", "control", "display.output_dir", "display.record", "display.record_dir",
        "display.record_max_bytes", "display.record_segment_seconds", "display.ring_size", "dream.references",
        "generation.resolution", "keyframes.cfg", "keyframes.folder", "keyframes.sampler", "keyframes.scheduler",
        "keyframes.source", "keyframes.start_image", "keyframes.steps", "logging", "vae"})
    assert schema.restart_keys(Config) == expected == RESTART_ONLY


def test_declared_gives_a_plain_checker_and_refuses_one_that_needs_its_section():
    top, inner = small_schema()

    @dataclasses.dataclass
    class WithRule:
        folder: str = schema.key("x", schema.path_rule(optional=True))

    assert schema.declared(inner, "speed") is positive
    with pytest.raises(TypeError) as info:
        schema.declared(WithRule, "folder")
    assert str(info.value) == "WithRule.folder needs a Section to be checked"


class RecordingSection:
    """Stands in for config_checks.Section: records what each rule asks it for."""

    def __init__(self):
        self.asked = []
        self.workflow_check = "workflow checker"
        self.model_source = "model source checker"

    def path_check(self, optional=False, must=None):
        self.asked.append((optional, must))
        return lambda value: ("path", value)


def test_the_rules_ask_their_section_for_the_matching_checker():
    section = RecordingSection()
    assert isinstance(schema.path_rule(), Rule)
    assert schema.path_rule(optional=True, must="dir").make(section)("a") == ("path", "a")
    assert schema.path_rule().make(section)("b") == ("path", "b")
    assert section.asked == [(True, "dir"), (False, None)]
    assert schema.workflow_rule.make(section) == "workflow checker"
    assert schema.model_source_rule.make(section) == "model source checker"
    control = schema.control_file_rule.make(section)
    assert control("auto") == "auto" and control("c.txt") == ("path", "c.txt")
    assert section.asked[-1] == (True, None)
