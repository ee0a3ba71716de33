"""rainmeter/install.py on a temporary Skins folder and rainmeter/build_rmskin.py's package."""

from __future__ import annotations

import io
import re
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from backend.control import ControlFile, parse_ini
from backend.status import STATUS_KEYS
from rainmeter import install as installer
from rainmeter.build_rmskin import build
from tests.rainmeter.conftest import REPO, Daemon, Installed, SIZE
from tests.rainmeter.rm_ini import load_skin
from tests.rainmeter.rm_sim import SkinSim

SKIN = REPO / "rainmeter" / "Reverie"


def variables(skin_dir: Path) -> dict[str, str]:
    return load_skin(skin_dir / "Reverie.ini", skin_dir.parent).variables()


def test_install_copies_the_skin_and_writes_absolute_paths(installed: Installed) -> None:
    for path in SKIN.rglob("*"):
        if path.is_file() and path.name != "Variables.inc":
            assert (installed.skin_dir / path.relative_to(SKIN)).read_bytes() == path.read_bytes()
    found = variables(installed.skin_dir)
    assert found["outputdir"] == str(installed.output) + "/"
    assert found["configfile"] == str(REPO / "config.yaml")
    assert found["projectdir"] == str(REPO) + "/"
    assert found["pythonexe"] == "/usr/bin/python3"
    assert found["w"] == str(SIZE) and found["fadesteps"] == "8"  # the rest of Variables.inc is intact


