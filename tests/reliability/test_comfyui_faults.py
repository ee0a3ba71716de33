"""ComfyUI faults against the fake server, with the daemon in-process (the fake's switches are set
from the test thread while the daemon plays): down at start, killed mid-job, execution errors,
slow keyframes, a silent socket and bad output images. Every run keeps frame history, so "no
duplicate or skipped segment on screen" is checked on the files the daemon wrote."""

from __future__ import annotations

import numpy as np
import pytest

from PIL import Image

from tests.fake_comfyui import FakeComfyUI, fake_sample
from tests.reliability.conftest import (N, DaemonRun, history_indices, is_fake_img2img_of, keyframe_images,
                                        log_text, read_status, wait_until, write_config)


def frames_written(folder) -> int:
    status = read_status(folder)
    return -1 if status is None or status["state"] not in ("live", "stopped") else status["frame"]


def assert_every_segment_once(out, frames: int) -> list[np.ndarray]:
    """Frame indices 0..frames-1 each written once; every keyframe an img2img of the one before."""
    assert history_indices(out) == list(range(frames))
    keys = keyframe_images(out)
    assert len(keys) == (frames - 1) // (N + 1) + 1
    return keys


def test_comfyui_down_at_start_is_waited_for_and_the_run_starts_when_it_appears(tmp_path, tiny_vae, no_discovery):
    with FakeComfyUI(latency=0.05) as fake:
        fake.refuse_connections = True
        config = write_config(tmp_path, tiny_vae, fake.url)
        run = DaemonRun(config, max_frames=9).start()
        waiting = wait_until(lambda: (read_status(tmp_path) or {}).get("state") == "waiting_for_comfyui"
                             and read_status(tmp_path), timeout=60, what="waiting_for_comfyui", check=run.check)
        assert waiting["comfyui"] == "unavailable" and "not reachable" in waiting["last_error"]
        assert not (tmp_path / "out" / "current_frame.png").exists()
        fake.refuse_connections = False
        assert run.join(120) == 0
    status = read_status(tmp_path)
    assert (status["state"], status["frame"], status["comfyui"]) == ("stopped", 8, "connected")
    assert_every_segment_once(tmp_path / "out", 9)


def test_comfyui_killed_mid_job_is_survived_the_job_resubmitted_and_no_segment_skipped(tmp_path, tiny_vae,
                                                                                      log_records):
    with FakeComfyUI(latency=0.3, restart_delay=1.0) as fake:
        config = write_config(tmp_path, tiny_vae, fake.url, display={"fps": 10, "history_keep": 1000})
        run = DaemonRun(config, max_frames=21).start()
        wait_until(lambda: frames_written(tmp_path) >= 2, timeout=90, what="first frames", check=run.check)
        fake.kill_mid_run = True     # the next job dies while running: sockets dropped, job forgotten
        assert run.join(180) == 0
        assert not fake.kill_mid_run, "the kill never happened"
    text = log_text(log_records)
    assert "lost the keyframe job" in text and "same seed" in text and "retrying with a new seed" not in text
    keys = assert_every_segment_once(tmp_path / "out", 21)
    for s in range(1, len(keys)):   # seed.policy increment from 100: a lost job keeps its seed
        assert np.array_equal(keys[s], fake_sample(Image.fromarray(keys[s - 1]), 100 + s, 0.5)), \
            f"keyframe {s} is not img2img of keyframe {s - 1} with seed {100 + s}"


def test_an_execution_error_is_retried_with_a_new_seed_and_three_are_skipped_never_fatal(tmp_path, tiny_vae,
                                                                                         log_records):
    with FakeComfyUI(latency=0.05) as fake:
        config = write_config(tmp_path, tiny_vae, fake.url)
        run = DaemonRun(config, max_frames=25).start()
        wait_until(lambda: frames_written(tmp_path) >= 1, timeout=90, what="first frame", check=run.check)
        fake.fail_next_execution = 1
        wait_until(lambda: fake.fail_next_execution == 0, timeout=60, what="the first error", check=run.check)
        wait_until(lambda: "retrying with a new seed" in log_text(log_records), timeout=30, what="a retry")
        fake.fail_next_execution = 3     # ComfyUISource tries 3 times, then skips the keyframe
        assert run.join(180) == 0
    text = log_text(log_records)
    assert "OutOfMemoryError" in text and "skipping it" in text
    keys = assert_every_segment_once(tmp_path / "out", 25)
    same = [s for s in range(1, len(keys)) if np.array_equal(keys[s], keys[s - 1])]
    assert len(same) == 1, "exactly one keyframe was skipped (the previous image held for a segment)"
    for s in range(1, len(keys)):
        assert s in same or is_fake_img2img_of(keys[s], keys[s - 1])
    assert read_status(tmp_path)["state"] == "stopped"


def test_keyframes_slower_than_playback_hold_the_display_and_count_stalls(tmp_path, tiny_vae):
    with FakeComfyUI(latency=0.8) as fake:
        config = write_config(tmp_path, tiny_vae, fake.url, display={"fps": 20},
                              generation={"resolution": [64, 64], "hybrid": {"interpolation_frames": 1}})
        run = DaemonRun(config, max_frames=10).start()
        assert run.join(180) == 0
    status = read_status(tmp_path)
    # 2 frames per segment at 20 fps is 0.1 s of display per 0.8 s keyframe: the display held.
    assert status["stalls"] >= 3 and status["stall_seconds"] >= 1.0
    assert history_indices(tmp_path / "out") == list(range(10))  # held, not repeated or skipped


