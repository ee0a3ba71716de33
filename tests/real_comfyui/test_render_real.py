"""The seed-walk transport against the REAL ComfyUI with a real SD1.5-architecture checkpoint.

The claim under test (backend/render/latent_file.py): a `.latent` holding
``noise(seed) * sqrt(1 + sigma_max**2) / 0.18215``, sampled by KSamplerAdvanced with add_noise
disabled, gives the very image ComfyUI's own KSampler makes for that seed. The checkpoint has
random weights in the original single-file layout (tests/render/sd15_checkpoint.py) and loads
through CheckpointLoaderSimple, so the real UNet, CLIP, VAE and sampler code all run.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from backend.comfyui.client import ComfyClient
from backend.comfyui.workflow import load_workflow
from backend.render.families import FAMILIES, detect
from backend.render.graphs import Sampling, frame_graph, seed_graph
from backend.render.latent_file import latent_bytes, start_latent
from backend.render.noise import latent_shape, seed_noise
from backend.render.transfer import checkpoint_metadata, upload_latent
from tests.render.sd15_checkpoint import write_checkpoint

pytestmark = pytest.mark.real_comfyui

CHECKPOINT = "reverie-random-sd15.safetensors"
SD1 = FAMILIES["sd1"]


@pytest.fixture(scope="module")
def server(real_server, tmp_path_factory):
    """The session's real server with the random SD1.5 checkpoint in its models/checkpoints."""
    handle = real_server.require_handle()
    if handle.process is None or handle.process.poll() is not None:
        handle.start()
    built = write_checkpoint(tmp_path_factory.mktemp("ckpt") / CHECKPOINT)
    target = handle.base_dir / "models" / "checkpoints" / CHECKPOINT
    shutil.copyfile(built, target)
    yield real_server
    target.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def client(server):
    client = ComfyClient(server.url, request_timeout=30.0, job_timeout=600.0, poll_interval=0.5)
    yield client
    client.close()


SAMPLING = Sampling(prompt="a quiet lake at dawn", negative="blurry", steps=4, cfg=7.0, sampler="euler",
                    scheduler="normal", checkpoint=CHECKPOINT, width=64, height=64)


def _pixels(images) -> np.ndarray:
    assert len(images) == 1
    return np.asarray(images[0].convert("RGB"), dtype=np.float64)


def test_the_checkpoint_is_listed_by_the_server_and_its_family_read_from_its_metadata(client, server):
    assert CHECKPOINT in client.checkpoints()
    metadata = checkpoint_metadata(server.url, CHECKPOINT)
    assert metadata.get("modelspec.architecture") == "stable-diffusion-v1"
    family, reason = detect(CHECKPOINT, set(), metadata)
    assert family.name == "sd1" and "metadata" in reason
    assert checkpoint_metadata(server.url, "missing.safetensors") == {}


@pytest.mark.parametrize("sampler,scheduler", [("euler", "normal"), ("dpmpp_2m", "karras")])
def test_walk_frame_at_t_zero_equals_comfyuis_own_ksampler_image_for_the_seed(client, server, sampler, scheduler,
                                                                             record_property):
    sampling = Sampling(**{**SAMPLING.__dict__, "sampler": sampler, "scheduler": scheduler})
    workflow = load_workflow("builtin:txt2img")
    seed = 123456789
    reference = _pixels(client.run(seed_graph(workflow, sampling, seed)))
    noise = seed_noise(seed, latent_shape(SD1.channels, sampling.width, sampling.height))
    ref = upload_latent(server.url, latent_bytes(start_latent(noise, sigma_max=SD1.sigma_max,
                                                             scaling_factor=SD1.scaling_factor)), "t0.latent")
    walked = _pixels(client.run(frame_graph(workflow, sampling, ref)))
    other = _pixels(client.run(seed_graph(workflow, sampling, seed + 1)))
    diff = np.abs(walked - reference).mean() / 255.0
    control = np.abs(other - reference).mean() / 255.0
    record_property("t0_mean_abs_diff", diff)
    record_property("other_seed_mean_abs_diff", control)
    print(f"\n{sampler}/{scheduler}: t=0 vs KSampler mean abs diff {diff:.6f} (another seed: {control:.4f})")
    assert reference.std() > 5.0, "the random checkpoint made a flat image: the comparison would prove nothing"
    assert control > 10 / 255, "another seed should give a clearly different picture"
    assert diff < 1 / 255


def test_a_start_latent_without_the_sqrt_factor_does_not_match(client, server):
    """The control for the formula: storing noise * sigma_max (what a non-max-denoise start would
    use) instead of noise * sqrt(1 + sigma_max**2) is measurably off, so the test above can fail."""
    workflow = load_workflow("builtin:txt2img")
    seed = 7
    reference = _pixels(client.run(seed_graph(workflow, SAMPLING, seed)))
    noise = seed_noise(seed, latent_shape(4, SAMPLING.width, SAMPLING.height))
    wrong = latent_bytes(start_latent(noise, sigma_max=SD1.sigma_max, scaling_factor=SD1.scaling_factor * 1.2))
    walked = _pixels(client.run(frame_graph(workflow, SAMPLING, upload_latent(server.url, wrong, "wrong.latent"))))
    assert np.abs(walked - reference).mean() / 255.0 > 1 / 255


def test_render_command_writes_a_sixteen_frame_walk_that_pyav_reads_back_and_that_moves_smoothly(
        server, tmp_path, capsys, record_property):
    from backend.render.cli import main
    from backend.render.video import read_frames

    video = tmp_path / "walk.mp4"
    (tmp_path / "defaults.yaml").write_text("{}\n")
    code = main(["--seeds", "11", "22", "--frames", "16", "--resolution", "64x64", "--steps", "4",
                 "--sampler", "euler", "--scheduler", "normal", "--checkpoint", CHECKPOINT, "--url", server.url,
                 "--prompt", "a quiet lake at dawn", "--negative", "blurry", "--fps", "8",
                 "--output", str(video), "--quiet", "--config", str(tmp_path / "defaults.yaml")])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    frames = read_frames(video)
    assert len(frames) == 16 and all(f.shape == (64, 64, 3) for f in frames)
    pngs = sorted((tmp_path / "walk_frames").glob("frame_*.png"))
    assert len(pngs) == 16
    assert "16 of 16 frames" in printed.out

    # smoothness, on the lossless PNGs: every step is a small part of the whole walk
    pictures = [np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) for p in pngs]
    steps = np.array([np.abs(b - a).mean() / 255.0 for a, b in zip(pictures, pictures[1:])])
    ends = np.abs(pictures[-1] - pictures[0]).mean() / 255.0
    record_property("walk_step_mean", steps.mean())
    record_property("walk_step_max", steps.max())
    print(f"\n16-frame walk: frame-to-frame mean abs diff mean {steps.mean():.4f} max {steps.max():.4f}; "
          f"first-to-last {ends:.4f}")
    assert steps.max() < ends / 4, "no single step may jump a large part of the whole walk"
    assert steps.max() < 3 * steps.mean()
