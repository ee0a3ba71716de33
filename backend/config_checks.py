"""Validation building blocks for backend/config.py: the error type, a strict YAML loader, value
checkers, and `Section`, which reads one mapping against its dataclass and records every problem
with its key path instead of stopping at the first one.

A checker is `value -> normalized value` and raises `Bad("must be ...")`; `Section.get` turns that
into a "section.key: must be ..." problem and carries on with the field's default.
`Section.build()` reads a whole mapping (and its sub-sections) from the fields declared with
config_schema's `key` / `section`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import errno
import os
import re
import reprlib
from pathlib import Path
from typing import Any, Callable

import yaml


class ConfigError(Exception):
    """Invalid configuration. `.problems`: one "key.path: what is wrong" line per problem;
    `.source`: the file (or "command line"); str(): one message naming the file and every problem."""

    def __init__(self, source: str | Path, problems: list[str]):
        self.source = str(source)
        self.problems = list(problems)
        count = f"{len(self.problems)} problem" + ("s" if len(self.problems) != 1 else "")
        super().__init__(f"invalid config {self.source} ({count}):\n" + "\n".join(f"  - {p}" for p in self.problems))


class Bad(ValueError):
    """A checker's complaint about one value, e.g. "must be between 0 and 9, got 12"."""


class Rule:
    """A checker that needs its Section (paths resolve against the config file's folder):
    `make(section) -> checker`."""

    def __init__(self, make: Callable[[Section], Callable[[Any], Any]]):
        self.make = make


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (plain PyYAML silently keeps the last one)."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:
            continue  # unhashable: construct_mapping below reports it with its position
        if duplicate:
            raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                    f"found duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def decode_text(data: bytes, source: str) -> str:
    """Config file bytes -> text (UTF-8, a BOM tolerated); other encodings are a ConfigError that
    names the line, since Windows editors often save in the local code page."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ConfigError(source, [f"line {line}: not UTF-8 text (byte 0x{data[e.start]:02x}); save the file "
                                   "as UTF-8"]) from None


def one_line(text: str, limit: int = 300) -> str:
    """`text` on one line, at most `limit` characters (for status fields)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def load_yaml(text: str, source: str) -> Any:
    """YAML text -> Python structure; a syntax error becomes a ConfigError with line and column."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = " ".join(str(part) for part in (getattr(e, "context", None), getattr(e, "problem", None)) if part)
        raise ConfigError(source, [f"YAML syntax error at {where}{what or e}"]) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:  # e.g. a timestamp like 2024-13-45
        raise ConfigError(source, [f"YAML value error: {e}"]) from None


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict = 3, 6, 6, 6
_SHORT.maxstring, _SHORT.maxlong, _SHORT.maxother = 70, 70, 70


def show(value: Any) -> str:
    """Short description of a bad value for messages. Bounded work whatever the value: a YAML alias
    bomb (lists of aliases of lists ...) is a few hundred bytes that plain repr() expands to GBs."""
    text = _SHORT.repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return "nothing (null)" if value is None else text if isinstance(value, (str, int, float)) else \
        f"{type(value).__name__} {text}"


def integer(lo: int, hi: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Bad(f"must be a whole number, got {show(value)}")
        if not lo <= value <= hi:
            raise Bad(f"must be between {lo} and {hi}, got {value}")
        return value
    check.range = (lo, hi)  # type: ignore[attr-defined]  # for docs and the config.yaml comment check
    return check


def number(lo: float, hi: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise Bad(f"must be a number, got {show(value)}")
        if not lo <= value <= hi:
            raise Bad(f"must be between {lo:g} and {hi:g}, got {value:g}")
        return float(value)
    check.range = (lo, hi)  # type: ignore[attr-defined]
    return check


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Bad(f"must be true or false, got {show(value)}")
    return value


def choice(*options: str, upper: bool = False) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        norm = value.strip().upper() if upper and isinstance(value, str) else \
            value.strip().lower() if isinstance(value, str) else None
        if norm not in options:
            raise Bad(f"must be one of {', '.join(options)}, got {show(value)}")
        return norm
    return check


def text(optional: bool = False) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value.strip():
            raise Bad(f"must be a non-empty text{' or null' if optional else ''}, got {show(value)}")
        return value.strip()
    return check


def resolution(value: Any) -> tuple[int, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise Bad(f"must be [width, height], got {show(value)}")
    size = tuple(integer(64, 4096)(v) if not isinstance(v, bool) and isinstance(v, int) else None for v in value)
    if None in size or any(v % 8 for v in size):
        raise Bad(f"must be [width, height] with whole numbers that are multiples of 8, got {show(value)}")
    return size  # type: ignore[return-value]


def frames(value: Any) -> int | str:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1000:
        raise Bad(f"must be a whole number 0..1000 or \"auto\", got {show(value)}")
    return value


frames.range = (0, 1000)  # type: ignore[attr-defined]


def url(value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+(/\S*)?$", value.strip()):
        raise Bad(f"must be an http:// or https:// URL such as http://127.0.0.1:8188, got {show(value)}")
    return value.strip().rstrip("/")


def urls(value: Any) -> tuple[str, ...]:
    """One URL or a list of them (failover, in order); duplicates dropped."""
    if isinstance(value, str):
        return (url(value),)
    if not isinstance(value, list) or not value:
        raise Bad(f"must be a URL or a list of URLs such as [http://127.0.0.1:8188, http://127.0.0.1:8189], "
                  f"got {show(value)}")
    out: list[str] = []
    for i, item in enumerate(value):
        try:
            one = url(item)
        except Bad as e:
            raise Bad(f"item {i} {e}") from None
        if one not in out:
            out.append(one)
    return tuple(out)


def device(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value.strip().lower()):
        raise Bad(f"must be auto, cpu, cuda, cuda:N or mps, got {show(value)}")
    return value.strip().lower()


def node_ids(value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, (str, int))
                                              and not isinstance(v, bool) for k, v in value.items()):
        raise Bad(f"must be a mapping of role: node id, e.g. {{image: \"12\"}}, got {show(value)}")
    return {k: str(v) for k, v in value.items()}


def prompts(prompt_cls: type) -> Callable[[Any], tuple]:
    """A non-empty list whose items are a text or {prompt: ..., negative: ...}."""
    def check(value: Any) -> tuple:
        if not isinstance(value, list) or not value:
            raise Bad(f"must be a non-empty list of prompts, got {show(value)}")
        out = []
        for i, item in enumerate(value):
            if isinstance(item, str) and item.strip():
                out.append(prompt_cls(prompt=item.strip(), negative=""))
            elif isinstance(item, dict) and set(item) <= {"prompt", "negative"} and isinstance(item.get("prompt"), str) \
                    and item["prompt"].strip() and isinstance(item.get("negative", ""), str):
                out.append(prompt_cls(prompt=item["prompt"].strip(), negative=item.get("negative", "").strip()))
            else:
                raise Bad(f"item {i} must be a text or {{prompt: text, negative: text}}, got {show(item)}")
        return tuple(out)
    return check


def check_one(name: str, value: Any, check: Callable[[Any], Any], problems: list[str], default: Any) -> Any:
    try:
        return check(value)
    except Bad as e:
        problems.append(f"{name}: {e}")
    except (OSError, RuntimeError) as e:  # a path the OS refuses to look at: too long, no access, no ~
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        problems.append(f"{name}: cannot use this path ({reason}); give a shorter or accessible path")
    return default


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dataclasses -> {"section.key": value}."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def replace_at(new: Any, old: Any, parts: list[str]) -> Any:
    """Copy of `new` with the value at the dotted path `parts` taken from `old`."""
    head = parts[0]
    value = getattr(old, head) if len(parts) == 1 else replace_at(getattr(new, head), getattr(old, head), parts[1:])
    return dataclasses.replace(new, **{head: value})


class Section:
    """One mapping of the config, read against the dataclass that describes it."""

    def __init__(self, data: Any, path: str, cls: type, problems: list[str], base: Path):
        self.path, self.cls, self.problems, self.base = path, cls, problems, base
        self.fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("derived")}
        if data is None:
            data = {}  # an empty section means "all defaults"
        if not isinstance(data, dict):
            problems.append(f"{path or '(top level)'}: must be a mapping of keys, got {show(data)}")
            data = {}
        self.data = data
        for key in data:
            if key not in self.fields:
                close = difflib.get_close_matches(str(key), list(self.fields), n=1, cutoff=0.6)
                hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(self.fields)}"
                problems.append(f"{self.key_path(key)}: unknown key ({hint})")

    def key_path(self, key: Any) -> str:
        return f"{self.path}.{key}" if self.path else str(key)

    def default(self, key: str) -> Any:
        f = self.fields[key]
        value = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
        return self.resolve(value) if isinstance(value, Path) else value

    def get(self, key: str, check: Callable[[Any], Any] | Rule | None = None) -> Any:
        """The checked value of `key` (its default when absent or bad); `check` defaults to the declared one."""
        if key not in self.data:
            return self.default(key)
        check = self.fields[key].metadata["check"] if check is None else check
        if isinstance(check, Rule):
            check = check.make(self)
        return check_one(self.key_path(key), self.data[key], check, self.problems, self.default(key))

    def sub(self, key: str, cls: type) -> Section:
        return Section(self.data.get(key), self.key_path(key), cls, self.problems, self.base)

    def build(self) -> Any:
        """An instance of the section's dataclass, every field read with its declared checker."""
        values = {}
        for name, f in self.fields.items():
            if "section" in f.metadata:
                values[name] = self.sub(name, f.metadata["section"]).build()
            elif "parsed" in f.metadata:
                raw = self.data.get(name)
                values[name], problems = f.metadata["parsed"](raw, self.key_path(name), self.base)
                self.problems.extend(problems)
            else:
                values[name] = self.get(name)
        return self.cls(**values)

    def resolve(self, value: str | Path) -> Path:
        return Path(os.path.normpath(self.base / Path(value).expanduser()))

    def path_check(self, optional: bool = False, must: str | None = None) -> Callable[[Any], Path | None]:
        """A path resolved against the config folder. `must`: "dir"/"file" = exists as that;
        "new_dir"/"new_file" = may be missing, but is not the other kind."""
        def check(value: Any) -> Path | None:
            if value is None and optional:
                return None
            if not isinstance(value, str) or not value.strip() or "\x00" in value:
                raise Bad(f"must be a path{' or null' if optional else ''}, got {show(value)}")
            path = self.resolve(value.strip())
            if must == "dir" and not path.is_dir():
                raise Bad(f"is a file, not a folder: {path}" if path.is_file() else f"folder not found: {path}")
            if must == "file" and not path.is_file():
                raise Bad(f"is a folder, not a file: {path}" if path.is_dir() else f"file not found: {path}")
            if must == "new_dir" and path.exists() and not path.is_dir():
                raise Bad(f"is a file, not a folder: {path}; name a folder (it is created when missing)")
            if must == "new_file" and path.is_dir():
                raise Bad(f"is a folder, not a file: {path}; name a file in it, e.g. {path / 'reverie.log'}")
            return path
        return check

    def workflow_check(self, value: Any) -> str:
        if isinstance(value, str) and value.strip().startswith("builtin:") and value.strip()[8:]:
            return value.strip()
        if not isinstance(value, str) or not value.strip():
            raise Bad(f"must be builtin:<name> or a workflow .json path, got {show(value)}")
        return str(self.path_check(must="file")(value))

    def model_source(self, value: Any) -> str | None:
        """A path (resolved) or a Hugging Face id like "stabilityai/sd-vae-ft-mse" (kept as is). It is a
        path when it is absolute, starts with . or ~, uses a backslash, names a model file, or exists."""
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip() or "\x00" in value:
            raise Bad(f"must be a path, a Hugging Face id or null, got {show(value)}")
        value = value.strip()
        looks_like_path = (Path(value).is_absolute() or value.startswith((".", "~")) or "\\" in value
                           or value.lower().endswith((".safetensors", ".pt", ".pth", ".ckpt", ".bin"))
                           or self.resolve(value).exists())
        return str(self.resolve(value)) if looks_like_path else value


