"""ComfyUI health: three failed probes mean reconnect, a sleep (wall clock jump or a long gap)
means reconnect and re-probe before submitting, memory growth over the warm-up baseline is
warned about once; all on fake clocks and a fake /system_stats, plus one run against the fake
ComfyUI server."""

from __future__ import annotations

import threading

from backend.desktop.health import MIB, ComfyHealth, HealthSettings, Memory, memory_from_stats


class Clocks:
    def __init__(self):
        self.mono, self.wall = 1000.0, 1_800_000_000.0

    def advance(self, seconds: float, *, slept: float = 0.0) -> None:
        self.mono += seconds
        self.wall += seconds + slept   # time asleep passes on the wall clock only (CLOCK_MONOTONIC)


def stats(ram_used_mib: int = 4096, torch_vram_mib: int | None = None) -> dict:
    answer = {"system": {"ram_total": 32768 * MIB, "ram_free": (32768 - ram_used_mib) * MIB},
              "devices": [{"type": "cpu", "vram_total": 0, "vram_free": 0, "torch_vram_total": 0}]}
    if torch_vram_mib is not None:
        answer["devices"] = [{"type": "cuda", "vram_total": 24576 * MIB, "vram_free": 10000 * MIB,
                              "torch_vram_total": torch_vram_mib * MIB}]
    return answer


class Server:
    """A /system_stats that answers `reply` or raises while `down`."""

    def __init__(self):
        self.down, self.reply, self.calls = False, stats(), 0

    def __call__(self) -> dict:
        self.calls += 1
        if self.down:
            raise ConnectionError("connection refused")
        return self.reply


def health_for(server: Server, clocks: Clocks, **settings) -> ComfyHealth:
    return ComfyHealth(server, HealthSettings(**settings), clock=lambda: clocks.mono, wall=lambda: clocks.wall)


def run_for(health: ComfyHealth, clocks: Clocks, seconds: float, step: float = 1.0) -> list[str]:
    events = []
    for _ in range(int(seconds / step)):
        clocks.advance(step)
        events += health.poll()
    return events


def test_probes_run_every_ten_seconds_and_all_is_quiet_while_comfyui_answers():
    server, clocks = Server(), Clocks()
    health = health_for(server, clocks)
    assert health.poll() == [] and server.calls == 1
    assert run_for(health, clocks, 60) == [] and server.calls == 7


def test_three_failed_probes_in_a_row_mean_reconnect_and_the_next_answer_means_ready():
    server, clocks = Server(), Clocks()
    health = health_for(server, clocks)
    health.poll()
    server.down = True
    assert run_for(health, clocks, 20) == [] and health.ready          # two failures: not yet
    assert run_for(health, clocks, 10) == ["reconnect"] and not health.ready
    server.down = False
    assert run_for(health, clocks, 2) == ["ready"] and health.ready    # re-probed within 2 s, not 10
    assert health.failures == 0


def test_a_failure_between_answers_does_not_count_towards_a_reconnect():
    server, clocks = Server(), Clocks()
    health = health_for(server, clocks)
    for down in (True, True, False, True, True, False):
        server.down = down
        clocks.advance(10)
        assert health.poll() == []


def test_a_wall_clock_jump_means_the_pc_slept_reconnect_and_probe_before_submitting():
    server, clocks = Server(), Clocks()
    health = health_for(server, clocks)
    health.poll()
    clocks.advance(3)
    server.down = True                       # ComfyUI is still waking up too
    clocks.advance(1, slept=3600)
    assert health.poll() == ["resumed"] and not health.ready and server.calls == 2  # probed at once
    server.down = False
    assert run_for(health, clocks, 2) == ["ready"] and health.ready


def test_a_long_gap_between_polls_also_counts_as_a_sleep():
    # On Windows the monotonic clock may run on while the PC sleeps: then the gap shows there.
    server, clocks = Server(), Clocks()
    health = health_for(server, clocks)
    health.poll()
    clocks.advance(45)
    assert health.poll() == ["resumed", "ready"]


