"""Autostart: the Windows task XML, command lines and Startup file as strings (paths with spaces,
&, %), the Windows install/remove flow against a recording runner, and a real install -> status ->
remove round trip of the systemd user unit in a temporary config home."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from backend.desktop.autostart import (UNIT_NAME, Launch, SystemdAutostart, WindowsAutostart, launch_for,
                                       main_autostart, pythonw_for, schtasks_create, startup_cmd, systemd_quote,
                                       systemd_unit, task_xml, windows_arguments, windows_command_line)

NS = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}
WIN = Launch(python=r"C:\Program Files\Python311\pythonw.exe", main=r"C:\Users\Jo Doe\R&D\Reverie\backend\main.py",
             config=r"C:\Users\Jo Doe\R&D\Reverie\config 100%.yaml", workdir=r"C:\Users\Jo Doe\R&D\Reverie")


def test_the_task_runs_pythonw_on_main_with_its_config_each_path_quoted():
    assert windows_arguments(WIN) == r'"C:\Users\Jo Doe\R&D\Reverie\backend\main.py" --config "C:\Users\Jo Doe\R&D\Reverie\config 100%.yaml"'
    assert windows_command_line(WIN) == (r'"C:\Program Files\Python311\pythonw.exe" '
                                         r'"C:\Users\Jo Doe\R&D\Reverie\backend\main.py" '
                                         r'--config "C:\Users\Jo Doe\R&D\Reverie\config 100%.yaml"')


def test_the_task_xml_is_a_logon_task_of_this_user_with_a_delay_and_no_time_limit():
    task = ET.fromstring(task_xml(WIN, r"DESKTOP-1\Jo Doe").encode("utf-16"))
    assert task.findtext("t:Triggers/t:LogonTrigger/t:UserId", namespaces=NS) == r"DESKTOP-1\Jo Doe"
    assert task.findtext("t:Triggers/t:LogonTrigger/t:Delay", namespaces=NS) == "PT30S"
    assert task.findtext("t:Settings/t:ExecutionTimeLimit", namespaces=NS) == "PT0S"  # not the 3-day default
    assert task.findtext("t:Settings/t:DisallowStartIfOnBatteries", namespaces=NS) == "false"
    assert task.findtext("t:Principals/t:Principal/t:RunLevel", namespaces=NS) == "LeastPrivilege"
    assert task.findtext("t:Actions/t:Exec/t:Command", namespaces=NS) == WIN.python
    assert task.findtext("t:Actions/t:Exec/t:Arguments", namespaces=NS) == windows_arguments(WIN)  # & escaped
    assert task.findtext("t:Actions/t:Exec/t:WorkingDirectory", namespaces=NS) == WIN.workdir


def test_the_schtasks_command_line_quotes_an_xml_path_with_spaces():
    argv = schtasks_create(r"C:\Users\Jo Doe\AppData\Local\Temp\tmp1\reverie-task.xml")
    assert subprocess.list2cmdline(argv) == \
        r'schtasks /Create /TN Reverie /XML "C:\Users\Jo Doe\AppData\Local\Temp\tmp1\reverie-task.xml" /F'


def test_the_startup_file_quotes_every_path_for_cmd_and_doubles_percent_signs():
    assert startup_cmd(WIN) == (
        "@echo off\r\nchcp 65001 >nul\r\n"
        'cd /d "C:\\Users\\Jo Doe\\R&D\\Reverie"\r\n'
        'start "" "C:\\Program Files\\Python311\\pythonw.exe" "C:\\Users\\Jo Doe\\R&D\\Reverie\\backend\\main.py" '
        '--config "C:\\Users\\Jo Doe\\R&D\\Reverie\\config 100%%.yaml"\r\n')


def test_pythonw_is_used_when_it_sits_beside_python(tmp_path):
    (tmp_path / "python.exe").write_bytes(b"")
    assert pythonw_for(str(tmp_path / "python.exe")) == str(tmp_path / "python.exe")
    (tmp_path / "pythonw.exe").write_bytes(b"")
    assert pythonw_for(str(tmp_path / "python.exe")) == str(tmp_path / "pythonw.exe")


class Schtasks:
    """A recording stand-in for schtasks.exe: create succeeds or is refused, query/delete follow."""

    def __init__(self, refuse: bool = False):
        self.refuse, self.task, self.calls, self.xml = refuse, False, [], None

    def __call__(self, argv: list[str]) -> tuple[int, str]:
        self.calls.append(argv)
        verb = argv[1]
        if verb == "/Create":
            if self.refuse:
                return 1, "ERROR: Access is denied."
            self.xml = Path(argv[argv.index("/XML") + 1]).read_bytes()
            self.task = True
            return 0, "SUCCESS"
        if verb == "/Query":
            return (0, "Reverie  Ready") if self.task else (1, "ERROR: The system cannot find the file specified.")
        if verb == "/Delete":
            self.task = False
            return 0, "SUCCESS"
        raise AssertionError(argv)


def windows(tmp_path, runner) -> tuple[WindowsAutostart, list[str]]:
    said: list[str] = []
    env = {"APPDATA": str(tmp_path / "AppData" / "Roaming"), "USERDOMAIN": "DESKTOP-1", "USERNAME": "Jo Doe"}
    return WindowsAutostart(WIN, env, runner, said.append), said


def test_windows_install_creates_the_task_from_utf16_xml_and_remove_deletes_it(tmp_path):
    schtasks = Schtasks()
    auto, said = windows(tmp_path, schtasks)
    assert auto.install() == 0
    assert schtasks.xml.startswith(b"\xff\xfe")  # UTF-16 with a BOM, as schtasks /XML reads it
    assert r"DESKTOP-1\Jo Doe" in schtasks.xml.decode("utf-16")
    assert said[-1].startswith("autostart on: Task Scheduler task 'Reverie' runs \"C:\\Program Files")
    assert auto.install() == 0 and schtasks.task  # again: /F replaces it, still one task
    auto.status()
    assert said[-1] == "autostart is on (Task Scheduler task 'Reverie')"
    assert auto.remove() == 0 and not schtasks.task
    assert auto.remove() == 0
    assert said[-1] == "autostart was not installed; nothing to remove"


def test_windows_falls_back_to_the_startup_folder_when_task_scheduler_refuses(tmp_path):
    auto, said = windows(tmp_path, Schtasks(refuse=True))
    assert auto.install() == 0
    assert auto.cmd_file.read_bytes() == startup_cmd(WIN).encode("utf-8")
    assert "Access is denied" in said[-1] and str(auto.cmd_file) in said[-1]
    auto.status()
    assert said[-1] == f"autostart is on ({auto.cmd_file})"
    assert auto.remove() == 0 and not auto.cmd_file.exists()
    assert said[-1] == f"autostart off: removed {auto.cmd_file}"


def test_a_systemd_word_keeps_spaces_quotes_backslashes_percent_and_dollar_literal():
    assert systemd_quote('/home/jo doe/$HOME%h"x\\') == '"/home/jo doe/$$HOME%%h\\"x\\\\"'
    with pytest.raises(ValueError, match="line break"):
        systemd_quote("a\nb")


def test_the_systemd_unit_runs_main_with_its_config_and_does_not_restart_on_a_config_error():
    unit = systemd_unit(Launch("/usr/bin/python3", "/opt/my reverie/backend/main.py", "/opt/my reverie/config.yaml",
                               "/opt/my reverie"))
    assert 'ExecStart="/usr/bin/python3" "/opt/my reverie/backend/main.py" "--config" "/opt/my reverie/config.yaml"' in unit
    assert "RestartPreventExitStatus=2" in unit and "WantedBy=default.target" in unit
    assert "WorkingDirectory=/opt/my reverie\n" in unit


def test_systemd_install_status_remove_round_trips_in_the_user_config_home(tmp_path):
    calls, said = [], []
    config = tmp_path / "my config.yaml"
    config.write_text("{}")
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "home")}

    def runner(argv):
        calls.append(argv)
        return 0, ""

    def run(action: str) -> int:
        return main_autostart(action, config, platform="linux", env=env, runner=runner, say=said.append)

    assert run("status") == 0 and said[-1] == "autostart is off"
    assert run("install") == 0 and run("install") == 0
    unit = tmp_path / "xdg" / "systemd" / "user" / UNIT_NAME
    link = unit.parent / "default.target.wants" / UNIT_NAME
    assert link.is_symlink() and link.resolve() == unit.resolve()
    assert systemd_quote(str(config)) in unit.read_text()
    assert run("status") == 0 and said[-1] == f"autostart is on ({unit})"
    assert calls and all(c == ["systemctl", "--user", "daemon-reload"] for c in calls)
    assert run("remove") == 0 and not unit.exists() and not link.is_symlink()
    assert run("remove") == 0 and said[-1] == "autostart was not installed; nothing to remove"
    assert run("status") == 0 and said[-1] == "autostart is off"


def test_systemd_autostart_works_where_systemctl_is_missing(tmp_path):
    said: list[str] = []
    auto = SystemdAutostart(launch_for(tmp_path / "c.yaml", windows=False), {"HOME": str(tmp_path)}, None,
                            said.append)
    assert auto.install() == 0 and (tmp_path / ".config" / "systemd" / "user" / UNIT_NAME).is_file()
    assert auto.remove() == 0


def test_autostart_is_refused_in_one_sentence_where_it_is_not_supported(tmp_path):
    said: list[str] = []
    assert main_autostart("install", tmp_path / "c.yaml", platform="darwin", env={}, say=said.append) == 2
    assert len(said) == 1 and said[0].startswith("autostart is not supported on darwin")


def test_installing_with_a_config_file_that_does_not_exist_is_refused(tmp_path):
    said: list[str] = []
    assert main_autostart("install", tmp_path / "nope.yaml", platform="linux", env={"HOME": str(tmp_path)},
                          runner=lambda argv: (0, ""), say=said.append) == 2
    assert "not found" in said[0] and not (tmp_path / ".config").exists()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_itself_accepts_the_unit_for_a_config_in_an_awkward_folder(tmp_path):
    folder = tmp_path / 'my "dream 100%'  # one lone quote: the line is unbalanced unless it is escaped
    folder.mkdir()
    unit = tmp_path / UNIT_NAME
    unit.write_text(systemd_unit(Launch(sys.executable, str(tmp_path / "main.py"), str(folder / "config.yaml"),
                                        str(tmp_path))))
    (tmp_path / "run").mkdir()
    done = subprocess.run(["systemd-analyze", "--user", "verify", str(unit)], capture_output=True, text=True,
                          env={**os.environ, "XDG_RUNTIME_DIR": str(tmp_path / "run")}, timeout=60)
    assert done.returncode == 0, done.stderr
