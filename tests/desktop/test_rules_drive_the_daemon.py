"""A pause rule on the fake platform drives the real daemon (in-process, fake ComfyUI) through
contract I6: the rule fires -> status "paused" with the rule's reason, OUR running ComfyUI job is
interrupted, /free is posted after `pause.free_after`; the condition clears -> still paused after
one clear check -> resumed after the second, frames flow again, the status says "resuming" until
a new keyframe arrives. The first test calls `rules.sync(daemon.set_paused)` itself, on a fake
clock, as the daemon's rules thread does; the second lets the daemon's own rules thread do it."""

from __future__ import annotations

import json
import time

from backend.desktop.platform import FakePlatform
from backend.desktop.rules import PauseRules, PauseSettings
from tests.reliability.conftest import DaemonRun, one_torch_thread, read_status, tiny_vae, wait_until, write_config  # noqa: F401


def test_a_game_starting_pauses_the_daemon_interrupts_our_job_and_its_end_resumes_it_after_two_checks(tmp_path, tiny_vae):  # noqa: F811
    from tests.fake_comfyui import FakeComfyUI

    platform = FakePlatform(process_names={"explorer.exe"})
    now = [0.0]
    rules = PauseRules(PauseSettings(processes=("game.exe",), check_every=2.0), platform, clock=lambda: now[0])

    def tick() -> str:
        now[0] += 2.0
        return rules.sync(run.daemon.set_paused)

    with FakeComfyUI(latency=0.05) as fake:
        config = write_config(tmp_path, tiny_vae, fake.url, display={"fps": 20, "history_keep": 0},
                              pause={"enabled": False, "free_after": 3.0})   # the daemon's own rules off
        run = DaemonRun(config).start()
        try:
            wait_until(lambda: (read_status(tmp_path) or {}).get("frame", -1) >= 3, timeout=90, check=run.check)
            assert tick() == ""
            fake.latency = 30.0                          # the next keyframe job runs long...

            def long_job_running() -> bool:
                job = fake.running
                time.sleep(0.3)                          # a job still running after 0.3 s is a 30 s one,
                return job is not None and fake.running is job   # not the last quick one finishing

            wait_until(long_job_running, timeout=30, what="a long job of ours running", check=run.check)

            platform.answers["process_names"] = {"explorer.exe", "Game.exe"}   # ...and the game starts
            assert tick() == "game.exe running"
            status = wait_until(lambda: (s := read_status(tmp_path)) and s.get("state") == "paused" and s,
                                timeout=10, what="status paused", check=run.check)
            assert status["pause_reason"] == "game.exe running"
            wait_until(lambda: fake.interrupt_requested, timeout=10, what="our job interrupted", check=run.check)
            assert fake.free_calls == []                                      # not before free_after
            wait_until(lambda: fake.free_calls, timeout=15, what="POST /free", check=run.check)
            assert fake.free_calls[0] == {"unload_models": True, "free_memory": True}
            fake.latency = 0.05

            platform.answers["process_names"] = {"explorer.exe"}               # the game ends
            assert tick() == "game.exe running"                               # one clear check: held
            time.sleep(0.5)
            assert read_status(tmp_path)["state"] == "paused" and run.daemon.pause.wanted
            frame = read_status(tmp_path)["frame"]
            fake.latency = 3.0                                                # the models load again
            assert tick() == ""                                               # the second: resumed
            status = wait_until(lambda: (s := read_status(tmp_path)) and s.get("resuming") and s, timeout=10,
                                what="status resuming", check=run.check)
            assert status["state"] in ("resuming", "live", "buffering") and status["pause_reason"] == ""
            fake.latency = 0.05
            wait_until(lambda: read_status(tmp_path).get("frame", -1) > frame + 3, timeout=60,
                       what="frames after the resume", check=run.check)
            wait_until(lambda: "resuming" not in read_status(tmp_path), timeout=30, what="resuming over",
                       check=run.check)
            assert read_status(tmp_path)["pause_reason"] == ""
        finally:
            assert run.stop() == 0


def test_the_daemons_own_rules_thread_pauses_for_a_listed_process_and_a_config_edit_switches_the_rule_off(
        tmp_path, tiny_vae):  # noqa: F811
    from tests.fake_comfyui import FakeComfyUI

    platform = FakePlatform(process_names={"explorer.exe", "game.exe"})

    def fake_desktop(daemon) -> None:
        daemon.citizen.rules.platform = platform

    with FakeComfyUI(latency=0.05) as fake:
        pause = {"processes": ["game.exe"], "check_every": 0.5, "free_after": 0.0}
        config = write_config(tmp_path, tiny_vae, fake.url, display={"fps": 20, "history_keep": 0}, pause=pause)
        run = DaemonRun(config, prepare=fake_desktop).start()
        try:
            status = wait_until(lambda: (s := read_status(tmp_path)) and s.get("state") == "paused" and s,
                                timeout=60, what="paused by the rule", check=run.check)
            assert status["last_error"] == "paused: game.exe running"
            wait_until(lambda: fake.free_calls, timeout=10, what="POST /free at once (free_after 0)", check=run.check)
            edited = json.loads(config.read_text())
            edited["pause"]["processes"] = []                    # a live edit: the rule is gone
            config.write_text(json.dumps(edited))
            frame = read_status(tmp_path)["frame"]
            status = wait_until(lambda: (s := read_status(tmp_path)) and s.get("frame", -1) > frame + 2 and s,
                                timeout=60, what="frames once the rule is gone", check=run.check)
            assert status["pause_reason"] == "" and "paused" not in status["last_error"]
        finally:
            assert run.stop() == 0
