"""The VAE running out of GPU memory mid-run (ComfyUI shares the GPU): the daemon holds the
picture, says so, and carries on without losing or repeating a frame."""

from __future__ import annotations

import pytest

from backend.interpolation.latent_encoder import LatentEncoder, VaeOutOfMemoryError
from backend.interpolation.vae_runtime import OUT_OF_MEMORY
from tests.reliability.conftest import DaemonRun, history_indices, read_status, wait_until
from tests.reliability.test_disk_faults import folder_config


@pytest.mark.parametrize("error", [VaeOutOfMemoryError, OUT_OF_MEMORY], ids=["from-the-runner", "torch-own"])
def test_a_vae_out_of_gpu_memory_holds_the_picture_and_the_run_resumes_without_losing_a_frame(
        tmp_path, tiny_vae, monkeypatch, log_records, error):
    real_decode = LatentEncoder.decode_to_uint8
    calls = {"n": 0, "failed": 0}

    def decode(self, latents):
        calls["n"] += 1
        if 6 <= calls["n"] < 12:  # six decodes in a row find no memory, in the middle of the run
            calls["failed"] += 1
            raise error("CUDA out of memory even one frame at a time (fake)")
        return real_decode(self, latents)

    monkeypatch.setattr(LatentEncoder, "decode_to_uint8", decode)
    real_free = LatentEncoder.free_cache
    freed = []
    monkeypatch.setattr(LatentEncoder, "free_cache", lambda self: (freed.append(1), real_free(self)))
    config = folder_config(tmp_path, tiny_vae, display={"fps": 20, "history_keep": 1000})
    run = DaemonRun(config, max_frames=24).start()
    seen_error = wait_until(lambda: "out of GPU memory" in (read_status(tmp_path) or {}).get("last_error", ""),
                            timeout=60, what="the out-of-memory error in the status", check=run.check)
    assert seen_error
    assert run.join(120) == 0
    assert calls["failed"] == 6 and len(freed) == 6  # the cache handed back after every failed attempt
    assert history_indices(tmp_path / "out") == list(range(24))  # every frame once, in order
    status = read_status(tmp_path)
    assert status["state"] == "stopped" and status["last_error"] == ""
    assert any("VAE out of GPU memory" in r.getMessage() for r in log_records)
