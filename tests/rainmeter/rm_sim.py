"""A small Rainmeter engine for tests: runs a skin's measures, actions and image meters.

What it follows (read from Rainmeter's source; none of it was run on Windows):
* #Var# in an option resolves when the option is read: measures and meters read theirs at load
  (ReadOptions) and, with DynamicVariables=1, again at every update; [Rainmeter]'s ContextAction
  is read at click time. [#Var] and [Measure] in a bang's arguments resolve when that bang runs
  (CommandHandler::ExecuteCommand/ParseString, bang by bang);
* measures update in file order; OnChangeAction fires when value or string differs from the
  last update, never on the first (Measure::DoChangeAction); IfMatch/IfCondition actions fire
  when the state differs from the last update, the first update included, and on every update
  with IfMatchMode/IfConditionMode=1 (IfActions.cpp);
* WebParser ``file://`` + RegExp (PCRE; Python's re agrees on the syntax used here),
  children by StringIndex, Substitute (RegExpSubstitute: pairs in order, each on the result of
  the one before). With ``async_fetch`` the read started in one update reaches the measures in the
  next, as WebParser's fetch thread does; a failed read logs "Fetch error" like WebParser;
  Calc formulas (MathParser), String and Time (TimeZone=0, DaylightSavingTime=0) measures;
* ActionTimer (Plugins/PluginActionTimer, Rainmeter 4.5): the lists and their named actions are
  read at load. Execute starts the list at the current skin time; its bangs run as their time
  comes (``update``, ``settle``), and Execute of a list still running is ignored. Two things the
  plugin turns into a hang or a stray command raise RainmeterHazard: Stop on a list that is
  running but not inside a Wait (its thread never signals a normal end, so Stop blocks the main
  thread for good), and a Wait of 0 or less (sent to Rainmeter as the command "Wait 0");
* Image meter (MeterImage.cpp / GeneralImage.cpp / BitmapLoader.cpp): a static meter (no
  MeasureName, DynamicVariables=0) loads at Initialize and again only after !SetOption (which
  makes it re-read its options on the next !UpdateMeter); a dynamic one on every update. Each
  load compares path, size and mtime with the loaded bitmap and re-decodes only on a change;
  every check opens the file (counted in ``opens``). A file that cannot be opened or decoded
  leaves the meter blank and logs, as Rainmeter does.
"""

from __future__ import annotations

import io
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tests.rainmeter.rm_bangs import format_number, parse_args, parse_formula, split_bangs, evaluate
from tests.rainmeter.rm_ini import Skin
from tests.rainmeter.rm_profile import write_key


EPOCH_1601 = 11644473600  # seconds from 1601-01-01 (Windows FILETIME) to 1970-01-01


class RainmeterHazard(AssertionError):
    """Something that hangs Rainmeter or runs a stray command on Windows."""


