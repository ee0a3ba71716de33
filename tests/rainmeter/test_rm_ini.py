"""The test-side INI reader follows Rainmeter's rules, not configparser's (NOTES.md §5)."""

from __future__ import annotations

from pathlib import Path

from tests.rainmeter.rm_ini import load_skin, read_sections, replace_variables


def write(path: Path, text: str, encoding: str = "ascii") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode(encoding)
    path.write_bytes(b"\xff\xfe" + data if encoding == "utf-16-le" else data)
    return path


def test_first_duplicate_key_wins_keys_and_sections_fold_case_and_quotes_strip(tmp_path: Path) -> None:
    path = write(tmp_path / "a.ini", '[Meter]\nImageName="first.png"\nimagename=second.png\n# no equals\n'
                 '; c=1\nText=a:b\n[meter]\nX=9\n')
    assert read_sections(path) == [("Meter", [("ImageName", "first.png"), ("Text", "a:b")])]


def test_utf16le_with_bom_is_read(tmp_path: Path) -> None:
    path = write(tmp_path / "u.ini", "[Variables]\r\nName=Rêverie\r\n", "utf-16-le")
    assert read_sections(path) == [("Variables", [("Name", "Rêverie")])]


def test_include_resolves_relative_to_the_including_file_and_later_values_win(tmp_path: Path) -> None:
    skins = tmp_path / "Skins"
    write(skins / "S" / "@Resources" / "v.inc", "[Variables]\nA=from-include\nB=inc\n[Extra]\nK=1\n")
    skin = load_skin(write(skins / "S" / "s.ini", "[Variables]\nA=main\n@Include=#@#v.inc\nC=#B#-#A#\n[Last]\nX=1\n"),
                     skins)
    assert skin.variables() == {"a": "from-include", "b": "inc", "c": "#B#-#A#"}
    assert skin.resolve(skin.get("Variables", "C")) == "inc-from-include"
    assert skin.order == ["Variables", "Extra", "Last"]


def test_unknown_variable_skips_to_its_closing_hash_like_rainmeter() -> None:
    assert replace_variables("([#A]+#B#)", {"b": "2"}) == "([#A]+2)"
    assert replace_variables("#X# #Y#", {"y": "1"}) == "#X# 1"
