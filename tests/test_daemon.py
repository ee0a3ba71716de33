"""The daemon's loop on a fake clock, with a fake keyframe source and a tiny exact "VAE".

The daemon runs in a thread; its waits pass fake time at once (FakeClock.wait), so a test at
10 fps takes no real time per frame, and the test moves the clock by hand where it holds.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.config import load_config
from backend.daemon import Daemon
from backend.frame_writer import FrameWriter
from backend.frames import Keyframe
from backend.parts import Parts
from backend.pause import Pause
from backend.shutdown import Shutdown
from tests.interpolation.gated import FakeClock, Gated, wait_until
from tests.interpolation.test_hybrid_generator import PoolEncoder

FPS = 10.0


class Encoder(PoolEncoder):
    """PoolEncoder with what the daemon asks of a LatentEncoder around pauses and OOM."""

    def __init__(self) -> None:
        super().__init__()
        self.released = 0

    def release(self) -> None:
        self.released += 1

    def free_cache(self) -> None:
        pass

    asked = 0  # memory() calls, over all instances

    def memory(self) -> dict[str, float]:
        Encoder.asked += 1
        return {"vae_weights_mib": 94.0, "vae_peak_mib": 412.5, "gpu_free_mib": 2048.0}  # as on a GPU


def picture(number: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(number).integers(0, 256, (64, 64, 3), dtype=np.uint8))


class Source(Gated):
    """Keyframe n is noise seeded by n; with `gated`, each finishes only when the test says so."""

    def __init__(self, gated: bool = False, state: str = "connected") -> None:
        super().__init__()
        self.gated, self.state, self.last_error, self.prompt = gated, state, "", "a prompt"
        self.interrupted = self.resumed = 0

    def next_keyframe(self, previous):
        number = self.calls
        self.calls += 1
        if self.gated and not self._wait_for_finish():
            return None
        return Keyframe(picture(number), 0.5, f"prompt {number}", number)

    def next_prompt(self) -> None:
        pass

    def new_keyframe(self) -> None:
        pass

    def interrupt_current(self) -> bool:
        self.interrupted += 1
        return True

    def resume(self) -> None:
        self.resumed += 1


class Client:
    def __init__(self) -> None:
        self.freed = 0

    def free(self) -> None:
        self.freed += 1


class Dream:
    def __init__(self) -> None:
        self.observed: list[tuple[int, tuple[int, ...], np.dtype]] = []
        self.updates: list = []

    def observe(self, keyframe, latent):
        assert isinstance(latent, np.ndarray)
        self.observed.append((keyframe.seed, latent.shape, latent.dtype))
        return {}

    def status_fields(self) -> dict:
        return {"novelty": 0.5}

    def update(self, settings) -> None:
        self.updates.append(settings)


def write_config(folder: Path, **display) -> Path:
    path = folder / "config.yaml"
    path.write_text(json.dumps({
        "generation": {"resolution": [64, 64], "hybrid": {"interpolation_frames": 3}},
        "display": {"fps": FPS, "output_dir": "out", **display},
        "control": {"file": None}, "logging": {"file": None}}))
    return path


class Run:
    """A Daemon in a thread on a fake clock; `frames` are (clock time, index) of each frame written."""

    def __init__(self, folder: Path, source: Source | None = None, client: Client | None = None,
                 dream: Dream | None = None, **display) -> None:
        self.config_path = write_config(folder, **display)
        self.out = folder / "out"
        self.clock, self.source, self.client = FakeClock(100.0), source or Source(), client
        self.shutdown = Shutdown()
        self.daemon = Daemon(load_config(self.config_path), self.config_path, self.shutdown, clock=self.clock,
                             dream=dream, build=lambda config: Parts(self.source, self.client, Encoder()))
        self.frames: list[tuple[float, int]] = []
        self.daemon.add_frame_listener(lambda pixels, index: self.frames.append((self.clock(), index)))
        self.result: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self, max_frames: int | None = None) -> None:
        try:
            self.result = self.daemon.run(max_frames)
        except BaseException as exc:  # noqa: BLE001 - shown by until()
            self.error = exc
            raise

    def start(self, max_frames: int | None = None) -> Run:
        self.thread = threading.Thread(target=self._run, args=(max_frames,), daemon=True)
        self.thread.start()
        return self

    def status(self) -> dict:
        try:
            return json.loads((self.out / "status.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def until(self, condition) -> dict:
        """The first status written that meets `condition` (polled on real time, at most 20 s)."""
        try:
            wait_until(lambda: condition(self.status()), seconds=20)
        except AssertionError:
            raise AssertionError(f"status never matched; last: {self.status()}; error: {self.error!r}") from None
        return self.status()

    def stop(self) -> int | None:
        self.shutdown.request("test")
        self.thread.join(20)
        assert not self.thread.is_alive()
        return self.result


def test_frames_are_written_exactly_one_period_apart_on_the_clock(tmp_path):
    run = Run(tmp_path).start(max_frames=12)
    run.thread.join(20)
    assert run.result == 0 and [index for _, index in run.frames] == list(range(12))
    intervals = np.diff([at for at, _ in run.frames])
    assert intervals == pytest.approx([1 / FPS] * 11)  # a monotonic deadline: no drift, no burst


def test_max_frames_counts_only_frames_actually_written(tmp_path, caplog):
    run = Run(tmp_path)
    failures = iter([True, True])

    def replace(src: str, dst: str) -> None:
        if next(failures, False):
            raise PermissionError("held by a reader")
        Path(src).replace(dst)

    run.daemon.writer = FrameWriter(run.out, retries=1, replace=replace)
    with caplog.at_level(logging.INFO, logger="backend.daemon"):
        run.start(max_frames=3).thread.join(20)
    assert run.result == 0
    assert [index for _, index in run.frames] == [2, 3, 4]  # frames 0 and 1 failed to write: not counted
    assert "stopped after 3 frames written" in caplog.text


def test_waiting_for_k0_is_starting_and_a_long_hold_after_it_is_counted_as_a_stall(tmp_path):
    source = Source(gated=True)
    run = Run(tmp_path, source).start()
    try:
        wait_until(lambda: run.daemon.gen is not None and run.daemon.gen.waiting)  # K_0 asked for, not made
        run.clock.now += 30.0  # K_0 takes long: that is start-up, no picture stands still yet
        status = run.until(lambda s: s.get("uptime", 0) >= 30.0)
        assert (status["state"], status["stalls"]) == ("starting", 0)
        source.finish()  # K_0: shown; K_1 (needed for the next frame) is late
        run.until(lambda s: s.get("state") == "live")
        wait_until(lambda: run.daemon.gen.waiting)  # the loop holds (on real time): now move the clock
        run.clock.now += 5.0  # the hold counts from when frame 1 was due, 1/fps after frame 0
        status = run.until(lambda s: s.get("state") == "buffering")
        assert (status["stalls"], status["frame"]) == (1, 0)
        assert status["stall_seconds"] == pytest.approx(5.0 - 1 / FPS)
    finally:
        source.close()
        assert run.stop() == 0


def test_a_comfyui_source_never_reports_comfyui_not_used(tmp_path):
    source = Source(gated=True, state="starting")
    run = Run(tmp_path, source)
    seen: list[tuple[str, str]] = []
    writer = run.daemon.status_writer
    record = writer.write

    def recording(status: dict) -> None:
        seen.append((status["state"], status["comfyui"]))
        record(status)

    writer.write = recording
    run.start()
    try:
        wait_until(lambda: run.daemon.gen is not None and run.daemon.gen.waiting)
        source.state = "unavailable"
        run.clock.now += 1.0  # the held display rewrites its status every 0.25 s of clock
        run.until(lambda s: s.get("state") == "waiting_for_comfyui")
        source.state = "connected"
        source.finish()
        run.until(lambda s: s.get("comfyui") == "connected")
    finally:
        source.close()
        assert run.stop() == 0
    assert seen[0] == ("starting", "starting")  # before the source even exists
    assert ("waiting_for_comfyui", "unavailable") in seen
    assert "not_used" not in {comfyui for _, comfyui in seen}


def test_status_says_waiting_for_comfyui_as_soon_as_it_is_unavailable_even_while_frames_still_play(tmp_path):
    run = Run(tmp_path).start()
    try:
        run.until(lambda s: s.get("frame", 0) >= 2)
        run.source.state = "unavailable"
        first = run.until(lambda s: s.get("state") == "waiting_for_comfyui")
        later = run.until(lambda s: s.get("frame", 0) > first["frame"] + 2)  # the show goes on
        assert (later["state"], later["comfyui"]) == ("waiting_for_comfyui", "unavailable")
        run.source.state = "connected"
        assert run.until(lambda s: s.get("state") == "live")["comfyui"] == "connected"
    finally:
        assert run.stop() == 0


def test_an_ignored_config_edit_shows_in_last_error_until_a_good_edit_arrives(tmp_path):
    run = Run(tmp_path).start()
    try:
        run.until(lambda s: s.get("frame", 0) >= 2)
        good = run.config_path.read_text()
        run.config_path.write_text(good.replace(f'"fps": {FPS}', '"fps": 1000'))
        status = run.until(lambda s: s.get("last_error", "").startswith("config edit ignored: "))
        assert "display.fps" in status["last_error"] and status["state"] == "live"
        run.config_path.write_text(good.replace(f'"fps": {FPS}', '"fps": 5'))
        status = run.until(lambda s: s.get("target_fps") == 5)
        assert status["last_error"] == ""
    finally:
        assert run.stop() == 0


def test_pause_holds_while_any_reason_is_on_interrupts_our_job_and_frees_comfyui(tmp_path):
    client = Client()
    run = Run(tmp_path, client=client).start()
    try:
        run.until(lambda s: s.get("frame", 0) >= 2)
        run.daemon.set_paused("skin", True)
        run.daemon.set_paused("fullscreen", True)
        status = run.until(lambda s: s.get("pause_reason") == "skin, fullscreen")
        assert status["state"] == "paused" and status["last_error"] == "paused: skin, fullscreen"
        assert (run.source.interrupted, client.freed) == (1, 1)
        run.daemon.set_paused("skin", False)
        status = run.until(lambda s: s.get("pause_reason") == "fullscreen")
        frame = status["frame"]
        run.daemon.set_paused("fullscreen", False)
        status = run.until(lambda s: s.get("state") == "live" and s.get("frame", 0) > frame)
        assert status["pause_reason"] == "" and status["last_error"] == "" and run.source.resumed == 1
    finally:
        assert run.stop() == 0


def test_comfyui_memory_is_freed_only_once_the_pause_has_lasted_its_delay():
    clock = FakeClock(0.0)
    pause = Pause(clock, free_delay=2.0)
    pause.set("fullscreen", True)
    pause.began()
    assert not pause.free_due()
    clock.now = 1.9
    assert not pause.free_due()
    clock.now = 2.0
    assert pause.free_due() and not pause.free_due()  # once per pause


def test_the_dream_observes_each_keyframe_latent_as_numpy_and_its_fields_reach_the_status(tmp_path):
    dream = Dream()
    run = Run(tmp_path, dream=dream).start(max_frames=9)  # segments 0, 1 and the slot of 2
    run.thread.join(20)
    assert run.result == 0
    assert [seed for seed, _, _ in dream.observed][:3] == [0, 1, 2]
    assert {(shape, dtype) for _, shape, dtype in dream.observed} == {((4, 8, 8), np.dtype(np.float32))}
    assert run.status()["quality"] == {"novelty": 0.5}


def test_the_status_carries_the_vaes_gpu_memory_budget_asked_for_once_per_five_seconds(tmp_path):
    Encoder.asked = 0
    run = Run(tmp_path).start(max_frames=3)  # 0.3 s on the fake clock, a status write per frame
    run.thread.join(20)
    assert run.result == 0
    status = run.status()
    assert (status["vae_weights_mib"], status["vae_peak_mib"], status["gpu_free_mib"]) == (94.0, 412.5, 2048.0)
    assert Encoder.asked == 1  # not at every frame's status write


def test_a_dream_that_fails_to_observe_does_not_stop_the_show(tmp_path, caplog):
    class Broken(Dream):
        def observe(self, keyframe, latent):
            raise ValueError("a metric broke")

    run = Run(tmp_path, dream=Broken()).start(max_frames=6)
    run.thread.join(20)
    assert run.result == 0 and len(run.frames) == 6 and "could not observe" in caplog.text


def test_a_frame_listener_gets_the_pixels_of_each_frame_written(tmp_path):
    run = Run(tmp_path)
    got: list[tuple[int, np.ndarray]] = []
    run.daemon.add_frame_listener(lambda pixels, index: got.append((index, pixels.copy())))
    run.start(max_frames=5).thread.join(20)
    assert [index for index, _ in got] == [0, 1, 2, 3, 4]
    on_disk = np.asarray(Image.open(run.out / "current_frame.png").convert("RGB"))
    assert np.array_equal(got[-1][1], on_disk)
    reference = Encoder()
    assert np.array_equal(got[0][1], reference.decode_to_uint8(reference.encode([picture(0)]))[0])


def test_a_config_edit_hands_the_new_dream_settings_to_the_dream(tmp_path):
    dream = Dream()
    run = Run(tmp_path, dream=dream).start()
    try:
        run.until(lambda s: s.get("frame", 0) >= 2)
        config = json.loads(run.config_path.read_text())
        config["dream"] = {"anchor_every": 5}
        run.config_path.write_text(json.dumps(config))
        wait_until(lambda: dream.updates, seconds=20)
        assert dream.updates[-1].anchor_every == 5
    finally:
        assert run.stop() == 0


def test_the_status_says_resuming_after_a_pause_until_a_keyframe_made_since_arrives(tmp_path):
    source = Source(gated=True)
    run = Run(tmp_path, source=source).start()
    try:
        for _ in range(3):
            source.finish()
        run.until(lambda s: s.get("keyframes", 0) >= 3)
        run.daemon.set_paused("skin", True)
        run.until(lambda s: s.get("state") == "paused")
        made = run.daemon.gen.worker.made
        run.daemon.set_paused("skin", False)
        status = run.until(lambda s: s.get("state") != "paused")
        assert status.get("resuming") is True and status["pause_reason"] == ""
        source.finish()                                        # the first keyframe after the pause
        wait_until(lambda: run.daemon.gen.worker.made > made, seconds=20)
        status = run.until(lambda s: "resuming" not in s)
        assert status["state"] in ("live", "buffering")
    finally:
        assert run.stop() == 0
