"""How a config key is declared, once: `key(default, checker, restart=...)` and `section(cls)` make
dataclass fields that carry their checker (and so their range) and restart flag as metadata.
`parsed(cls, parse)` makes a section read by its own module's parser (pause, dream), and
`derived()` a field computed from the others, never a key of its own.
`declared` and `restart_keys` read them back, for values that arrive another way (--fps) and for
the watcher's list of keys that need a restart. No torch, no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from backend.config_checks import Rule

__all__ = ["control_file_rule", "declared", "derived", "key", "model_source_rule", "parsed", "path_rule",
           "restart_keys", "section", "workflow_rule"]


def key(default: Any, check: Callable[[Any], Any] | Rule, *, restart: bool = False) -> Any:
    """A config field: its default (a type such as dict = a fresh one each time), its checker, and
    whether a change applies only after a restart."""
    meta = {"check": check, "restart": restart}
    if isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type, *, restart: bool = False) -> Any:
    """A sub-mapping read against `cls`; `restart`: every key in it needs a restart."""
    return dataclasses.field(default_factory=cls, metadata={"section": cls, "restart": restart})


def parsed(cls: type, parse: Callable[..., tuple[Any, list[str]]], *, restart: tuple[str, ...] = ()) -> Any:
    """A sub-mapping its own module reads: `parse(raw, key_path, base_dir) -> (settings, problems)`,
    so the section's keys and ranges live beside the code that uses them. `restart`: its keys
    that apply only after a restart (the rest apply live)."""
    return dataclasses.field(default_factory=cls, metadata={"parsed": parse, "restart": False,
                                                            "restart_fields": tuple(restart)})


def derived(default: Any = ()) -> Any:
    """A field computed in __post_init__ from the declared keys (not a key a user writes)."""
    return dataclasses.field(default=default, metadata={"derived": True, "restart": False})


def declared(cls: type, name: str) -> Callable[[Any], Any]:
    """The checker declared for `cls.name` (for values that arrive another way, e.g. --fps)."""
    check = next(f for f in dataclasses.fields(cls) if f.name == name).metadata["check"]
    if isinstance(check, Rule):
        raise TypeError(f"{cls.__name__}.{name} needs a Section to be checked")
    return check


def restart_keys(cls: type, prefix: str = "") -> frozenset[str]:
    """Dotted paths of the fields and sections declared with restart=True."""
    out: set[str] = set()
    for f in dataclasses.fields(cls):
        if f.metadata.get("restart"):
            out.add(prefix + f.name)
        elif "parsed" in f.metadata:
            out |= {f"{prefix}{f.name}.{name}" for name in f.metadata["restart_fields"]}
        elif "section" in f.metadata:
            out |= restart_keys(f.metadata["section"], f"{prefix}{f.name}.")
    return frozenset(out)


def path_rule(optional: bool = False, must: str | None = None) -> Rule:
    return Rule(lambda s: s.path_check(optional=optional, must=must))


workflow_rule = Rule(lambda s: s.workflow_check)
model_source_rule = Rule(lambda s: s.model_source)
control_file_rule = Rule(lambda s: lambda v: "auto" if v == "auto" else s.path_check(optional=True)(v))
