r"""The daemon's state as three small files in output_dir, each replaced atomically.

Every key of STATUS_KEYS is always present (build the dict with `new_status(**fields)`):

    state            starting | live | buffering | waiting_for_comfyui | paused | stopped | error
    frame            int, index of the frame on screen      frame_kind   keyframe | inbetween
    segment          int, segment s                         position     int j, 0..N_s (0 = keyframe slot)
    segment_frames   int, N_s + 1                           keyframes    int, keyframes made so far
    fps              float, achieved                        target_fps   float, configured
    stalls           int, display holds so far              stall_seconds  float, their total time
    keyframe_latency float s, last keyframe's ComfyUI time  prompt       str
    comfyui          see below                              last_error   str, "" if none
    uptime           float s                                frame_file   ring file relative to output_dir,
    updated          float, unix time                                    forward slashes: frames/frame_1.png
    version          str                                    pause_reason str, why paused ("" if not paused)

    comfyui is starting | connected | unavailable for a ComfyUI source, not_used for a folder source.

Optional keys, present only when given (OPTIONAL_KEYS, with their types):

    quality          dict, the dream's metrics: a JSON-like tree (str keys; numbers, str, bool, None,
                     lists, dicts; non-finite numbers become None); json/js only
    comfyui_server   str, the ComfyUI address in use        config_problem  str, why a config edit was ignored

Every string (values and keys) is made safe to write before any file is: lone surrogates (from
os.fsdecode of a non-UTF-8 file name) become \xNN / \uXXXX escapes and a string longer than
MAX_TEXT characters is cut with "...", so no text a user or a server supplies can stop a write.

Files (UTF-8 without BOM, "\n" line ends):

* status.json - `{"state": "live", ...}`: keys in STATUS_KEYS order (extra keys after them, sorted);
  non-finite floats become null.
* status.txt - one `key=value` line per key in the FIXED order of STATUS_KEYS (extra keys after
  them, sorted; dict values such as quality left out), ending with "\n". Every value is on one
  line: control characters (newlines, tabs, ...) and U+2028/U+2029 become spaces. Floats have 3
  decimals, None is empty. Rainmeter's WebParser reads file:// as UTF-8 by default. A skin reads
  one value with
  `RegExp=(?siU)frame_file=(.*)\n`, or all of them with RAINMETER_REGEXP (StringIndex = 1-based
  position in STATUS_KEYS: 1 state, 2 frame, ..., 17 frame_file, 18 updated, 19 version,
  20 pause_reason):
  `(?siU)^state=(.*)\nframe=(.*)\n ... pause_reason=(.*)\n`
* status.js - `window.REVERIE_STATUS = {...};` for the HTML page (a <script src> works on file://
  where fetch() of a JSON file does not). The object is status.json's, all ASCII, with <, > and &
  written as \u003c, \u003e, \u0026, so a prompt containing "</script>" cannot end the script, and
  U+2028/U+2029 escaped (JSON allows them raw, older JavaScript does not).
"""

from __future__ import annotations

import difflib
import json
import math
import numbers
import re
import time
from pathlib import Path
from typing import Any

from backend import __version__
from backend.frame_writer import AtomicWriteError, atomic_write_bytes
from backend.logging_setup import escape_surrogates

__all__ = ["COMFYUI_STATES", "FRAME_KINDS", "MAX_TEXT", "OPTIONAL_KEYS", "RAINMETER_REGEXP", "STATES", "STATUS_KEYS",
           "StatusWriter", "format_js", "format_json", "format_txt", "new_status", "safe_text", "validate_status"]

STATUS_KEYS: tuple[str, ...] = (
    "state", "frame", "frame_kind", "segment", "position", "segment_frames", "keyframes", "fps",
    "target_fps", "stalls", "stall_seconds", "keyframe_latency", "prompt", "comfyui", "last_error",
    "uptime", "frame_file", "updated", "version", "pause_reason")
OPTIONAL_KEYS: dict[str, type] = {"quality": dict, "comfyui_server": str, "config_problem": str}
STATES = ("starting", "live", "buffering", "waiting_for_comfyui", "paused", "resuming", "stopped", "error")
FRAME_KINDS = ("keyframe", "inbetween")
COMFYUI_STATES = ("starting", "connected", "unavailable", "not_used")
MAX_TEXT = 2000  # characters per string: a prompt fits, a runaway server message does not fill the skin
RAINMETER_REGEXP = "(?siU)^" + "".join(f"{key}=(.*)\\n" for key in STATUS_KEYS)

_DEFAULTS: dict[str, Any] = {
    "state": "starting", "frame": 0, "frame_kind": "keyframe", "segment": 0, "position": 0,
    "segment_frames": 1, "keyframes": 0, "fps": 0.0, "target_fps": 0.0, "stalls": 0, "stall_seconds": 0.0,
    "keyframe_latency": 0.0, "prompt": "", "comfyui": "not_used", "last_error": "", "uptime": 0.0,
    "frame_file": "", "updated": None, "version": __version__, "pause_reason": ""}
_ONE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
def safe_text(text: str, limit: int = MAX_TEXT) -> str:
    """Any str -> one that encodes as UTF-8: lone surrogates escaped, cut to `limit` characters."""
    if len(text) > limit:
        text = text[: max(0, limit - 3)] + "..."
    return escape_surrogates(text)