@dataclass
class Worker:
    """One run of an ActionTimer list: (skin time in ms, token) for each bang, and its waits."""

    start: float
    events: list[tuple[float, str]]
    waits: list[tuple[float, float]]
    end: float
    done: int = 0

    def running_at(self, now: float) -> bool:
        return self.done < len(self.events) or now <= self.end

    def in_wait(self, now: float) -> bool:
        return any(a < now < b for a, b in self.waits)


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
    async_fetch: bool = False
    now: Callable[[], float] = time.time  # the wall clock the Time measure reads
    clock_ms: float = 0.0                  # skin time: advanced by update() and settle()
    load_variables: dict[str, str] = field(default_factory=dict)
    lists: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    workers: dict[tuple[str, int], Worker] = field(default_factory=dict)
    pending: dict[str, tuple[Path, bytes | None]] = field(default_factory=dict)
    conditions: dict[tuple[str, str], bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.variables = {k: v for k, v in self.skin.variables().items()}
        self.load_variables = dict(self.variables)
        for name in self.skin.order:
            if (self.raw(name, "Plugin") or "").lower() == "actiontimer":
                self.load_action_lists(name)
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

    def resolve_vars(self, text: str, variables: dict[str, str] | None = None) -> str:
        return self.skin.resolve(text, extra=self.variables if variables is None else variables)

    def reads_current_variables(self, section: str) -> bool:
        """Options of [Rainmeter] are read when used; a section's own options at load, and at
        every update with DynamicVariables=1 (or after !SetOption on it)."""
        low = section.lower()
        return low == "rainmeter" or self.raw(section, "DynamicVariables") == "1" or \
            any(s == low for s, _ in self.overrides)

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
        variables = None if self.reads_current_variables(section) else self.load_variables
        value = default if value is None else self.resolve_vars(value, variables)
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
    def update_interval(self) -> float:
        text = self.read("Rainmeter", "Update", "1000")
        formula = parse_formula(text, self.number)
        return max(16.0, formula if formula is not None else float(text))

    def update(self) -> None:
        """One skin update, one Update interval after the last: the ActionTimer bangs that came
        due meanwhile, then every measure in order, then the dynamic meters."""
        self.pump(self.clock_ms + self.update_interval())
        for name in list(self.pending):
            path, data = self.pending.pop(name)
            self.deliver(name, path, data)
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
                path = self.skin.to_path(url[len("file://"):])
                try:
                    data = path.read_bytes()
                except OSError:
                    data = None
                if self.async_fetch:
                    self.pending[name] = (path, data)
                else:
                    self.deliver(name, path, data)
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
        elif kind == "string":
            string = self.read(name, "String", measures=True)
            string = self.substitute(string, self.raw(name, "Substitute") or "",
                                     regexp=self.raw(name, "RegExpSubstitute") == "1")
            self.measures[key] = (0.0, string)
        elif kind == "time":
            if self.read(name, "TimeZone") != "0" or self.read(name, "DaylightSavingTime") != "0":
                raise NotImplementedError(f"[{name}]: only TimeZone=0 + DaylightSavingTime=0 (UTC) is modelled")
            self.measures[key] = (float(math.floor(self.now()) + EPOCH_1601), None)
        elif kind == "plugin":
            self.measures.setdefault(key, (0.0, ""))
            return
        else:
            raise NotImplementedError(f"measure type {kind} in [{name}]")
        pattern = self.read(name, "IfMatch", measures=False)
        if pattern:  # IfActions: the action runs when the match state differs from the last update's
            matched = re.search(pattern, self.measures[key][1] or "") is not None
            if matched != self.matched.get(key) or self.read(name, "IfMatchMode") == "1":
                self.matched[key] = matched
                self.execute(self.read(name, "IfMatchAction" if matched else "IfNotMatchAction", measures=False))
        self.if_conditions(name)
        action = self.read(name, "OnChangeAction", measures=False)
        if action:
            if key in self.old and self.old[key] != self.measures[key]:
                self.execute(action)
            self.old[key] = self.measures[key]

    def if_conditions(self, name: str) -> None:
        """IfCondition, IfCondition2, ...: the action runs when the condition's state differs from
        the last update's, or on every update with IfConditionMode=1."""
        mode = self.read(name, "IfConditionMode") == "1"
        for n in range(1, 20):
            suffix = "" if n == 1 else str(n)
            condition = self.read(name, f"IfCondition{suffix}", measures=False)
            if not condition:
                break
            state = bool(evaluate(condition, self.number))
            if state != self.conditions.get((name.lower(), suffix)) or mode:
                self.conditions[(name.lower(), suffix)] = state
                self.execute(self.read(name, f"If{'True' if state else 'False'}Action{suffix}", measures=False))

    def deliver(self, name: str, path: Path, data: bytes | None) -> None:
        """The end of a WebParser read: parse, fill the children, run the finish/error action."""
        if data is None:
            self.log.append(f"[{name}] (Fetch error) file not found: {path}")
            self.execute(self.read(name, "OnConnectErrorAction", measures=False))
            return
        text = data.decode("utf-8", errors="replace")
        match = re.search(self.read(name, "RegExp", measures=False), text)
        if match is None:
            self.execute(self.read(name, "OnRegExpErrorAction", measures=False))
            return
        self.groups[name.lower()] = list(match.groups(default=""))
        self.measures[name.lower()] = (0.0, text)
        self.execute(self.read(name, "FinishAction", measures=False))

    @staticmethod
    def substitute(string: str, spec: str, regexp: bool = False) -> str:
        """Measure::ReadOptions puts back the outer quotes the INI reader stripped, then pairs,
        each applied to the result of the one before (CheckSubstitute)."""
        if spec and not (spec[0] == '"' and spec[-1] == "'") and not (spec[0] == "'" and spec[-1] == '"'):
            spec = f'"{spec}"'
        for old, new in re.findall(r'"([^"]*)":"([^"]*)"', spec):
            if regexp:
                string = re.sub(old or "^$", lambda m: re.sub(r"\\(\d)", lambda g: m.group(int(g.group(1))) or g.group(0), new),
                                string)
            else:
                string = string.replace(old, new)
        return string

    # --- String meters ------------------------------------------------------------------------
    def meter_text(self, meter: str) -> str:
        """A String meter's text: %N -> MeasureNameN's string, or its number with NumOfDecimals
        (-1, the default: '%.5f' without trailing zeros)."""
        decimals = int(self.read(meter, "NumOfDecimals", "-1"))
        text = self.read(meter, "Text", "%1")
        for n in range(9, 0, -1):
            measure = self.raw(meter, "MeasureName" if n == 1 else f"MeasureName{n}")
            if not measure:
                continue
            number, string = self.measures.get(measure.lower(), (0.0, ""))
            shown = string if string is not None else (format_number(number) if decimals < 0 else f"{number:.{decimals}f}")
            text = text.replace(f"%{n}", shown)
        return text

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

    # --- ActionTimer ----------------------------------------------------------------------------
    def load_action_lists(self, measure: str) -> None:
        """Reload(): ActionListN split at |, Repeat expanded into action, Wait, action, ...; named
        actions read with the load-time variables (#Var#), [#Var] and [Measure] left for run time."""
        n = 1
        while spec := self.read(measure, f"ActionList{n}", measures=False):
            tokens: list[str] = []
            for token in (t.strip() for t in spec.split("|") if t.strip()):
                if token.lower().startswith("repeat "):
                    action, wait, count = (p.strip() for p in token[7:].split(","))
                    body = self.read(measure, action, "[]", measures=False)
                    for i in range(int(count)):
                        tokens += ([f"Wait {wait}"] if i else []) + [body]
                elif token.lower().startswith("wait "):
                    tokens.append(token)
                else:
                    tokens.append(self.read(measure, token, "[]", measures=False))
            self.lists[(measure.lower(), n)] = tokens
            n += 1

    def pump(self, until: float) -> None:
        """Run the ActionTimer bangs due by `until`, in time order, then set the skin time there."""
        while True:
            due = [(w.events[w.done][0], key) for key, w in self.workers.items()
                   if w.done < len(w.events) and w.events[w.done][0] <= until]
            if not due:
                break
            at, key = min(due)
            worker = self.workers[key]
            self.clock_ms = max(self.clock_ms, at)
            worker.done += 1
            self.execute(worker.events[worker.done - 1][1])
        self.clock_ms = max(self.clock_ms, until)

    def settle(self) -> None:
        """Let every started ActionTimer list run to its end (the skin time moves on with it)."""
        ends = [w.end for w in self.workers.values()]
        self.pump(max(ends + [self.clock_ms]))

    def bang_commandmeasure(self, measure: str, command: str) -> None:
        verb, _, number = command.partition(" ")
        key = (measure.lower(), int(number))
        if key not in self.lists:
            raise KeyError(f"[{measure}] has no ActionList{number}")
        worker = self.workers.get(key)
        if verb.lower() == "stop":
            if worker is not None and worker.running_at(self.clock_ms) and not worker.in_wait(self.clock_ms):
                raise RainmeterHazard(f"Stop {number} on [{measure}] at {self.clock_ms} ms: ActionList{number} "
                                      "is running outside a Wait (started or finishing now); the 4.5 plugin's "
                                      "Stop waits for a signal such a list never sends: Rainmeter hangs")
            if worker is not None:
                worker.events, worker.end = worker.events[: worker.done], self.clock_ms
            return
        if verb.lower() != "execute":
            raise ValueError(f"ActionTimer: unknown command {command!r}")
        if worker is not None and worker.running_at(self.clock_ms):
            return  # "'ActionListN' is currently running" (IgnoreWarnings=1 silences it)
        at, events, waits = self.clock_ms, [], []
        for token in self.lists[key]:
            if token.lower().startswith("wait "):
                ms = float(self.replace_measures(token[5:]).strip() or 0)
                if ms <= 0:
                    raise RainmeterHazard(f"ActionList{number} of [{measure}]: '{token}' is sent to Rainmeter "
                                          "as a command (the plugin only waits for a time > 0)")
                waits.append((at, at + ms))
                at += ms
                self.timer_ms += ms
            else:
                events.append((at, token))
        self.workers[key] = Worker(self.clock_ms, events, waits, at)
        self.pump(self.clock_ms)  # the bangs before the first Wait

    def bang_writekeyvalue(self, section: str, key: str, value: str, file: str) -> None:
        path = self.skin.to_path(file)
        if ".." in file or not path.is_relative_to(self.skin.skins_dir):
            raise PermissionError(f"!WriteKeyValue: Illegal path: {file}")
        result = parse_formula(value, self.number)
        write_key(path, section, key, format_number(result) if result is not None else value)
