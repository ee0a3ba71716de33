"""The daemon's watch on ComfyUI (backend.desktop.comfy_watch): unit tests on a stand-in client,
then the real daemon against the fake ComfyUI through a PC waking from sleep (a wall-clock jump)
while the WebSocket is silent, and through ComfyUI's memory growing."""

from __future__ import annotations

import threading
import time

from backend.desktop.comfy_watch import ComfyWatch
from backend.desktop.health import HealthSettings
from tests.reliability.conftest import (DaemonRun, log_records, one_torch_thread, read_status, tiny_vae,  # noqa: F401
                                        wait_until, write_config)


class Client:
    """What the watch uses of a job client: reconnect(), and current_url when failing over."""

    def __init__(self) -> None:
        self.reconnected = 0

    def reconnect(self) -> None:
        self.reconnected += 1


def stats(ram_used_mib: int) -> dict:
    return {"system": {"ram_total": 8192 << 20, "ram_free": (8192 - ram_used_mib) << 20}, "devices": []}


def test_a_wall_clock_jump_reconnects_the_client_and_holds_new_jobs_until_a_probe_answers():
    now, wall, answers = [0.0], [1000.0], [stats(100)]
    client = Client()
    watch = ComfyWatch(client, "http://127.0.0.1:9", HealthSettings(retry_every=2.0), clock=lambda: now[0],
                       wall=lambda: wall[0])

    def fake_stats() -> dict:
        answer = answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    watch.health.stats = fake_stats
    for event in watch.health.poll():
        watch._on_event(event)
    assert not watch.waking and client.reconnected == 0
    answers[0] = ConnectionError("ComfyUI is still waking")
    now[0], wall[0] = 1.0, 1000.0 + 3600.0                # an hour passed on the wall, a second here
    for event in watch.health.poll():
        watch._on_event(event)
    assert client.reconnected == 1 and watch.waking      # reconnected; no new job yet
    answers[0] = stats(100)
    now[0], wall[0] = 3.5, 3602.5 + 1000.0
    events = watch.health.poll()
    for event in events:
        watch._on_event(event)
    assert events == ["ready"] and not watch.waking


def test_a_reconnect_waits_for_our_job_in_flight_and_no_new_job_starts_meanwhile():
    client = Client()
    client.busy = True
    watch = ComfyWatch(client, "http://127.0.0.1:9", HealthSettings())
    watch._on_event("reconnect")
    assert client.reconnected == 0 and watch.waking      # the job's socket is left alone; nothing new starts
    watch._reconnect_when_idle()
    assert client.reconnected == 0
    client.busy = False                                  # the job is over (its result read from /history)
    watch._reconnect_when_idle()
    assert client.reconnected == 1 and watch.reconnects == 1 and not watch.waking


def test_waking_lets_go_after_wake_hold_even_when_no_probe_gets_through():
    now = [0.0]
    watch = ComfyWatch(Client(), "http://127.0.0.1:9", HealthSettings(), clock=lambda: now[0], wake_hold=30.0)
    watch.health.ready = False
    watch._on_event("resumed")
    assert watch.waking
    now[0] = 30.0
    assert not watch.waking


def test_the_probe_follows_the_server_a_failover_client_is_using():
    from tests.fake_comfyui import FakeComfyUI

    client = Client()
    with FakeComfyUI() as first, FakeComfyUI() as second:
        client.current_url = first.url
        watch = ComfyWatch(client, "http://127.0.0.1:9", HealthSettings(warmup=0.0))
        try:
            assert watch.fields()["comfyui_server"] == first.url
            assert watch._stats()["system"]["ram_total"] == 8 << 30
            client.current_url = second.url
            second.system_stats = lambda: stats(1234)           # only the second says 1234 MiB in use
            watch.health.poll()
            assert watch.fields()["ram_in_use_mib"] == 1234 and watch.fields()["comfyui_server"] == second.url
        finally:
            watch.close()


def record_seeds(fake) -> list[int]:
    """Every seed the fake was asked to sample with, in order (a job sent twice shows twice)."""
    seeds: list[int] = []
    enqueue = fake.enqueue

    async def recording(job):
        seeds.extend(inputs["seed"] for node in job.prompt.values()
                     if isinstance(inputs := node.get("inputs"), dict) and isinstance(inputs.get("seed"), int))
        await enqueue(job)

    fake.enqueue = recording
    return seeds