def test_output_dir_defaults_to_the_configs_display_output_dir(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "config.yaml"
    config.parent.mkdir()
    config.write_text("display:\n  output_dir: frames_here\n")
    skin_dir = installer.install(tmp_path, config=config)
    assert variables(skin_dir)["outputdir"] == str(tmp_path / "conf" / "frames_here") + "/"


def control_values(skin_dir: Path) -> dict[str, str]:
    return parse_ini((skin_dir / "@Resources" / "Control.ini").read_text("ascii"))["variables"]


def test_reinstall_keeps_user_settings_and_control_counters(installed: Installed, tmp_path: Path) -> None:
    vars_file = installed.skin_dir / "@Resources" / "Variables.inc"
    installer.set_ini_values(vars_file, "Variables", {"FadeSteps": "4"})
    SkinSim(installed.load()).click_context("Next prompt")
    control_before = control_values(installed.skin_dir)
    new_output = tmp_path / "elsewhere"
    installer.install(installed.skins_dir, config=REPO / "config.yaml", output_dir=new_output)
    found = variables(installed.skin_dir)
    assert found["fadesteps"] == "4" and found["outputdir"] == str(new_output) + "/"
    assert control_values(installed.skin_dir) == control_before and control_before["nextpromptcount"] == "1"


def test_reinstall_over_an_older_skin_adds_the_new_keys_and_keeps_the_users_values(installed: Installed) -> None:
    """An older installed skin lacks keys the new one reads (StaleSeconds, QuitSeq here) and has one
    the new one dropped: the new templates are copied and the old values written into them."""
    res = installed.skin_dir / "@Resources"
    old_vars = [ln for ln in (res / "Variables.inc").read_text("ascii").splitlines() if not ln.startswith("StaleSeconds=")]
    (res / "Variables.inc").write_text("\n".join(old_vars + ["Dropped=1", "FadeStepMs=40"]) + "\n")
    installer.set_ini_values(res / "Variables.inc", "Variables", {"FadeSteps": "3"})
    old_control = [ln for ln in (res / "Control.ini").read_text("ascii").splitlines() if not ln.startswith("QuitSeq=")]
    (res / "Control.ini").write_text("\n".join(old_control) + "\n")
    installer.set_ini_values(res / "Control.ini", "Variables", {"ControlSeq": "7", "NextPromptCount": "5"})
    installer.install(installed.skins_dir, config=REPO / "config.yaml", output_dir=installed.output)
    found = variables(installed.skin_dir)
    assert found["stalesecondS".lower()] == "5" and "dropped" not in found
    assert found["fadesteps"] == "3" and found["fadestepms"] == "25"  # first FadeStepMs wins, as in Rainmeter
    control = control_values(installed.skin_dir)
    assert control["quitseq"] == "0" and control["controlseq"] == "7" and control["nextpromptcount"] == "5"
    assert (res / "Control.ini").read_text("ascii").rstrip().endswith("[ControlEnd]")
    assert installer.main(["--skins-dir", str(installed.skins_dir), "--no-refresh", "--output-dir",
                           str(installed.output)]) == 0  # and again: nothing changes
    assert control_values(installed.skin_dir) == control and variables(installed.skin_dir)["fadesteps"] == "3"


def test_a_non_ascii_path_makes_variables_inc_utf16le(installed: Installed, tmp_path: Path) -> None:
    output = tmp_path / "Rêverie output"
    installer.install(installed.skins_dir, config=REPO / "config.yaml", output_dir=output, paths_only=True)
    data = (installed.skin_dir / "@Resources" / "Variables.inc").read_bytes()
    assert data.startswith(b"\xff\xfe")
    assert variables(installed.skin_dir)["outputdir"] == str(output) + "/"


def test_install_creates_the_output_folder_with_a_stopped_status_txt(tmp_path: Path) -> None:
    """No status.txt would mean a WebParser "Fetch error" in the log 10 times a second."""
    output = tmp_path / "not" / "yet" / "there"
    skin_dir = installer.install(tmp_path / "Skins", config=REPO / "config.yaml", output_dir=output)
    text = (output / "status.txt").read_bytes().decode("utf-8")
    assert [line.split("=", 1)[0] for line in text.splitlines()] == list(STATUS_KEYS)
    match = re.search(load_skin(skin_dir / "Reverie.ini", tmp_path / "Skins").get("MeasureStatus", "RegExp"), text)
    assert match is not None and match.group(1) == "stopped" and match.group(6) == ""
    # the daemon's own file is never replaced, and --paths-only (after an .rmskin) creates it too
    (output / "status.txt").write_text("state=live\n")
    installer.install(tmp_path / "Skins", config=REPO / "config.yaml", output_dir=output, paths_only=True)
    assert (output / "status.txt").read_text() == "state=live\n"
    other = tmp_path / "other"
    installer.install(tmp_path / "Skins", config=REPO / "config.yaml", output_dir=other, paths_only=True)
    assert (other / "status.txt").is_file()


@pytest.mark.parametrize(("fps_yaml", "update_ms"), [
    ("  fps: 10\n", "50"), ("  fps: 30\n", "17"), ("  fps: 60\n", "16"), ("  fps: 0.1\n", "1000"),
    ("  fps: 0.75\n", "667"), ("  output_dir: out\n", "50"),  # missing: the daemon's default, 10 fps
    ("  fps: fast\n", "100"), ("  fps: [\n", "100")])       # unusable: Variables.inc's default
def test_update_interval_follows_display_fps(tmp_path: Path, fps_yaml: str, update_ms: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("display:\n" + fps_yaml)
    skin_dir = installer.install(tmp_path / "Skins", config=config, output_dir=tmp_path / "o")
    assert variables(skin_dir)["updatems"] == update_ms
    sim = SkinSim(load_skin(skin_dir / "Reverie.ini", tmp_path / "Skins"))
    assert sim.update_interval() == float(update_ms)  # [Rainmeter] Update=#UpdateMs#
    installer.install(tmp_path / "Skins", config=config, output_dir=tmp_path / "o", paths_only=True)
    assert variables(skin_dir)["updatems"] == update_ms


def test_paths_only_needs_an_installed_skin(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--paths-only"):
        installer.install(tmp_path, config=REPO / "config.yaml", paths_only=True)


def test_main_exits_2_with_a_clear_message_when_no_skins_folder_is_found(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(installer, "rainmeter_skins_dir", lambda: None)
    assert installer.main(["--no-refresh"]) == 2
    assert "--skins-dir" in capsys.readouterr().err


def test_main_installs_into_the_given_skins_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert installer.main(["--skins-dir", str(tmp_path), "--no-refresh", "--output-dir", str(tmp_path / "o")]) == 0
    assert (tmp_path / "Reverie" / "Reverie.ini").is_file()
    assert "Control.ini" in capsys.readouterr().out


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return build(tmp_path_factory.mktemp("dist") / "Reverie.rmskin").read_bytes()


def test_rmskin_ends_with_the_16_byte_footer_rainmeter_checks(package: bytes) -> None:
    size, flags, key = struct.unpack("<qB7s", package[-16:])
    assert (size, flags, key) == (len(package) - 16, 0, b"RMSKIN\x00")


def test_rmskin_zip_holds_rmskin_ini_at_its_root_and_the_whole_skin(package: bytes) -> None:
    archive = zipfile.ZipFile(io.BytesIO(package[:-16]))
    assert archive.testzip() is None
    names = archive.namelist()
    assert names[0] == "RMSKIN.ini"
    expected = {"Skins/Reverie/" + p.relative_to(SKIN).as_posix(): p.read_bytes() for p in SKIN.rglob("*") if p.is_file()}
    assert set(names[1:]) == set(expected)
    assert all(archive.read(name) == data for name, data in expected.items())
    options = parse_ini(archive.read("RMSKIN.ini").decode("ascii"))["rmskin"]
    assert options["name"] == "Reverie" and options["loadtype"] == "Skin"
    assert "Skins/" + options["load"].replace("\\", "/") in names
    for variable_file in options["variablefiles"].split("|"):
        assert "Skins/" + variable_file.replace("\\", "/") in names


def test_two_builds_are_byte_identical(package: bytes, tmp_path: Path) -> None:
    assert build(tmp_path / "again.rmskin").read_bytes() == package


def test_an_unpacked_package_configured_by_paths_only_shows_frames(package: bytes, tmp_path: Path) -> None:
    """What a user does: install the .rmskin (Rainmeter unzips Skins/), then --paths-only."""
    skins = tmp_path / "Skins"
    archive = zipfile.ZipFile(io.BytesIO(package[:-16]))
    for name in archive.namelist():
        if name.startswith("Skins/"):
            target = skins / name.removeprefix("Skins/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(name))
    output = tmp_path / "output"
    installer.install(skins, config=REPO / "config.yaml", output_dir=output, paths_only=True)
    installer.set_ini_values(skins / "Reverie" / "@Resources" / "Variables.inc", "Variables", {"W": "32", "H": "32"})
    from backend.frame_writer import FrameWriter
    from backend.status import StatusWriter
    daemon = Daemon(FrameWriter(output), StatusWriter(output), np.random.default_rng(1))
    sim = SkinSim(load_skin(skins / "Reverie" / "Reverie.ini", skins))
    frame = daemon.show(5)
    sim.update()
    assert np.array_equal(sim.composite(), frame)
    control = ControlFile(skins / "Reverie" / "@Resources" / "Control.ini", settle=0.0)
    control.poll()
    sim.click_context("New keyframe now")
    assert control.poll() == ["new_keyframe"]
