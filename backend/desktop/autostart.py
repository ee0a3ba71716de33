"""Start Reverie at login: `main.py --install-autostart | --remove-autostart | --autostart-status`.

Windows: a per-user Task Scheduler task "Reverie" that runs pythonw on this checkout 30 s after
the user logs on. It is created from task XML, not `schtasks /SC ONLOGON`, because a task made
that way stops after 3 days (ExecutionTimeLimit PT72H), never starts on battery and needs
administrator rights for its "any user" logon trigger; the XML sets no time limit, allows
batteries (the pause rules decide that) and triggers on this user's logon only. Where Task
Scheduler refuses, a Reverie.cmd in the user's Startup folder does the same without the delay.
Linux: a systemd user unit, enabled for default.target. Other systems: a clear refusal.
Every step is idempotent and says what it did. The command lines and files are built by pure
functions (tested as strings); running them goes through a `runner` so tests never touch the OS.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from xml.sax.saxutils import escape

TASK_NAME = "Reverie"
UNIT_NAME = "reverie.service"
DELAY_S = 30

Runner = Callable[[list[str]], tuple[int, str]]


@dataclass(frozen=True)
class Launch:
    """What the login start runs: `python main --config config` in `workdir`."""
    python: str
    main: str
    config: str
    workdir: str


def pythonw_for(executable: str) -> str:
    """python.exe -> the pythonw.exe beside it (no console window), when there is one."""
    path = Path(executable)
    if path.name.lower() == "python.exe" and path.with_name("pythonw.exe").is_file():
        return str(path.with_name("pythonw.exe"))
    return executable


def launch_for(config_path: Path | str, *, executable: str | None = None, windows: bool | None = None) -> Launch:
    windows = sys.platform == "win32" if windows is None else windows
    executable = executable or sys.executable
    root = Path(__file__).resolve().parents[2]
    return Launch(pythonw_for(executable) if windows else executable, str(root / "backend" / "main.py"),
                  str(Path(config_path).expanduser().absolute()), str(root))


# -- Windows ----------------------------------------------------------------------------------------
def windows_arguments(launch: Launch) -> str:
    """The arguments after the program, quoted by the MSVC rules that pythonw parses them with."""
    return subprocess.list2cmdline([launch.main, "--config", launch.config])


def windows_command_line(launch: Launch) -> str:
    """The whole command line, each path in double quotes (what a /TR value would hold)."""
    return " ".join(f'"{p}"' for p in (launch.python, launch.main)) + f' --config "{launch.config}"'


def task_xml(launch: Launch, user: str, delay_s: int = DELAY_S) -> str:
    """Task Scheduler XML for a logon task of `user` (DOMAIN\\name) that runs `launch`."""
    e = escape
    return f"""<?xml version="1.0" encoding="UTF-16"?>
<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">
  <RegistrationInfo><Description>Reverie: a desktop window that dreams</Description></RegistrationInfo>
  <Triggers>
    <LogonTrigger><Enabled>true</Enabled><UserId>{e(user)}</UserId><Delay>PT{delay_s}S</Delay></LogonTrigger>
  </Triggers>
  <Principals>
    <Principal id="Author"><UserId>{e(user)}</UserId><LogonType>InteractiveToken</LogonType>
      <RunLevel>LeastPrivilege</RunLevel></Principal>
  </Principals>
  <Settings>
    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>
    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>
    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>
    <StartWhenAvailable>false</StartWhenAvailable>
    <Enabled>true</Enabled>
    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>
  </Settings>
  <Actions Context="Author">
    <Exec><Command>{e(launch.python)}</Command><Arguments>{e(windows_arguments(launch))}</Arguments>
      <WorkingDirectory>{e(launch.workdir)}</WorkingDirectory></Exec>
  </Actions>
