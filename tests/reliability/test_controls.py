"""Skin commands through Control.ini, written the way Rainmeter writes it, against the daemon
in-process: applied within about a second whatever the fps, and never swallowed at start."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from tests.reliability.conftest import DaemonRun, read_status, wait_until, write_config
from tests.reliability.test_disk_faults import folder_config
from tests.test_control import TEMPLATE, Skin


def control_file(tmp_path: Path) -> Path:
    path = tmp_path / "out" / "control.ini"
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(TEMPLATE, path)
    time.sleep(0.3)  # older than ControlFile's settle time, as a skin installed long ago
    return path


def test_a_pause_click_is_applied_within_a_second_even_at_a_frame_every_four_seconds(tmp_path, tiny_vae):
    control = control_file(tmp_path)
    config = folder_config(tmp_path, tiny_vae, display={"fps": 0.25, "history_keep": 0})
    run = DaemonRun(config).start()
    try:
        wait_until(lambda: (read_status(tmp_path) or {}).get("frame", -1) >= 1, timeout=60, check=run.check)
        time.sleep(0.5)  # well inside the 4 s wait for the next frame
        clicked = time.monotonic()
        Skin(control).click("pause")
        wait_until(lambda: (read_status(tmp_path) or {}).get("state") == "paused", timeout=10,
                   what="status paused", check=run.check)
        assert time.monotonic() - clicked < 1.5
    finally:
        assert run.stop() == 0


def test_a_click_made_while_the_daemon_is_still_starting_is_applied(tmp_path, tiny_vae):
    control = control_file(tmp_path)
    config = folder_config(tmp_path, tiny_vae, display={"fps": 10, "history_keep": 0})
    # The click lands after the daemon was constructed and before its loop's first poll (while
    # the VAE loads): it is a new command, not part of the baseline.
    run = DaemonRun(config, prepare=lambda daemon: Skin(control).click("pause")).start()
    try:
        wait_until(lambda: (read_status(tmp_path) or {}).get("state") == "paused", timeout=60,
                   what="status paused", check=run.check)
    finally:
        assert run.stop() == 0


def test_a_keyframe_history_that_cannot_be_written_does_not_stop_the_show(tmp_path, tiny_vae, log_records):
    config = folder_config(tmp_path, tiny_vae, display={"fps": 20, "history_keep": 5})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keyframes").write_bytes(b"a file where the keyframes folder should be")
    run = DaemonRun(config).start()
    try:
        wait_until(lambda: (read_status(tmp_path) or {}).get("segment", -1) >= 2, timeout=60,
                   what="three segments", check=run.check)
    finally:
        assert run.stop() == 0
    assert any("not kept in history" in r.getMessage() for r in log_records)


def test_command_line_overrides_stay_in_force_when_the_config_is_edited(tmp_path, tiny_vae, log_records):
    from backend.config import load_config, with_overrides
    from backend.daemon import Daemon
    from backend.shutdown import Shutdown

    config_path = write_config(tmp_path, tiny_vae, display={"fps": 20})
    images = tmp_path / "images"
    images.mkdir()
    overrides = {"fps": 5.0, "source": str(images)}
    daemon = Daemon(with_overrides(load_config(config_path), **overrides), config_path, Shutdown(),
                    overrides=overrides)
    time.sleep(0.05)
    config_path.write_text(config_path.read_text().replace('"history_keep": 1000', '"history_keep": 7'))
    deadline, new = time.monotonic() + 5, None
    while new is None and time.monotonic() < deadline:
        new = daemon.watcher.poll()
        time.sleep(0.05)
    assert new is not None and new.display.history_keep == 7
    assert new.display.fps == 5.0 and new.keyframes.source == "folder" and new.keyframes.folder == images
    assert "restart" not in "\n".join(r.getMessage() for r in log_records)


def test_the_status_prompt_is_the_one_of_the_segment_on_screen_not_of_the_keyframe_being_made(tmp_path, tiny_vae):
    from backend.status import StatusWriter
    from tests.fake_comfyui import FakeComfyUI

    seen: list[tuple[int, str]] = []

    class Recording(StatusWriter):
        def write(self, status):
            if status["state"] == "live":
                seen.append((status["segment"], status["prompt"]))
            super().write(status)

    def record(daemon) -> None:
        daemon.status_writer = Recording(daemon.config.display.output_dir)

    prompts = ["first picture", "second picture", "third picture"]
    with FakeComfyUI(latency=0.05) as fake:
        config = write_config(tmp_path, tiny_vae, fake.url, keyframes={"prompts": prompts, "prompt_period": 1,
                                                                       "seed": {"policy": "increment", "value": 1}})
        assert DaemonRun(config, max_frames=5 * 4, prepare=record).start().join(180) == 0
    by_segment = dict(seen)
    assert sorted(by_segment) == [0, 1, 2, 3, 4] and len(set(seen)) == 5, "one prompt per segment"
    assert [by_segment[s] for s in range(5)] == [prompts[s % 3] for s in range(5)]


def test_pause_from_the_skin_stops_keyframe_requests_frees_comfyui_memory_and_resume_carries_on(tmp_path, tiny_vae):
    from tests.fake_comfyui import FakeComfyUI

    control = control_file(tmp_path)
    with FakeComfyUI(latency=0.05) as fake:
        config = write_config(tmp_path, tiny_vae, fake.url, display={"fps": 20, "history_keep": 0})
        run = DaemonRun(config).start()
        skin = Skin(control)
        try:
            wait_until(lambda: (read_status(tmp_path) or {}).get("frame", -1) >= 3, timeout=90, check=run.check)
            skin.click("pause")
            wait_until(lambda: (read_status(tmp_path) or {}).get("state") == "paused", timeout=10,
                       what="status paused", check=run.check)
            assert fake.free_calls == [{"unload_models": True, "free_memory": True}]
            paused = read_status(tmp_path)
            time.sleep(0.3)  # a job already running may still finish...
            made = run.daemon.gen.worker.made
            time.sleep(1.5)  # ...but no new one is asked for, and no frame is written
            assert run.daemon.gen.worker.made == made
            assert read_status(tmp_path)["frame"] == paused["frame"]
            skin.click("resume")
            wait_until(lambda: (read_status(tmp_path) or {}).get("frame", -1) > paused["frame"] + 3, timeout=30,
                       what="frames after resume", check=run.check)
        finally:
            assert run.stop() == 0


def test_at_a_low_fps_the_status_is_rewritten_every_few_seconds_between_frames(tmp_path, tiny_vae):
    config = folder_config(tmp_path, tiny_vae, display={"fps": 0.125, "history_keep": 0})  # 8 s a frame
    run = DaemonRun(config).start()
    try:
        first = wait_until(lambda: (s := read_status(tmp_path)) and s.get("frame", -1) >= 0 and s, timeout=60,
                           check=run.check)
        later = wait_until(lambda: (s := read_status(tmp_path)) and s["updated"] >= first["updated"] + 1.5 and s,
                           timeout=4, what="a heartbeat status", check=run.check)
        assert later["frame"] == first["frame"] and later["state"] == "live"
    finally:
        assert run.stop() == 0


def test_an_fps_edit_made_while_a_frame_waits_sets_the_new_cadence_at_once(tmp_path, tiny_vae):
    config = folder_config(tmp_path, tiny_vae, display={"fps": 0.25, "history_keep": 0})  # 4 s a frame
    run = DaemonRun(config).start()
    try:
        wait_until(lambda: (read_status(tmp_path) or {}).get("frame", -1) >= 1, timeout=60, check=run.check)
        shown = read_status(tmp_path)["frame"]
        time.sleep(0.3)
        config.write_text(config.read_text().replace('"fps": 0.25', '"fps": 10'))
        edited = time.monotonic()
        # At the new 10 fps five more frames take 0.5 s; at the old pace they would take 20 s.
        wait_until(lambda: read_status(tmp_path)["frame"] >= shown + 5, timeout=10, what="frames at 10 fps",
                   check=run.check)
        assert time.monotonic() - edited < 4.0
    finally:
        assert run.stop() == 0


def test_garbage_counts_in_the_control_file_are_ignored_and_a_real_click_still_works(tmp_path, tiny_vae, log_records):
    """1e400 and inf once crashed the daemon (OverflowError); a negative count and then a file
    without the key read as five clicks and paused it. Now each is one log line and nothing done."""
    control = control_file(tmp_path)
    template = control.read_text()
    config = folder_config(tmp_path, tiny_vae, display={"fps": 10, "history_keep": 0})
    run = DaemonRun(config).start()
    try:
        wait_until(lambda: (read_status(tmp_path) or {}).get("frame", -1) >= 1, timeout=60, check=run.check)
        time.sleep(0.3)  # the baseline read
        for key, value in (("Pause", "1e400"), ("Pause", "inf"), ("Pause", "-5"), ("Pause", None), ("Quit", "1e400")):
            line = "" if value is None else f"{key}Count={value}\n"
            control.write_text(re.sub(f"(?m)^{key}Count=0\n", line, template))
            time.sleep(0.5)  # settled and polled
            run.check()
            assert read_status(tmp_path)["state"] == "live"
        frame = read_status(tmp_path)["frame"]
        wait_until(lambda: read_status(tmp_path)["frame"] > frame + 2, timeout=30, what="frames go on", check=run.check)
        control.write_text(template)  # a reinstalled skin: good counts again, a new baseline
        time.sleep(0.5)
        Skin(control).click("pause")
        wait_until(lambda: (read_status(tmp_path) or {}).get("state") == "paused", timeout=10,
                   what="status paused", check=run.check)
    finally:
        assert run.stop() == 0
    ignored = [r for r in log_records if r.name == "backend.control" and "not click counts" in r.getMessage()]
    assert 1 <= len(ignored) <= 5
