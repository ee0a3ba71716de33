"""A Rainmeter-faithful skin reader for tests (NOT configparser, whose defaults differ; NOTES.md §5).

Rules, from Rainmeter's Library/ConfigParser.cpp (ReadIniFile, SetValue, ReplaceVariables):
* files are UTF-16LE (with or without BOM) or ANSI; keys and sections are case-insensitive;
* only ``=`` separates key and value; lines without ``=`` and ``;`` comments are skipped;
* within one section of one file the first duplicate key wins; a section name seen again in the
  same file is ignored; matching surrounding quotes (``"`` or ``'``) are stripped;
* ``@Include*`` keys are expanded where they stand, with the variables known so far, relative to
  the including file's folder; the included file's values override earlier ones and later keys
  override the included ones (one value map, later writes win); its new sections are inserted
  after the including section;
* ``#Var#`` resolves from [Variables] and built-ins (#@#, #CURRENTPATH#, #ROOTCONFIGPATH#, ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path


def decode_skin_file(data: bytes) -> str:
    """Rainmeter's decoding: UTF-16LE by BOM or by NUL bytes, else ANSI (cp1252)."""
    if data[:2] == b"\xff\xfe":
        return data[2:].decode("utf-16-le")
    if len(data) >= 2 and b"\x00" in data:
        return data.decode("utf-16-le")
    return data.decode("cp1252")


def read_sections(path: Path) -> list[tuple[str, list[tuple[str, str]]]]:
    """One file -> [(section, [(key, value), ...])] in file order, first duplicates kept."""
    out: list[tuple[str, list[tuple[str, str]]]] = []
    seen_sections: set[str] = set()
    current: list[tuple[str, str]] | None = None
    seen_keys: set[str] = set()
    for raw in decode_skin_file(Path(path).read_bytes()).splitlines():
        line = raw.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith("[") and "]" in line:
            name = line[1 : line.index("]")].strip()
            if name.lower() in seen_sections:
                current = None
            else:
                seen_sections.add(name.lower())
                current, seen_keys = [], set()
                out.append((name, current))
            continue
        if current is None or "=" not in line or line.startswith("="):
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if key.lower() in seen_keys:
            continue
        seen_keys.add(key.lower())
        if len(value) >= 2 and value[0] in "\"'" and value[-1] == value[0]:
            value = value[1:-1]
        current.append((key, value))
    return out


def replace_variables(text: str, table: dict[str, str]) -> str:
    """ConfigParser::ReplaceVariables' scan: from each '#' to the next; a known name is replaced,
    an unknown one is skipped up to its closing '#', which may open the next name
    ('[#A]+#B#' resolves #B#)."""
    start = 0
    while (start := text.find("#", start)) != -1:
        end = text.find("#", start + 1)
        if end == -1:
            break
        value = table.get(text[start + 1 : end].lower())
        if value is None:
            start = end
            continue
        text = text[:start] + value + text[end + 1 :]
        start += len(value)
    return text


@dataclass
class Skin:
    """A loaded skin: sections in Rainmeter's order, raw option values, variables."""

    path: Path
    skins_dir: Path
    order: list[str] = field(default_factory=list)          # section names as written
    values: dict[tuple[str, str], str] = field(default_factory=dict)  # (section.lower, key.lower) -> raw
    keys: dict[str, list[str]] = field(default_factory=dict)  # section.lower -> keys as written, in order
    files: list[Path] = field(default_factory=list)          # the .ini plus every included file

    @property
    def root(self) -> Path:
        return self.skins_dir / self.path.relative_to(self.skins_dir).parts[0]

    def builtins(self) -> dict[str, str]:
        config = self.path.parent.relative_to(self.skins_dir)
        return {"@": f"{self.root}\\@Resources\\", "currentpath": f"{self.path.parent}\\",
                "currentfile": self.path.name, "rootconfigpath": f"{self.root}\\",
                "rootconfig": self.root.name, "currentconfig": str(config).replace("/", "\\"),
                "skinspath": f"{self.skins_dir}\\", "crlf": "\n"}

    def variables(self) -> dict[str, str]:
        return {k: v for (s, k), v in self.values.items() if s == "variables"}

    def get(self, section: str, key: str, default: str | None = None) -> str | None:
        return self.values.get((section.lower(), key.lower()), default)

    def section_keys(self, section: str) -> list[str]:
        return self.keys.get(section.lower(), [])

    def has_section(self, name: str) -> bool:
        return name.lower() in self.keys

    def resolve(self, text: str, extra: dict[str, str] | None = None) -> str:
        """Replace #Var# (variables, then built-ins) the way ReplaceVariables does; unknown stay."""
        table = {**self.builtins(), **self.variables(), **(extra or {})}
        for _ in range(10):  # variables may contain variables
            new = replace_variables(text, table)
            if new == text:
                break
            text = new
        return text

    def to_path(self, text: str) -> Path:
        """A resolved Windows path below the skins folder -> the same file on this machine."""
        resolved = self.resolve(text).replace("\\", "/")
        return Path(re.sub(r"/+", "/", resolved))


def load_skin(path: Path, skins_dir: Path) -> Skin:
    """Read a skin .ini with its @Includes the way ConfigParser::ReadIniFile does."""
    skin = Skin(Path(path), Path(skins_dir))
    _read_into(skin, Path(path), insert_at=None, depth=0)
    return skin


def _read_into(skin: Skin, path: Path, insert_at: int | None, depth: int) -> None:
    if depth > 100:
        raise RecursionError(f"@Include loop at {path}")
    skin.files.append(path)
    for name, items in read_sections(path):
        low = name.lower()
        if low not in skin.keys:
            skin.keys[low] = []
            if insert_at is None:
                skin.order.append(name)
            else:
                skin.order.insert(insert_at, name)
                insert_at += 1
        for key, value in items:
            if key.lower().startswith("@include"):
                target = skin.resolve(value)
                target_path = skin.to_path(target) if re.match(r"^[A-Za-z]:|^/|^\\", target) \
                    else path.parent / target.replace("\\", "/")
                position = [s.lower() for s in skin.order].index(low) + 1
                _read_into(skin, target_path, position, depth + 1)
                continue
            if key not in skin.keys[low] and key.lower() not in (k.lower() for k in skin.keys[low]):
                skin.keys[low].append(key)
            skin.values[(low, key.lower())] = value