def new_status(**fields: Any) -> dict[str, Any]:
    """A status dict with every key present: defaults overridden by `fields` ("updated" defaults to
    now). Unknown field names raise TypeError naming the closest key."""
    unknown = [k for k in fields if k not in _DEFAULTS and k not in OPTIONAL_KEYS]
    if unknown:
        known = [*STATUS_KEYS, *OPTIONAL_KEYS]
        hints = [f"{k} (did you mean {difflib.get_close_matches(k, known, n=1) or '?'})" for k in unknown]
        raise TypeError(f"unknown status key: {', '.join(hints)}")
    status = {**_DEFAULTS, "updated": time.time()}
    status.update(fields)
    return status


def validate_status(status: dict[str, Any]) -> list[str]:
    """Problems with a status dict: missing keys, out-of-vocabulary states, optional keys of the
    wrong type (quality must be a JSON-like tree). [] if fine."""
    problems = [f"missing key: {k}" for k in STATUS_KEYS if k not in status]
    for key, allowed in (("state", STATES), ("frame_kind", FRAME_KINDS), ("comfyui", COMFYUI_STATES)):
        if key in status and status[key] not in allowed:
            problems.append(f"{key} must be one of {', '.join(allowed)}, got {status[key]!r}")
    if "pause_reason" in status and not isinstance(status["pause_reason"], str):
        problems.append(f"pause_reason must be a str, got {type(status['pause_reason']).__name__}")
    for key, kind in OPTIONAL_KEYS.items():
        if key in status and not isinstance(status[key], kind):
            problems.append(f"{key} must be a {kind.__name__}, got {type(status[key]).__name__}")
    quality = status.get("quality")
    if isinstance(quality, dict):
        problems += [f"quality{where} {problem}" for where, problem in _plain_tree_problems(quality)]
    return problems


def _plain_tree_problems(value: Any, where: str = "", depth: int = 0) -> list[tuple[str, str]]:
    """(path, problem) for anything in `value` that is not a JSON-like tree: str-keyed dicts, lists,
    numbers, str, bool, None, at most 8 levels deep."""
    if value is None or isinstance(value, (str, bool, numbers.Real)):
        return []
    if depth >= 8:
        return [(where, "is nested more than 8 levels deep")]
    if isinstance(value, dict):
        found = [(f"{where}[{key!r}]", "has a key that is not a str") for key in value if not isinstance(key, str)]
        for key, item in value.items():
            found += _plain_tree_problems(item, f"{where}[{key!r}]", depth + 1)
        return found
    if isinstance(value, (list, tuple)):
        return [p for i, item in enumerate(value) for p in _plain_tree_problems(item, f"{where}[{i}]", depth + 1)]
    return [(where, f"is a {type(value).__name__}, not a number, str, bool, None, list or dict")]


def _plain(value: Any, output_dir: Path | None) -> Any:
    """JSON-ready value: numpy scalars -> int/float, non-finite -> None, Path -> forward slashes
    (relative to output_dir when inside it)."""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Path):
        if output_dir is not None and value.absolute().is_relative_to(output_dir):
            value = value.absolute().relative_to(output_dir)
        return value.as_posix()
    if isinstance(value, (list, tuple)):
        return [_plain(v, output_dir) for v in value]
    if isinstance(value, dict):
        return {safe_text(str(k)): _plain(v, output_dir) for k, v in value.items()}
    return safe_text(str(value))


def _ordered(status: dict[str, Any], output_dir: Path | None = None) -> dict[str, Any]:
    extra = sorted((k for k in status if k not in STATUS_KEYS), key=str)
    return {safe_text(str(k)): _plain(status[k], output_dir)
            for k in (*[k for k in STATUS_KEYS if k in status], *extra)}


def format_json(status: dict[str, Any]) -> str:
    return json.dumps(_ordered(status), ensure_ascii=False, allow_nan=False, indent=1) + "\n"


def format_js(status: dict[str, Any]) -> str:
    body = json.dumps(_ordered(status), ensure_ascii=True, allow_nan=False)
    body = body.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f"window.REVERIE_STATUS = {body};\n"


def _txt_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:.3f}"
    if not isinstance(value, (int, str)):
        value = json.dumps(value, ensure_ascii=False)
    return _ONE_LINE.sub(" ", str(value))


def format_txt(status: dict[str, Any]) -> str:
    return "".join(f"{_ONE_LINE.sub(' ', k)}={_txt_value(v)}\n" for k, v in _ordered(status).items()
                   if not isinstance(v, dict))


class StatusWriter:
    """Writes status.json, status.txt and status.js into output_dir (formats in the module docstring)."""

    def __init__(self, output_dir: Path, *, retries: int = 20, delay: float = 0.01):
        self.output_dir = Path(output_dir)
        self.retries, self.delay = retries, delay

    def write(self, status: dict[str, Any]) -> None:
        """Validate and write all three files. ValueError if a key is missing or a state unknown;
        AtomicWriteError (after trying all three) if a file could not be replaced."""
        problems = validate_status(status)
        if problems:
            raise ValueError("bad status: " + "; ".join(problems))
        status = _ordered(status, self.output_dir.absolute())
        first_error: AtomicWriteError | None = None
        for name, text in (("status.txt", format_txt(status)), ("status.js", format_js(status)),
                           ("status.json", format_json(status))):
            try:
                atomic_write_bytes(self.output_dir / name, text.encode("utf-8"), retries=self.retries, delay=self.delay)
            except AtomicWriteError as e:
                first_error = first_error or e
        if first_error is not None:
            raise first_error