def test_auto_interpolation_frames_follow_slow_keyframes_so_stalls_stop(tmp_path, tiny_vae):
    with FakeComfyUI(latency=2.0) as fake:
        config = write_config(tmp_path, tiny_vae, fake.url, display={"fps": 10, "history_keep": 0},
                              generation={"resolution": [64, 64], "hybrid": {"interpolation_frames": "auto"}})
        run = DaemonRun(config).start()
        try:
            # Before any latency is measured auto plays one second per segment (N+1 = 10 frames at
            # 10 fps). Then a segment of N+1 frames must last >= latency * 1.25: N+1 >= 2.0*1.25*10 = 25.
            wait_until(lambda: (read_status(tmp_path) or {}).get("segment_frames", 0) >= 25, timeout=120,
                       what="N to adapt", check=run.check)
            settled = read_status(tmp_path)
            wait_until(lambda: (read_status(tmp_path) or {}).get("segment", 0) >= settled["segment"] + 2,
                       timeout=120, what="two more segments", check=run.check)
            later = read_status(tmp_path)
        finally:
            run.stop()
    assert later["stalls"] - settled["stalls"] <= 1


def run_into_a_silent_socket(tmp_path, tiny_vae, fake, keyframes_after: int = 2):
    """Play normally, then make the socket silent; returns the keyframe index where it went silent."""
    config = write_config(tmp_path, tiny_vae, fake.url, comfyui={"request_timeout": 2, "job_timeout": 20})
    run = DaemonRun(config).start()
    try:
        wait_until(lambda: frames_written(tmp_path) >= 1, timeout=90, what="first frame", check=run.check)
        fake.silent_socket = True
        silent_from = run.daemon.gen.worker.made
        wait_until(lambda: run.daemon.gen.worker.made >= silent_from + keyframes_after
                   and frames_written(tmp_path) >= (silent_from + keyframes_after - 1) * (N + 1),
                   timeout=120, what="keyframes after the socket went silent", check=run.check)
    finally:
        run.stop()
    return silent_from


def test_a_silent_socket_never_stops_the_dream(tmp_path, tiny_vae):
    with FakeComfyUI(latency=0.05) as fake:
        run_into_a_silent_socket(tmp_path, tiny_vae, fake)
    out = tmp_path / "out"
    assert history_indices(out) == list(range(len(history_indices(out))))
    assert read_status(tmp_path)["state"] == "stopped"


def test_a_silent_socket_still_delivers_new_keyframes_through_polling(tmp_path, tiny_vae):
    with FakeComfyUI(latency=0.05) as fake:
        silent_from = run_into_a_silent_socket(tmp_path, tiny_vae, fake)
    keys = keyframe_images(tmp_path / "out")
    for s in range(silent_from, len(keys)):
        assert is_fake_img2img_of(keys[s], keys[s - 1]), f"keyframe {s} was skipped"


@pytest.mark.parametrize("fault", ["huge", "corrupt"])
def test_an_unusable_image_from_the_server_is_retried_then_skipped_and_the_run_goes_on(tmp_path, tiny_vae, fault,
                                                                                        log_records):
    with FakeComfyUI(latency=0.05) as fake:
        config = write_config(tmp_path, tiny_vae, fake.url)
        run = DaemonRun(config, max_frames=13).start()
        wait_until(lambda: frames_written(tmp_path) >= 1, timeout=90, what="first frame", check=run.check)
        fake.output_fault = fault
        wait_until(lambda: "skipping it" in log_text(log_records), timeout=60, what="a skipped keyframe",
                   check=run.check)
        fake.output_fault = None
        assert run.join(180) == 0
    text = log_text(log_records)
    # huge: refused on its header (PIL's bomb check or our pixel cap), never decoded
    assert ("pixel cap" in text or "decompression bomb" in text) if fault == "huge" else ("could not be decoded" in text)
    assert history_indices(tmp_path / "out") == list(range(13))


def test_with_two_servers_the_first_killed_mid_job_the_daemon_carries_on_with_the_second(tmp_path, tiny_vae,
                                                                                        log_records):
    """Issue 13 item 5: comfyui.url lists two servers; the one in use dies for good under a job.
    The job is made again on the other with its seed (every keyframe exact, nothing skipped) and
    status names the server in use."""
    from tests.comfyui.conftest import record_jobs, seeds_of

    with FakeComfyUI(latency=0.3) as first, FakeComfyUI(latency=0.05) as second:
        on_second = record_jobs(second)
        config = write_config(tmp_path, tiny_vae, comfyui={"url": [first.url, second.url]})
        run = DaemonRun(config, max_frames=21).start()
        wait_until(lambda: frames_written(tmp_path) >= 2, timeout=90, what="first frames", check=run.check)
        assert (read_status(tmp_path) or {}).get("comfyui_server") == first.url
        wait_until(lambda: first.running is not None, timeout=30, what="a job on the first server", check=run.check)
        first.refuse_connections = True
        assert run.join(180) == 0
    text = log_text(log_records)
    assert f"ComfyUI at {first.url} stopped answering" in text and f"carrying on with {second.url}" in text
    assert "retrying with a new seed" not in text and "skipping it" not in text
    keys = assert_every_segment_once(tmp_path / "out", 21)
    for s in range(1, len(keys)):
        assert np.array_equal(keys[s], fake_sample(Image.fromarray(keys[s - 1]), 100 + s, 0.5)), \
            f"keyframe {s} is not img2img of keyframe {s - 1} with seed {100 + s}"
    assert seeds_of(on_second) and seeds_of(on_second) == sorted(set(seeds_of(on_second)))
    status = read_status(tmp_path)
    assert status["comfyui_server"] == second.url and status["comfyui"] == "connected" and status["last_error"] == ""
