"""The skin's files read with Rainmeter's rules: encodings, references, bang targets, layout."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.rainmeter.conftest import REPO, Installed
from tests.rainmeter.rm_bangs import parse_args, split_bangs
from tests.rainmeter.rm_ini import Skin, load_skin, replace_variables

SKIN_DIR = REPO / "rainmeter" / "Reverie"
MEASURE_TYPES = {"webparser", "calc", "plugin", "string", "time"}
METER_TYPES = {"image", "string", "shape"}
BUILTINS = {"@", "currentpath", "currentfile", "rootconfigpath", "rootconfig", "currentconfig", "skinspath", "crlf"}
METER_BANGS = {"setoption", "updatemeter", "showmeter", "hidemeter"}
KNOWN_BANGS = METER_BANGS | {"setvariable", "redraw", "commandmeasure", "writekeyvalue"}
ACTION_KEYS = re.compile(r"(Action\d*|^OnChangeAction$|^FinishAction$|^On\w+ErrorAction$)", re.I)


@pytest.fixture(scope="module")
def skin() -> Skin:
    return load_skin(SKIN_DIR / "Reverie.ini", REPO / "rainmeter")


def kinds(skin: Skin, key: str) -> dict[str, str]:
    return {s.lower(): skin.get(s, key).lower() for s in skin.order if skin.get(s, key)}


def actions(skin: Skin) -> list[tuple[str, str, str]]:
    """(section, key, value) of every option that holds bangs, ActionTimer's named actions included."""
    out = []
    for section in skin.order:
        named = set()
        for key in skin.section_keys(section):
            if key.lower().startswith("actionlist"):
                named |= {t.strip().split(",")[0].removeprefix("Repeat ").strip()
                          for t in skin.get(section, key).split("|") if not t.strip().lower().startswith("wait ")}
        for key in skin.section_keys(section):
            if ACTION_KEYS.search(key) or key.lower() in {n.lower() for n in named}:
                out.append((section, key, skin.get(section, key)))
    return out


def test_every_skin_file_is_ascii_or_utf16le() -> None:
    for path in SKIN_DIR.rglob("*"):
        if path.suffix.lower() in {".ini", ".inc"}:
            data = path.read_bytes()
            assert data.startswith(b"\xff\xfe") or data.isascii(), f"{path} is neither ASCII nor UTF-16LE"


def test_the_includes_and_the_placeholder_image_resolve_to_files(skin: Skin) -> None:
    assert [p.name for p in skin.files] == ["Reverie.ini", "Variables.inc", "Control.ini"]
    for meter in ("MeterBase", "MeterTop"):
        assert skin.to_path(skin.get(meter, "ImageName")).is_file()


def test_measure_and_meter_types_are_known(skin: Skin) -> None:
    assert set(kinds(skin, "Measure").values()) <= MEASURE_TYPES
    assert set(kinds(skin, "Meter").values()) <= METER_TYPES


def test_every_variable_reference_is_defined(skin: Skin) -> None:
    defined = set(skin.variables()) | BUILTINS
    for section in skin.order:
        for key in skin.section_keys(section):
            if key.lower() == "regexp":
                continue
            value = skin.get(section, key)
            unresolved = replace_variables(re.sub(r"\[#\w+\]", "", value), {k: "" for k in defined})
            assert "#" not in unresolved, f"[{section}] {key}: undefined variable in {value}"
            for name in re.findall(r"\[#(\w+)\]", value):
                assert name.lower() in defined, f"[{section}] {key}: [#{name}] is not defined"


def test_every_measure_reference_exists(skin: Skin) -> None:
    measures = kinds(skin, "Measure")
    for section in skin.order:
        for key in skin.section_keys(section):
            value = skin.get(section, key)
            if key.lower().startswith("measurename") or key.lower() == "url" and value.startswith("["):
                assert value.strip("[]").lower() in measures, f"[{section}] {key}={value}"
            if key.lower() not in {"regexp", "substitute"}:
                for name in re.findall(r"\[&?([A-Za-z_]\w*)\]", value):
                    assert name.lower() in measures, f"[{section}] {key}: [{name}] is not a measure"
        if skin.get(section, "Measure", "").lower() == "calc":
            for word in re.findall(r"[A-Za-z_]\w*", skin.resolve(skin.get(section, "Formula"))):
                assert word.lower() in measures or word.lower() in {"clamp", "ceil", "round", "max"}, f"[{section}] {word}"


def test_every_bang_is_known_and_its_target_exists(skin: Skin) -> None:
    meters, measures = kinds(skin, "Meter"), kinds(skin, "Measure")
    checked = 0
    for section, key, value in actions(skin):
        for command in split_bangs(value):
            if not command.startswith("!"):
                continue  # a program or folder to open
            bang, _, rest = command[1:].partition(" ")
            args, bang = parse_args(rest), bang.lower()
            assert bang in KNOWN_BANGS, f"[{section}] {key}: unknown bang !{bang}"
            if bang in METER_BANGS and args[0] != "*":
                assert args[0].lower() in meters, f"[{section}] {key}: no meter {args[0]}"
            if bang == "commandmeasure":
                assert measures.get(args[0].lower()) == "plugin", f"[{section}] {key}: no measure {args[0]}"
                lists = [k for k in skin.section_keys(args[0]) if k.lower().startswith("actionlist")]
                verb, number = args[1].split()
                assert verb == "Execute", f"[{section}] {key}: only Execute (Stop can hang Rainmeter 4.5)"
                assert (number == "[#FadeList]" and len(lists) >= 2) or 1 <= int(number) <= len(lists)
            if bang == "setvariable":
                assert args[0].lower() in skin.variables(), f"[{section}] {key}: variable {args[0]} undeclared"
            if bang == "writekeyvalue":
                assert len(args) == 4 and args[3] == "#@#Control.ini" and args[0] == "Variables"
                assert args[1].lower() in skin.variables(), f"{args[1]} is not a Control.ini variable"
            checked += 1
    assert checked > 40