def test_an_ordinary_pass_of_time_is_no_sleep():
    server, clocks = Server(), Clocks()
    health = health_for(server, clocks)
    health.poll()
    clocks.advance(5, slept=20)   # NTP nudging the wall clock by less than the threshold
    assert health.poll() == []


def test_memory_growth_over_the_warm_up_baseline_is_warned_once_and_cleared_when_it_falls():
    server, clocks = Server(), Clocks()
    health = health_for(server, clocks, warmup=60, warn_mib=1024)
    server.reply = stats(ram_used_mib=2000)
    run_for(health, clocks, 50)
    assert health.baseline is None                      # still warming up (models loading)
    server.reply = stats(ram_used_mib=6000)
    run_for(health, clocks, 20)
    assert health.baseline.ram_used_mib == 6000
    server.reply = stats(ram_used_mib=7000)
    assert run_for(health, clocks, 30) == []            # 1000 MiB: under the line
    server.reply = stats(ram_used_mib=7100)
    assert run_for(health, clocks, 30) == ["memory_growth"]
    assert health.fields()["comfyui_warning"] == "the RAM in use on ComfyUI's machine grew by 1100 MiB since ComfyUI warmed up"
    assert run_for(health, clocks, 60) == []            # warned once, not every probe
    server.reply = stats(ram_used_mib=6500)
    run_for(health, clocks, 10)
    assert health.fields()["comfyui_warning"] == ""


def test_comfyuis_own_vram_growth_is_named_as_such_and_a_reset_takes_a_new_baseline():
    server, clocks = Server(), Clocks()
    health = health_for(server, clocks, warmup=0, warn_mib=500)
    server.reply = stats(ram_used_mib=4000, torch_vram_mib=3000)
    health.poll()
    server.reply = stats(ram_used_mib=4100, torch_vram_mib=4000)
    assert run_for(health, clocks, 10) == ["memory_growth"]
    assert health.warning.startswith("ComfyUI's VRAM grew by 1000 MiB")
    fields = health.fields()
    assert fields["comfyui_vram_mib"] == 4000 and fields["comfyui_memory_growth_mib"] == 1000
    health.reset_baseline()                              # paused: models unloaded, then reloaded
    assert health.warning == "" and run_for(health, clocks, 10) == []
    assert health.baseline.torch_vram_mib == 4000


def test_memory_is_read_from_system_stats_as_comfyui_reports_it():
    assert memory_from_stats(stats(ram_used_mib=1234)) == Memory(1234, None, None)
    assert memory_from_stats(stats(ram_used_mib=1, torch_vram_mib=512)) == Memory(1, 24576 - 10000, 512)
    assert memory_from_stats({"system": {}}) is None


def test_the_watch_thread_hands_events_over_and_stops_on_request():
    server, clocks = Server(), Clocks()
    health = health_for(server, clocks, failures=1)
    server.down = True
    events: list[str] = []
    got = threading.Event()

    def on_event(event: str) -> None:
        events.append(event)
        got.set()

    stop = threading.Event()
    thread = health.start(stop, on_event)
    try:
        assert got.wait(10)
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive() and events[0] == "reconnect"


def test_against_the_fake_comfyui_a_server_that_stops_listening_is_reconnected_once_it_is_back():
    from backend.comfyui.client import ComfyClient
    from tests.fake_comfyui import FakeComfyUI

    clocks = Clocks()
    with FakeComfyUI() as fake:
        client = ComfyClient(fake.url, request_timeout=2.0)
        try:
            health = ComfyHealth(client.system_stats, clock=lambda: clocks.mono, wall=lambda: clocks.wall)
            assert health.poll() == [] and health.memory.ram_used_mib == 4096
            fake.refuse_connections = True
            assert run_for(health, clocks, 30) == ["reconnect"]
            fake.refuse_connections = False
            assert run_for(health, clocks, 2) == ["ready"]
        finally:
            client.close()