</Task>
"""


def schtasks_create(xml_path: str) -> list[str]:
    return ["schtasks", "/Create", "/TN", TASK_NAME, "/XML", xml_path, "/F"]


def schtasks_query() -> list[str]:
    return ["schtasks", "/Query", "/TN", TASK_NAME]


def schtasks_delete() -> list[str]:
    return ["schtasks", "/Delete", "/TN", TASK_NAME, "/F"]


def startup_cmd(launch: Launch) -> str:
    """Reverie.cmd for the Startup folder. cmd.exe rules, not MSVC ones: every path in double
    quotes (so & ^ ( ) in a folder name stay literal) and % doubled (a batch file expands %x%).
    UTF-8 with chcp 65001 so a non-ASCII user name survives."""
    def q(text: str) -> str:
        return '"' + text.replace("%", "%%") + '"'
    return (f"@echo off\r\nchcp 65001 >nul\r\ncd /d {q(launch.workdir)}\r\n"
            f'start "" {q(launch.python)} {q(launch.main)} --config {q(launch.config)}\r\n')


def startup_folder(env: dict[str, str]) -> Path | None:
    appdata = env.get("APPDATA")
    return Path(appdata) / "Microsoft" / "Windows" / "Start Menu" / "Programs" / "Startup" if appdata else None


def _run(argv: list[str]) -> tuple[int, str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return done.returncode, (done.stdout + done.stderr).strip()


class WindowsAutostart:
    def __init__(self, launch: Launch, env: dict[str, str], runner: Runner = _run, say=print):
        self.launch, self.env, self.run, self.say = launch, env, runner, say
        folder = startup_folder(env)
        self.cmd_file = folder / "Reverie.cmd" if folder else None

    def install(self) -> int:
        user = f"{self.env.get('USERDOMAIN', '')}\\{self.env.get('USERNAME', '')}".lstrip("\\")
        with tempfile.TemporaryDirectory() as tmp:
            xml = Path(tmp) / "reverie-task.xml"
            xml.write_text(task_xml(self.launch, user), encoding="utf-16")
            code, output = self.run(schtasks_create(str(xml)))
        if code == 0:
            self.say(f"autostart on: Task Scheduler task '{TASK_NAME}' runs {windows_command_line(self.launch)} "
                     f"{DELAY_S} s after {user} logs on")
            if self.cmd_file is not None and self.cmd_file.exists():
                self.cmd_file.unlink()
                self.say(f"removed the older start file {self.cmd_file}")
            return 0
        if self.cmd_file is None:
            self.say(f"autostart not installed: Task Scheduler refused ({output}) and APPDATA is not set")
            return 2
        self.cmd_file.parent.mkdir(parents=True, exist_ok=True)
        self.cmd_file.write_text(startup_cmd(self.launch), encoding="utf-8", newline="")
        self.say(f"Task Scheduler refused the task ({output or f'exit {code}'}); autostart on instead through "
                 f"{self.cmd_file}, which runs {windows_command_line(self.launch)} when you log on")
        return 0

    def remove(self) -> int:
        removed = []
        if self.run(schtasks_query())[0] == 0:
            code, output = self.run(schtasks_delete())
            if code != 0:
                self.say(f"could not delete the Task Scheduler task '{TASK_NAME}': {output}")
                return 2
            removed.append(f"Task Scheduler task '{TASK_NAME}'")
        if self.cmd_file is not None and self.cmd_file.exists():
            self.cmd_file.unlink()
            removed.append(str(self.cmd_file))
        self.say(f"autostart off: removed {' and '.join(removed)}" if removed
                 else "autostart was not installed; nothing to remove")
        return 0

    def status(self) -> int:
        places = ([f"Task Scheduler task '{TASK_NAME}'"] if self.run(schtasks_query())[0] == 0 else []) + \
                 ([str(self.cmd_file)] if self.cmd_file is not None and self.cmd_file.exists() else [])
        self.say(f"autostart is on ({', '.join(places)})" if places else "autostart is off")
        return 0


# -- Linux (systemd user unit) -------------------------------------------------------------------------
def systemd_quote(text: str) -> str:
    """One ExecStart word: double quotes with C escapes; % and $ doubled (specifiers, variables)."""
    if "\n" in text:
        raise ValueError(f"a path with a line break cannot go into a systemd unit: {text!r}")
    body = text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{body}"'


def systemd_unit(launch: Launch) -> str:
    command = " ".join(systemd_quote(w) for w in (launch.python, launch.main, "--config", launch.config))
    return f"""[Unit]
Description=Reverie, a desktop window that dreams
After=graphical-session.target

[Service]
Type=simple
WorkingDirectory={launch.workdir.replace("%", "%%")}
ExecStart={command}
Restart=on-failure
RestartSec=30
# exit 2 is a setting the user must fix: restarting would only repeat the message
RestartPreventExitStatus=2

[Install]
WantedBy=default.target
"""


class SystemdAutostart:
    def __init__(self, launch: Launch, env: dict[str, str], runner: Runner | None = None, say=print):
        home = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", str(Path.home()))) / ".config")
        self.units = Path(home) / "systemd" / "user"
        self.unit = self.units / UNIT_NAME
        self.wants = self.units / "default.target.wants" / UNIT_NAME
        self.launch, self.run, self.say = launch, runner, say

    def install(self) -> int:
        self.units.mkdir(parents=True, exist_ok=True)
        self.unit.write_text(systemd_unit(self.launch), encoding="utf-8")
        self._enable(True)
        self.say(f"autostart on: systemd user unit {self.unit} runs {self.launch.main} at login")
        return 0

    def remove(self) -> int:
        if not self.unit.exists() and not self.wants.is_symlink():
            self.say("autostart was not installed; nothing to remove")
            return 0
        self._enable(False)
        self.unit.unlink(missing_ok=True)
        self.say(f"autostart off: removed {self.unit}")
        return 0

    def status(self) -> int:
        on = self.unit.exists() and self.wants.is_symlink()
        self.say(f"autostart is on ({self.unit})" if on else "autostart is off")
        return 0

    def _enable(self, on: bool) -> None:
        # `systemctl --user enable` makes exactly this link; doing it ourselves works without a
        # running user manager (a container, CI), and systemctl is then told to re-read the units.
        if on and not self.wants.is_symlink():
            self.wants.parent.mkdir(parents=True, exist_ok=True)
            self.wants.symlink_to(self.unit)
        elif not on:
            self.wants.unlink(missing_ok=True)
        if self.run is not None:
            code, output = self.run(["systemctl", "--user", "daemon-reload"])
            if code != 0:
                self.say(f"note: systemctl --user daemon-reload said: {output} (the unit applies at next login)")


def main_autostart(action: str, config_path: Path | str, *, platform: str | None = None,
                   env: dict[str, str] | None = None, runner: Runner | None = None, say=print) -> int:
    """action "install" | "remove" | "status" -> exit code (0 done, 2 not possible here)."""
    platform = platform or sys.platform
    env = dict(os.environ) if env is None else env
    if platform == "win32":
        target = WindowsAutostart(launch_for(config_path, windows=True), env, runner or _run, say)
    elif platform.startswith("linux"):
        systemctl = runner or (_run if shutil.which("systemctl") else None)
        target = SystemdAutostart(launch_for(config_path, windows=False), env, systemctl, say)
    else:
        say(f"autostart is not supported on {platform}; add `{sys.executable} backend/main.py` to your "
            f"login items by hand")
        return 2
    if action == "install" and not Path(config_path).is_file():
        say(f"autostart not installed: config file {config_path} not found (pass --config PATH)")
        return 2
    return {"install": target.install, "remove": target.remove, "status": target.status}[action]()
