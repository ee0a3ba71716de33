"""Commands from the Rainmeter skin: a small INI file the skin writes with !WriteKeyValue.

Protocol (the skin side lives in rainmeter/Reverie/Reverie.ini and @Resources/Control.ini):
every command NAME has two keys in the file's [Variables] section, ``<Name>Count`` (how many
times the skin has issued it, ever) and ``<Name>Seq`` (the value of the global ``ControlSeq``
counter when it was last issued). A click bumps the counters in memory and writes them with
!WriteKeyValue; the skin @Includes the same file, so the counters survive a skin refresh.

The daemon remembers the counts it has seen. A count that went up by k means "apply NAME k
times"; commands are applied in ``<Name>Seq`` order. Counting instead of keeping one "last
command" slot means no click is lost, however close together, and a count the daemon has
already seen is never applied again. The first successful read after the daemon starts is a
baseline (clicks made while no daemon ran are stale); a count that went down (the skin was
reinstalled) re-baselines that command.

Only what the skin can write counts: a Count is a plain non-negative whole number (``12``, or
``12.0`` as Rainmeter writes formula results) below 10**15. Anything else (a missing key, ``-5``,
``1e400``, ``inf``, text) is garbage: ignored with one log line, and the count last read well stays
the one a later good value is compared with, so garbage is never acted on and never turns into
clicks. A Seq only orders the commands of one read: a garbage Seq is logged and sorts first. A
count that jumps by more than MAX_STEP between two good reads is no burst of clicks either: it
is taken as a new baseline, not applied. A whole file that stays unreadable is logged once, then
ignored until it changes.

Rainmeter rewrites the whole file in place for every key (CreateFile(CREATE_ALWAYS, no
sharing) + WriteFile), so a reader can meet a locked, empty or cut-off file. Those reads are
ignored and retried on the next poll: a read counts only when the file carries the
``[ControlEnd]`` sentinel section (written last by the template) and has not changed for
``settle`` seconds, so the skin's burst of writes for one click is read as a whole (and a
later write cannot hide behind an equal (mtime, size) signature).
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: command name -> key stem in Control.ini (``<stem>Count`` / ``<stem>Seq``)
COMMANDS: dict[str, str] = {
    "pause": "Pause",
    "resume": "Resume",
    "toggle_pause": "TogglePause",
    "next_prompt": "NextPrompt",
    "new_keyframe": "NewKeyframe",
    "quit": "Quit",
}
SENTINEL_SECTION = "controlend"
MAX_STEP = 10  # more new clicks of one command than this between two reads is garbage, not clicks
# A count the skin writes: digits, maybe a trimmed ".0" tail; 15 digits stay exact in Rainmeter's doubles.
_COUNTER = re.compile(r"\+?([0-9]{1,15})(?:\.0*)?")
_MAX_BYTES = 64 * 1024
_UNREADABLE_AFTER = 1.0  # seconds a settled file may stay unreadable before it is logged (a write in progress)


def decode_ini_bytes(data: bytes) -> str | None:
    """Bytes of an INI file -> text, the way Rainmeter's profile reader decodes it; None if unreadable.

    UTF-16LE with BOM, or without BOM when NUL bytes show it; an odd byte count there is a
    cut-off write. Anything else is ANSI (cp1252 here; the keys we read are ASCII)."""
    if data[:2] == b"\xfe\xff":
        return None
    if data[:2] == b"\xff\xfe" or (len(data) >= 2 and b"\x00" in data):
        if len(data) % 2:
            return None
        return data.decode("utf-16-le", errors="replace").lstrip("\ufeff")
    return data.decode("cp1252", errors="replace")


def parse_ini(text: str) -> dict[str, dict[str, str]]:
    """INI text -> {section (lower-case): {key (lower-case): value}} with Rainmeter's rules.

    First section and first key win, ``;`` starts a comment line, only ``=`` separates,
    surrounding quotes are stripped, lines without ``=`` are skipped."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith("[") and "]" in line:
            name = line[1 : line.index("]")].strip().lower()
            current = None if name in sections else sections.setdefault(name, {})
            continue
        if current is None or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key, value = key.strip().lower(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        current.setdefault(key, value)
    return sections


def parse_counter(value: str | None) -> int | None:
    """'12' / '12.0' -> 12; None for anything the skin would not write (missing, negative,
    fractional, exponent, inf/nan, 10**15 or more, non-ASCII digits)."""
    match = _COUNTER.fullmatch(value) if value is not None else None
    return int(match.group(1)) if match else None


def _shown(value: str | None) -> str:
    """A value for the log: ASCII, one line, short, whatever the file held."""
    return "missing" if value is None else ascii(value[:40] + ("..." if len(value) > 40 else ""))


class ControlFile:
    """Watches the control INI and returns each command the skin issued, once, in order."""

    def __init__(self, path: Path, *, settle: float = 0.15) -> None:
        """path: the skin's @Resources/Control.ini; settle: seconds a change must rest (0..1)."""
        self.path = Path(path)
        self.settle = settle
        self._counts: dict[str, int] | None = None   # None until the baseline read
        self._consumed: tuple[int, int] | None = None  # (mtime_ns, size) of the last file applied
        self._seen: tuple[int, int] | None = None      # signature seen on the previous poll
        self._missing_logged = False
        self._bad: frozenset[str] = frozenset()        # commands whose values were garbage on the last read

    def baseline(self) -> None:
        """Take the counts as the file holds them now, even when it was written a moment ago.

        poll() reads only a file that has rested `settle` s; a daemon that starts right after
        the skin wrote would otherwise take its baseline from a later read, and the clicks made
        in between (while the VAE loads) would become that baseline instead of commands."""
        settle, self.settle = self.settle, 0.0
        try:
            self.poll()
        finally:
            self.settle = settle

    def poll(self) -> list[str]:
        """New commands since the last poll, oldest first, among COMMANDS; [] when nothing new.

        Costs one stat() when the file is unchanged; never raises for a missing, locked or
        half-written file (it is simply read again on a later poll). Call it every 0.1-0.5 s."""
        try:
            st = os.stat(self.path)
        except OSError:
            if not self._missing_logged:
                log.info("control file %s not found; skin controls are off until it appears", self.path)
                self._missing_logged = True
            return []
        self._missing_logged = False
        sig = (st.st_mtime_ns, st.st_size)
        if sig == self._consumed:
            return []
        # Read only a file that has rested `settle` s: the skin's few writes for one click are
        # over, and any later write gets a newer mtime even on a coarse (15 ms) clock. A clock
        # skewed into the future falls back to "unchanged since the previous poll".
        age = time.time() - st.st_mtime
        settled = age >= self.settle or (age < -1.0 and sig == self._seen)
        self._seen = sig
        if not settled:
            return []
        try:  # the skin's file is under 1 KiB: a huge one is not ours and is not read into memory
            data = self.path.read_bytes() if st.st_size <= _MAX_BYTES else b""
        except OSError:  # PermissionError while Rainmeter holds it exclusively, or gone again
            return []
        values = self._parse(data)
        if values is None:
            if age >= _UNREADABLE_AFTER:  # no write in progress: a damaged file, ignored until it changes
                log.warning("control file %s is not a complete Reverie control file; ignored until it is "
                            "rewritten (reinstall the skin if this stays)", self.path)
                self._consumed = sig
            return []
        self._consumed = sig
        return self._diff(values)

    @staticmethod
    def _parse(data: bytes) -> dict[str, str] | None:
        """The [Variables] keys of a complete file, or None for partial/garbled content."""
        text = decode_ini_bytes(data)
        if text is None:
            return None
        sections = parse_ini(text)
        if SENTINEL_SECTION not in sections:
            return None
        return sections.get("variables", {})

    def _diff(self, values: dict[str, str]) -> list[str]:
        """Counts now vs counts remembered -> commands to apply, ordered by their Seq keys."""
        readings: dict[str, tuple[int, int]] = {}
        garbage: dict[str, str] = {}
        for name, stem in COMMANDS.items():
            raw_count, raw_seq = values.get(stem.lower() + "count"), values.get(stem.lower() + "seq")
            count, seq = parse_counter(raw_count), parse_counter(raw_seq)
            if count is None:
                garbage[name] = f"{stem}Count={_shown(raw_count)}"
            elif seq is None and raw_seq is not None:
                garbage[name] = f"{stem}Seq={_shown(raw_seq)}"
            if count is not None:
                readings[name] = (count, seq or 0)
        newly_bad = [garbage[name] for name in garbage if name not in self._bad]
        if newly_bad:
            log.warning("control file %s: ignored values that are not click counts: %s", self.path,
                        ", ".join(newly_bad))
        self._bad = frozenset(garbage)
        first, previous = self._counts is None, dict(self._counts or {})
        # A garbage count keeps the last good one: the next good value is compared with that.
        self._counts = {**previous, **{name: count for name, (count, _) in readings.items()}}
        if first:
            log.debug("control file baseline: %s", self._counts)
            return []
        issued: list[tuple[int, int, str]] = []
        for order, (name, (count, seq)) in enumerate(readings.items()):
            if name not in previous:  # its first good value: a baseline
                continue
            delta = count - previous[name]
            if delta < 0:
                log.info("control file counter %sCount went back (skin reinstalled?); re-baselined", COMMANDS[name])
            elif delta > MAX_STEP:
                log.warning("control file counter %sCount jumped by %d at once; taken as a new baseline, "
                            "not as clicks", COMMANDS[name], delta)
            else:
                issued.extend((seq, order, name) for _ in range(delta))
        issued.sort()
        return [name for _, _, name in issued]


def rainmeter_skins_dir(env: dict[str, str] | None = None) -> Path | None:
    """The user's Rainmeter Skins folder: SkinPath in %APPDATA%/Rainmeter/Rainmeter.ini, else
    %USERPROFILE%/Documents/Rainmeter/Skins when it exists; None when neither is found."""
    env = dict(os.environ) if env is None else env
    appdata = env.get("APPDATA")
    if appdata:
        ini = Path(appdata) / "Rainmeter" / "Rainmeter.ini"
        try:
            text = decode_ini_bytes(ini.read_bytes()) or ""
        except OSError:
            text = ""
        skin_path = parse_ini(text).get("rainmeter", {}).get("skinpath", "")
        if skin_path:
            return Path(skin_path)
    profile = env.get("USERPROFILE") or env.get("HOME")
    if profile and (Path(profile) / "Documents" / "Rainmeter" / "Skins").is_dir():
        return Path(profile) / "Documents" / "Rainmeter" / "Skins"
    return None


def default_control_path(env: dict[str, str] | None = None) -> Path | None:
    """Where the installed skin keeps its control file: <Skins>/Reverie/@Resources/Control.ini.

    For config's ``control.file: auto``; None when no Rainmeter Skins folder is found."""
    skins = rainmeter_skins_dir(env)
    return None if skins is None else skins / "Reverie" / "@Resources" / "Control.ini"


def locate_control_file(configured: Path | str | None, env: dict[str, str] | None = None) -> Path | None:
    """The control file the daemon should watch, given config's ``control.file``.

    !WriteKeyValue can only write below Rainmeter's Skins or Settings folder, so the file the
    skin writes is <Skins>/Reverie/@Resources/Control.ini: ``"auto"`` finds it (None when no
    Skins folder is found). A path (a portable Rainmeter, a skin installed elsewhere) is used as
    given and watched until it appears. None means controls off."""
    if configured is None:
        return None
    if configured == "auto":
        return default_control_path(env)
    return Path(configured)