def test_actiontimer_lists_name_existing_actions(skin: Skin) -> None:
    for key in skin.section_keys("MeasureFade"):
        if key.lower().startswith("actionlist"):
            for token in (t.strip() for t in skin.get("MeasureFade", key).split("|")):
                name = token.removeprefix("Repeat ").split(",")[0].strip()
                if not token.lower().startswith("wait "):
                    assert skin.get("MeasureFade", name), f"{key} names missing action {name}"


def test_no_actiontimer_stop_and_no_wait_of_zero(skin: Skin) -> None:
    """The 4.5 ActionTimer plugin: Stop waits for a signal that a normally ending list never sends
    (a Stop meeting a list in its last stretch hangs Rainmeter), and "Wait 0" is not a wait: the
    plugin sends it to Rainmeter as a command. Neither may appear anywhere."""
    for section in skin.order:
        for key in skin.section_keys(section):
            value = skin.get(section, key)
            assert not re.search(r"!CommandMeasure\s+\S+\s+\"?Stop", value, re.I), f"[{section}] {key}: Stop"
            if key.lower().startswith("actionlist"):
                for token in (t.strip() for t in value.split("|")):
                    wait = token.split(",")[1] if token.lower().startswith("repeat ") else \
                        token[5:] if token.lower().startswith("wait ") else None
                    if wait is not None:
                        assert float(skin.resolve(wait)) > 0, f"[{section}] {key}: wait of {wait}"
    fades = [skin.get("MeasureFade", k) for k in skin.section_keys("MeasureFade") if k.lower().startswith("actionlist")]
    assert len(fades) == 2 and fades[0] == fades[1]  # fades alternate between two identical lists


def test_context_menu_lives_in_the_rainmeter_section_and_is_contiguous(skin: Skin) -> None:
    titles = [k for k in skin.section_keys("Rainmeter") if k.lower().startswith("contexttitle")]
    assert len(titles) == 9
    for n, title in enumerate(titles, 1):
        suffix = "" if n == 1 else str(n)
        assert title.lower() == f"contexttitle{suffix}"
        text = skin.get("Rainmeter", title)
        assert len(text) <= 30 and (set(text) == {"-"} or skin.get("Rainmeter", f"ContextAction{suffix}"))
    for section in skin.order[1:]:
        assert not any(k.lower().startswith("context") for k in skin.section_keys(section))


def test_image_meters_have_fixed_size_and_are_static(skin: Skin) -> None:
    for meter, kind in kinds(skin, "Meter").items():
        assert skin.get(meter, "W") and skin.get(meter, "H"), f"[{meter}] needs W and H (no window jumps)"
        if kind == "image" and skin.get(meter, "ImageName"):
            # static: loaded at refresh and after !SetOption + !UpdateMeter only, never per update
            assert skin.get(meter, "DynamicVariables", "0") == "0" and not skin.get(meter, "MeasureName")
    assert skin.get("Rainmeter", "SkinWidth") and skin.get("Rainmeter", "SkinHeight")


def test_every_imagename_change_is_followed_by_an_update_of_that_meter(skin: Skin) -> None:
    for section, key, value in actions(skin):
        bangs = [parse_args(c[1:].partition(" ")[2]) + [c[1:].partition(" ")[0].lower()] for c in split_bangs(value)]
        for i, args in enumerate(bangs):
            if args[-1] == "setoption" and args[1].lower() in {"imagename", "imagealpha"}:
                later = [b for b in bangs[i + 1 :] if b[-1] == "updatemeter" and b[0] in (args[0], "*")]
                assert later and any(b[-1] == "redraw" for b in bangs[i + 1 :]), f"[{section}] {key}"


def test_installed_skin_resolves_to_the_daemons_output_folder(installed: Installed) -> None:
    skin = installed.load()
    url = skin.resolve(skin.get("MeasureStatus", "URL"))
    assert skin.to_path(url.removeprefix("file://")) == installed.output / "status.txt"
    assert skin.to_path(skin.resolve("#@#Control.ini")) == installed.skin_dir / "@Resources" / "Control.ini"
    assert Path(skin.resolve("#ConfigFile#")) == REPO / "config.yaml"


def test_regexp_holds_nothing_rainmeter_would_substitute(skin: Skin) -> None:
    """No '#' (variables), no '[\\' (character references) and no '[Name]' measure look-alikes."""
    regexp = skin.get("MeasureStatus", "RegExp")
    assert "#" not in regexp and "[\\" not in regexp and "%" not in regexp
    assert all(not re.fullmatch(r"[&#$]?[A-Za-z_]\w*", inner) for inner in re.findall(r"\[([^\]]*)\]", regexp))