def writable_problems(output_dir: Path, log_file: Path | None, *, create: bool = True) -> list[str]:
    """Problems with the places Reverie writes to. With `create` (once at start, never on a live
    edit) they are found by creating them: the output folder, a probe file in it, the log file
    opened for appending. Without it (`--check`, which must leave nothing behind) by asking the OS
    whether the place, or the nearest folder above it that exists, can be written."""
    problems = []
    try:
        if create:
            output_dir.mkdir(parents=True, exist_ok=True)
            probe = output_dir / f".reverie-write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        else:
            _may_write(output_dir)
    except OSError as e:
        problems.append(f"display.output_dir: cannot write to {output_dir} ({e.strerror or e}); choose a folder "
                        "you can write to")
    if log_file is not None:
        try:
            if create:
                log_file.parent.mkdir(parents=True, exist_ok=True)
                with open(log_file, "a", encoding="utf-8"):
                    pass
            else:
                _may_write(log_file)
        except OSError as e:
            problems.append(f"logging.file: cannot write to {log_file} ({e.strerror or e}); choose a file you can "
                            "write to, or null for console only")
    return problems


def _may_write(path: Path) -> None:
    """OSError unless `path` (an existing file or folder, or else the nearest existing folder above
    it, where it would be made) can be written by this process."""
    place = path
    while not place.exists():
        if place.parent == place:
            break
        place = place.parent
    if place != path and not place.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "a file stands where a folder is needed", str(place))
    if not os.access(place, os.W_OK):
        raise PermissionError(errno.EACCES, "permission denied", str(place))