def test_a_pc_waking_with_a_silent_websocket_reconnects_sends_no_job_twice_and_never_sticks_waiting(
        tmp_path, tiny_vae, log_records):  # noqa: F811
    from tests.fake_comfyui import FakeComfyUI

    jump = [0.0]

    def sleeping_pc(daemon) -> None:
        daemon.citizen.wall = lambda: time.time() + jump[0]

    with FakeComfyUI(latency=0.3) as fake:
        seeds = record_seeds(fake)
        config = write_config(tmp_path, tiny_vae, fake.url, display={"fps": 20, "history_keep": 0},
                              comfyui={"url": fake.url, "request_timeout": 5, "job_timeout": 60})
        run = DaemonRun(config, prepare=sleeping_pc).start()
        states: list[str] = []
        watching = threading.Event()

        def watch_states() -> None:
            while not watching.is_set():
                states.append((read_status(tmp_path) or {}).get("state", ""))
                time.sleep(0.05)

        try:
            wait_until(lambda: (read_status(tmp_path) or {}).get("keyframes", 0) >= 2, timeout=90, check=run.check)
            watch = run.daemon.citizen.watch
            wait_until(lambda: watch.health.memory is not None, timeout=15, what="a first probe", check=run.check)
            watcher = threading.Thread(target=watch_states, daemon=True)
            watcher.start()
            fake.silent_socket = True     # a silent socket: images come over HTTP from the next job on
            wait_until(lambda: "switching the keyframe output" in "\n".join(r.getMessage() for r in log_records),
                       timeout=60, what="the switch to SaveImage", check=run.check)
            made = run.daemon.gen.worker.made
            wait_until(lambda: run.daemon.gen.worker.made >= made + 1, timeout=60, check=run.check)
            mark = len(seeds) - 1         # the job in flight now is the last one sent
            jump[0] = 3600.0              # the PC wakes an hour later
            wait_until(lambda: watch.reconnects >= 1, timeout=15, what="a reconnect", check=run.check)
            made = run.daemon.gen.worker.made
            wait_until(lambda: run.daemon.gen.worker.made >= made + 3, timeout=60,
                       what="keyframes made after the wake (read from /history)", check=run.check)
            status = wait_until(lambda: (s := read_status(tmp_path)) and s.get("state") == "live" and s, timeout=30,
                                what="live again", check=run.check)
        finally:
            watching.set()
            assert run.stop() == 0
    assert "the PC seems to have slept" in "\n".join(r.getMessage() for r in log_records)
    after = seeds[mark:]
    assert len(after) >= 4 and len(after) == len(set(after)), f"a job was sent twice: {seeds} (from {mark})"
    assert status["comfyui"] == "connected" and status["comfyui_server"] == fake.url
    assert states[-1] in ("live", "buffering") and "waiting_for_comfyui" not in states[-10:]


def test_comfyuis_memory_and_its_growth_warning_reach_the_status_and_the_log(tmp_path, tiny_vae, log_records):  # noqa: F811
    from tests.fake_comfyui import FakeComfyUI

    used = [1000]

    def quick_watch(daemon) -> None:
        daemon.citizen.health_settings = HealthSettings(probe_every=0.5, warmup=0.0, warn_mib=500)

    with FakeComfyUI(latency=0.05) as fake:
        fake.system_stats = lambda: stats(used[0])
        config = write_config(tmp_path, tiny_vae, fake.url, display={"fps": 20, "history_keep": 0})
        run = DaemonRun(config, prepare=quick_watch).start()
        try:
            status = wait_until(lambda: (s := read_status(tmp_path)) and s.get("ram_in_use_mib") == 1000 and s,
                                timeout=90, what="ComfyUI's RAM in the status", check=run.check)
            assert status["comfyui_warning"] == "" and status["last_error"] == ""
            used[0] = 1800                                                   # grew by 800 MiB > 500
            status = wait_until(lambda: (s := read_status(tmp_path)) and s.get("comfyui_warning") and s,
                                timeout=30, what="the growth warning", check=run.check)
        finally:
            assert run.stop() == 0
    assert status["comfyui_memory_growth_mib"] == 800
    assert status["comfyui_warning"] == "the RAM in use on ComfyUI's machine grew by 800 MiB since ComfyUI warmed up"
    assert status["last_error"] == status["comfyui_warning"]
    assert any(r.levelname == "WARNING" and "grew by 800 MiB" in r.getMessage() for r in log_records)


def test_a_pc_waking_in_the_middle_of_our_job_reconnects_after_it_so_its_websocket_images_are_not_lost(
        tmp_path, tiny_vae, log_records):  # noqa: F811
    from tests.fake_comfyui import FakeComfyUI

    jump = [0.0]

    def sleeping_pc(daemon) -> None:
        daemon.citizen.wall = lambda: time.time() + jump[0]

    with FakeComfyUI(latency=1.5) as fake:
        seeds = record_seeds(fake)
        config = write_config(tmp_path, tiny_vae, fake.url, display={"fps": 20, "history_keep": 0})
        run = DaemonRun(config, prepare=sleeping_pc).start()
        try:
            wait_until(lambda: (read_status(tmp_path) or {}).get("keyframes", 0) >= 2, timeout=90, check=run.check)
            watch = run.daemon.citizen.watch
            wait_until(lambda: watch.health.memory is not None, timeout=15, what="a first probe", check=run.check)
            wait_until(lambda: fake.running is not None, timeout=30, what="a job of ours running", check=run.check)
            jump[0] = 3600.0                              # the PC wakes while that job runs
            wait_until(lambda: watch.reconnects >= 1, timeout=30, what="a reconnect", check=run.check)
            made = run.daemon.gen.worker.made
            wait_until(lambda: run.daemon.gen.worker.made >= made + 2, timeout=60, check=run.check)
        finally:
            assert run.stop() == 0
    messages = "\n".join(r.getMessage() for r in log_records)
    assert "the PC seems to have slept" in messages and "making it again" not in messages
    assert len(seeds) == len(set(seeds)), f"a job was sent twice: {seeds}"
