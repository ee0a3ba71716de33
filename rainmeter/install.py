r"""Install the Reverie skin into Rainmeter and point it at this project.

    python rainmeter/install.py                  # copy the skin, write this machine's paths
    python rainmeter/install.py --paths-only     # after installing dist/Reverie.rmskin: paths only
    python rainmeter/install.py --skins-dir D    # Rainmeter's Skins folder, when not found

The skin cannot know where the project lives, so the installed @Resources\Variables.inc is the one
place that says it: OutputDir (display.output_dir from config.yaml), ConfigFile, ProjectDir and
PythonExe are rewritten there (and UpdateMs, from display.fps); every other value in it is kept on
a re-install. The daemon finds the skin's Control.ini by itself (backend.control.locate_control_file),
so config.yaml is never edited. A re-install copies the new Variables.inc and Control.ini, then puts
the installed values back into them (Control.ini's counters must not go back): keys a newer skin
adds arrive with their defaults, keys it dropped go. The output
folder is created, with a status.txt saying "stopped" when there is none (no WebParser errors).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.control import decode_ini_bytes, parse_ini, rainmeter_skins_dir  # noqa: E402

PROJECT = Path(__file__).resolve().parent.parent
SKIN_SOURCE = Path(__file__).resolve().parent / "Reverie"
MERGE_ON_REINSTALL = ("@Resources/Variables.inc", "@Resources/Control.ini")


def set_ini_values(path: Path, section: str, values: dict[str, str]) -> None:
    """Rewrite `key=value` lines of one section in place (first match, case-insensitive), append
    missing keys at the section's end; comments and other keys stay. Written as ASCII when it can
    be, else UTF-16LE with BOM (Rainmeter reads no UTF-8)."""
    text = decode_ini_bytes(path.read_bytes()) or ""
    lines = text.splitlines()
    pending = dict(values)
    in_section, insert_at = False, None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("[") and "]" in stripped:
            if in_section:
                break
            in_section = stripped[1 : stripped.index("]")].strip().lower() == section.lower()
            insert_at = i + 1 if in_section else insert_at
            continue
        if in_section and "=" in stripped and not stripped.startswith(";"):
            key = stripped.split("=", 1)[0].strip()
            match = next((k for k in pending if k.lower() == key.lower()), None)
            if match is not None:
                lines[i] = f"{key}={pending.pop(match)}"
            if stripped:
                insert_at = i + 1
    if insert_at is None:
        lines += ["", f"[{section}]"]
        insert_at = len(lines)
    lines[insert_at:insert_at] = [f"{k}={v}" for k, v in pending.items()]
    out = "\r\n".join(lines) + "\r\n"
    try:
        path.write_bytes(out.encode("ascii"))
    except UnicodeEncodeError:
        path.write_bytes(b"\xff\xfe" + out.encode("utf-16-le"))


def restore_values(path: Path, old: bytes) -> None:
    """Write the [Variables] values of an installed file (`old`, its bytes) into the new template at
    `path`, for the keys the template has. An unreadable old file leaves the template as it is."""
    old_text = decode_ini_bytes(old)
    new_text = decode_ini_bytes(path.read_bytes())
    if old_text is None or new_text is None:
        return
    new_keys = parse_ini(new_text).get("variables", {})
    kept = {k: v for k, v in parse_ini(old_text).get("variables", {}).items() if k in new_keys}
    if kept:
        set_ini_values(path, "Variables", kept)


def with_sep(path: Path) -> str:
    """Folder path with a trailing separator, as the skin joins it with file names."""
    text = str(path)
    return text if text.endswith(os.sep) else text + os.sep


def output_dir_from_config(config: Path) -> Path:
    """display.output_dir of config.yaml (absolute); <config folder>/output if it cannot be read."""
    try:
        from backend.config import load_config  # config errors are reported by the daemon itself
        return Path(load_config(config).display.output_dir).resolve()
    except Exception as e:  # noqa: BLE001 - any failure falls back to the documented default
        print(f"note: could not read {config} ({e}); using {config.parent / 'output'}")
        return (config.parent / "output").resolve()


def ensure_status_file(output_dir: Path) -> Path:
    """Create output_dir and a status.txt saying "stopped" (the daemon's own format, every key)
    unless one exists: the skin reads status.txt 10 times a second, and WebParser logs a
    "Fetch error" for every read of a missing file."""
    from backend.status import format_txt, new_status  # imports numpy/PIL: only when installing
    status = output_dir / "status.txt"
    output_dir.mkdir(parents=True, exist_ok=True)
    if not status.exists():
        status.write_bytes(format_txt(new_status(state="stopped")).encode("utf-8"))
    return status


DEFAULT_UPDATE_MS = 100  # Variables.inc's own value, kept when config.yaml cannot be read


def update_ms_for_fps(fps: float) -> int:
    """The skin's Update interval for a frame rate: half the frame period, so every frame's
    status.txt is read at least once between two frames, within Rainmeter's 16 ms floor and a
    1 s ceiling (at 0.1 fps the status line still changes every second)."""
    return int(min(1000, max(16, round(500.0 / fps))))


def update_ms_from_config(config: Path) -> int:
    """UpdateMs for display.fps of config.yaml (the daemon's default fps when the key is missing);
    DEFAULT_UPDATE_MS when the file cannot be read or fps is not a positive number."""
    import yaml  # a dependency of the daemon

    from backend.config import DisplayConfig
    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        fps = (data.get("display") or {}).get("fps", DisplayConfig.fps)
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0:
            raise ValueError(f"display.fps is {fps!r}")
    except (OSError, ValueError, AttributeError, yaml.YAMLError) as e:
        print(f"note: no usable display.fps in {config} ({e}); the skin updates every {DEFAULT_UPDATE_MS} ms")
        return DEFAULT_UPDATE_MS
    return update_ms_for_fps(float(fps))


def python_for_skin(python: Path) -> Path:
    """pythonw.exe beside python.exe when there is one (starts the daemon without a console)."""
    windowed = python.with_name("pythonw.exe")
    return windowed if python.name.lower() == "python.exe" and windowed.is_file() else python


def install(skins_dir: Path, *, config: Path, output_dir: Path | None = None, python: Path | None = None,
            paths_only: bool = False) -> Path:
    """Copy the skin to <skins_dir>/Reverie (unless paths_only) and write the paths; returns it."""
    target = skins_dir / "Reverie"
    if paths_only:
        if not (target / "@Resources" / "Variables.inc").is_file():
            raise FileNotFoundError(f"no installed skin at {target}: install dist/Reverie.rmskin first, "
                                    "or run without --paths-only")
    else:
        installed = {rel: (target / rel).read_bytes() for rel in MERGE_ON_REINSTALL if (target / rel).is_file()}
        shutil.copytree(SKIN_SOURCE, target, dirs_exist_ok=True)
        for rel, data in installed.items():
            restore_values(target / rel, data)  # the user's settings and counters survive
    config = config.resolve()
    output_dir = output_dir.resolve() if output_dir else output_dir_from_config(config)
    ensure_status_file(output_dir)
    values = {
        "OutputDir": with_sep(output_dir),
        "ConfigFile": str(config),
        "ProjectDir": with_sep(PROJECT),
        "PythonExe": str(python_for_skin(python or Path(sys.executable))),
        "UpdateMs": str(update_ms_from_config(config)),
    }
    set_ini_values(target / "@Resources" / "Variables.inc", "Variables", values)
    return target


def refresh_rainmeter() -> None:
    """Ask a running Rainmeter (Windows) to rescan skins and load Reverie; silent if absent."""
    exe = Path(os.environ.get("ProgramFiles", r"C:\Program Files")) / "Rainmeter" / "Rainmeter.exe"
    if os.name == "nt" and exe.is_file():
        subprocess.run([str(exe), "!RefreshApp"], check=False)
        subprocess.run([str(exe), "!ActivateConfig", "Reverie", "Reverie.ini"], check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skins-dir", type=Path, help="Rainmeter's Skins folder (default: found from "
                        "%%APPDATA%%\\Rainmeter\\Rainmeter.ini or Documents\\Rainmeter\\Skins)")
    parser.add_argument("--config", type=Path, default=PROJECT / "config.yaml", help="config.yaml to use")
    parser.add_argument("--output-dir", type=Path, help="daemon output folder (default: from the config)")
    parser.add_argument("--python", type=Path, help="python for 'Start Reverie' (default: this one)")
    parser.add_argument("--paths-only", action="store_true", help="only rewrite the installed skin's paths")
    parser.add_argument("--no-refresh", action="store_true", help="do not ask Rainmeter to load the skin")
    args = parser.parse_args(argv)
    skins_dir = args.skins_dir or rainmeter_skins_dir()
    if skins_dir is None:
        print("Rainmeter's Skins folder was not found; is Rainmeter installed? Pass --skins-dir.", file=sys.stderr)
        return 2
    try:
        target = install(skins_dir, config=args.config, output_dir=args.output_dir, python=args.python,
                         paths_only=args.paths_only)
    except OSError as e:
        print(f"install failed: {e}", file=sys.stderr)
        return 2
    print(f"Reverie skin at {target}")
    print(f"  settings: {target / '@Resources' / 'Variables.inc'}")
    control = target / "@Resources" / "Control.ini"
    if rainmeter_skins_dir() == skins_dir:
        print(f"  controls: {control} (the daemon finds it by itself)")
    else:  # not where the daemon looks by default: say the one line that connects them
        print(f"  controls: {control}\n  add to config.yaml so the daemon finds it:  control: {{file: '{control}'}}")
    if not args.no_refresh:
        refresh_rainmeter()
    print("In Rainmeter: Manage > Refresh all, then load Reverie > Reverie.ini (if it is not loaded yet).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
