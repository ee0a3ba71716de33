"""A small Rainmeter engine for tests: runs a skin's measures, actions and image meters.

What it follows (read from Rainmeter's source; none of it was run on Windows):
* option reads resolve #Var# with the variables of that moment (ConfigParser::ReadString);
  [#Var] and [Measure] in a bang's arguments resolve when that bang runs (ParseString);
* measures update in file order; OnChangeAction fires when value or string differs from the
  last update, never on the first (Measure::DoChangeAction);
* WebParser ``file://`` + RegExp (PCRE; Python's re agrees on the syntax used here),
  children by StringIndex, Substitute; Calc formulas; ActionTimer lists run synchronously,
  their Wait times summed;
* Image meter (MeterImage.cpp / GeneralImage.cpp / BitmapLoader.cpp): a static meter (no
  MeasureName, DynamicVariables=0) loads at Initialize and again only after !SetOption (which
  makes it re-read its options on the next !UpdateMeter); a dynamic one on every update. Each
  load compares path, size and mtime with the loaded bitmap and re-decodes only on a change;
  every check opens the file (counted in ``opens``). A file that cannot be opened or decoded
  leaves the meter blank and logs, as Rainmeter does.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tests.rainmeter.rm_bangs import format_number, parse_args, parse_formula, split_bangs, evaluate
from tests.rainmeter.rm_ini import Skin
from tests.rainmeter.rm_profile import write_key


@dataclass
class ImageState:
    path: Path | None = None
    signature: tuple[int, int] | None = None
    pixels: np.ndarray | None = None
    alpha: int = 255
    dirty: bool = False  # !SetOption happened: options are re-read on the next update


@dataclass
class SkinSim:
    skin: Skin
    variables: dict[str, str] = field(default_factory=dict)
    overrides: dict[tuple[str, str], str] = field(default_factory=dict)
    measures: dict[str, tuple[float, str]] = field(default_factory=dict)
    old: dict[str, tuple[float, str]] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)
    matched: dict[str, bool] = field(default_factory=dict)
    images: dict[str, ImageState] = field(default_factory=dict)
    hidden: set[str] = field(default_factory=set)
    log: list[str] = field(default_factory=list)
    opens: int = 0
    decodes: int = 0
    timer_ms: float = 0.0
    run_commands: list[str] = field(default_factory=list)
    redraws: int = 0

    def __post_init__(self) -> None:
        self.variables = {k: v for k, v in self.skin.variables().items()}
        for name in self.skin.order:
            if (self.raw(name, "Hidden") or "0").strip() == "1":
                self.hidden.add(name.lower())
            if (self.raw(name, "Meter") or "").lower() == "image":
                self.images[name.lower()] = ImageState()
                if not self.is_dynamic(name):
                    self.load_image(name)  # Initialize()

    # --- options and substitution -------------------------------------------------------------
    def raw(self, section: str, key: str) -> str | None:
        return self.overrides.get((section.lower(), key.lower()), self.skin.get(section, key))

    def resolve_vars(self, text: str) -> str:
        return self.skin.resolve(text, extra=self.variables)

    def replace_measures(self, text: str) -> str:
        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("#"):
                return self.variables.get(name[1:].lower(), match.group(0))
            key = name.lstrip("&").lower()
            if key in self.measures:
                number, string = self.measures[key]
                return string if string is not None else format_number(number)
            return match.group(0)
        return re.sub(r"\[([#&]?[A-Za-z_@][A-Za-z0-9_]*)\]", sub, text)

    def read(self, section: str, key: str, default: str = "", measures: bool = True) -> str:
        value = self.raw(section, key)
        value = default if value is None else self.resolve_vars(value)
        return self.replace_measures(value) if measures else value

    def evaluate_option(self, section: str, key: str) -> float:
        text = self.read(section, key, "0")
        value = parse_formula(text, self.number)
        return value if value is not None else float(text)

    def number(self, name: str) -> float:
        return self.measures[name.lower()][0]

    def is_dynamic(self, meter: str) -> bool:
        return self.raw(meter, "DynamicVariables") == "1" or bool(self.raw(meter, "MeasureName"))

    # --- update cycle ---------------------------------------------------------------------------
    def update(self) -> None:
        """One skin update: every measure in order, then the dynamic meters."""
        for name in self.skin.order:
            kind = (self.raw(name, "Measure") or "").lower()
            if kind:
                self.update_measure(name, kind)
        for name in self.skin.order:
            if name.lower() in self.images and self.is_dynamic(name):
                self.update_meter(name)

    def update_measure(self, name: str, kind: str) -> None:
        key = name.lower()
        if kind == "webparser":
            url = self.read(name, "URL", measures=False)
            if url.startswith("file://"):
                self.fetch(name, self.skin.to_path(url[len("file://"):]))
                return
            parent = url.strip("[]").lower()
            groups = self.groups.get(parent, [])
            index = int(self.read(name, "StringIndex", "0"))
            string = groups[index - 1] if 0 < index <= len(groups) else ""
            string = self.substitute(string, self.raw(name, "Substitute") or "")
            match = re.match(r"\s*[-+]?\d*\.?\d+", string)
            self.measures[key] = (float(match.group(0)) if match else 0.0, string)
        elif kind == "calc":
            self.measures[key] = (evaluate(self.read(name, "Formula", "0", measures=False), self.number), None)
        elif kind == "plugin":
            self.measures.setdefault(key, (0.0, ""))
            return
        else:
            raise NotImplementedError(f"measure type {kind} in [{name}]")
        pattern = self.read(name, "IfMatch", measures=False)
        if pattern:  # IfActions: the action runs when the match state flips, not on every update
            matched = re.search(pattern, self.measures[key][1] or "") is not None
            if matched != self.matched.get(key, False):
                self.matched[key] = matched
                self.execute(self.read(name, "IfMatchAction" if matched else "IfNotMatchAction", measures=False))
        action = self.read(name, "OnChangeAction", measures=False)
        if action:
            if key in self.old and self.old[key] != self.measures[key]:
                self.execute(action)
            self.old[key] = self.measures[key]

    def fetch(self, name: str, path: Path) -> None:
        try:
            text = path.read_bytes().decode("utf-8", errors="replace")
        except OSError:
            self.execute(self.read(name, "OnConnectErrorAction", measures=False))
            return
        match = re.search(self.read(name, "RegExp", measures=False), text)
        if match is None:
            self.execute(self.read(name, "OnRegExpErrorAction", measures=False))
            return
        self.groups[name.lower()] = list(match.groups(default=""))
        self.measures[name.lower()] = (0.0, text)
        self.execute(self.read(name, "FinishAction", measures=False))

    @staticmethod
    def substitute(string: str, spec: str) -> str:
        """Measure::ReadOptions puts back the outer quotes the INI reader stripped, then pairs."""
        if spec and not (spec[0] == '"' and spec[-1] == "'") and not (spec[0] == "'" and spec[-1] == '"'):
            spec = f'"{spec}"'
        for old, new in re.findall(r'"([^"]*)":"([^"]*)"', spec):
            string = string.replace(old, new)
        return string

    # --- image meters ---------------------------------------------------------------------------
    def update_meter(self, meter: str) -> None:
        state = self.images.get(meter.lower())
        if state is None:
            return
        if state.dirty or self.is_dynamic(meter):
            state.dirty = False
            alpha = self.read(meter, "ImageAlpha", "255")
            formula = parse_formula(alpha, self.number)
            state.alpha = int(formula if formula is not None else float(alpha))
            self.load_image(meter)

    def load_image(self, meter: str) -> None:
        state = self.images[meter.lower()]
        name = self.read(meter, "ImageName")
        path = self.skin.to_path(name) if name else None
        if path is None:
            state.path, state.signature, state.pixels = None, None, None
            return
        try:
            self.opens += 1
            stat = path.stat()
            signature = (stat.st_size, stat.st_mtime_ns)
            if path == state.path and signature == state.signature and state.pixels is not None:
                return  # HasFileChanged() false: keep the bitmap
            data = path.read_bytes()
            with Image.open(io.BytesIO(data)) as image:
                pixels = np.asarray(image.convert("RGB"))
            self.decodes += 1
        except OSError as e:
            self.log.append(f"ImageName: Unable to open: {path} ({e})")
            state.path, state.signature, state.pixels = path, None, None
            return
        state.path, state.signature, state.pixels = path, signature, pixels

    def composite(self) -> np.ndarray | None:
        """What the window shows: visible image meters painted in order with their alpha."""
        out = None
        for name in self.skin.order:
            state = self.images.get(name.lower())
            if state is None or state.pixels is None or name.lower() in self.hidden:
                continue
            size = (int(self.evaluate_option(name, "W")), int(self.evaluate_option(name, "H")))
            pixels = state.pixels
            if pixels.shape[1::-1] != size:  # the meter scales its picture to W x H
                pixels = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.NEAREST))
            layer = pixels.astype(np.float64)
            out = layer * state.alpha / 255 if out is None else out + (layer - out) * state.alpha / 255
        return None if out is None else np.round(out).astype(np.uint8)

    # --- actions --------------------------------------------------------------------------------
    def click_context(self, title: str) -> None:
        """Run the custom context-menu item with this title (its action is read at click time)."""
        for n in range(1, 20):
            suffix = "" if n == 1 else str(n)
            if self.read("Rainmeter", f"ContextTitle{suffix}", measures=False) == title:
                self.execute(self.read("Rainmeter", f"ContextAction{suffix}", measures=False))
                return
        raise KeyError(f"no context menu item titled {title!r}")

    def execute(self, action: str) -> None:
        for command in split_bangs(action):
            if not command.startswith("!"):
                self.run_commands.append(command)
                continue
            bang, _, rest = command[1:].partition(" ")
            args = [self.replace_measures(a) for a in parse_args(rest)]
            getattr(self, "bang_" + bang.lower())(*args)

    def bang_setvariable(self, name: str, value: str) -> None:
        result = parse_formula(value, self.number)
        self.variables[name.lower()] = format_number(result) if result is not None else value

    def bang_setoption(self, section: str, key: str, value: str) -> None:
        self.overrides[(section.lower(), key.lower())] = value
        if section.lower() in self.images:
            self.images[section.lower()].dirty = True

    def bang_updatemeter(self, meter: str) -> None:
        for name in (self.skin.order if meter == "*" else [meter]):
            self.update_meter(name)

    def bang_redraw(self) -> None:
        self.redraws += 1

    def bang_showmeter(self, meter: str) -> None:
        self.hidden.discard(meter.lower())

    def bang_hidemeter(self, meter: str) -> None:
        self.hidden.add(meter.lower())

    def bang_commandmeasure(self, measure: str, command: str) -> None:
        verb, _, number = command.partition(" ")
        if verb.lower() == "stop":
            return  # lists run synchronously here, so there is never one to stop
        spec = self.read(measure, f"ActionList{int(number)}", measures=False)
        for token in (t.strip() for t in spec.split("|")):
            if token.lower().startswith("repeat "):
                action, wait, count = (p.strip() for p in token[7:].split(","))
                for i in range(int(count)):
                    self.timer_ms += float(wait) if i else 0.0
                    self.execute(self.read(measure, action, measures=False))
            elif token.lower().startswith("wait "):
                self.timer_ms += float(token[5:])
            else:
                self.execute(self.read(measure, token, measures=False))

    def bang_writekeyvalue(self, section: str, key: str, value: str, file: str) -> None:
        path = self.skin.to_path(file)
        if ".." in file or not path.is_relative_to(self.skin.skins_dir):
            raise PermissionError(f"!WriteKeyValue: Illegal path: {file}")
        result = parse_formula(value, self.number)
        write_key(path, section, key, format_number(result) if result is not None else value)
