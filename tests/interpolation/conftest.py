"""Fixtures for the latent tests: a tiny random AutoencoderKL saved to disk, and real photos."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from PIL import Image

# Photos shipped inside the scikit-image wheel (skimage/data): NASA's astronaut portrait (public
# domain), "coffee" (CC0) and "chelsea" the cat (CC0). Found without importing scikit-image.
PHOTO_NAMES = ("astronaut.png", "coffee.png", "chelsea.png")
TINY_KL = dict(block_out_channels=[32, 64], down_block_types=["DownEncoderBlock2D"] * 2,
               up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, layers_per_block=1,
               norm_num_groups=32, sample_size=32)


def photo_dir() -> Path | None:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    return folder if all((folder / name).is_file() for name in PHOTO_NAMES) else None


@pytest.fixture(scope="session")
def photos() -> dict[str, Image.Image]:
    """Real RGB photos by file stem; skips when scikit-image (a test dependency) is absent."""
    folder = photo_dir()
    if folder is None:
        pytest.skip("real test photos come from the scikit-image package (pip install scikit-image); not installed")
    return {Path(n).stem: Image.open(folder / n).convert("RGB") for n in PHOTO_NAMES}


@pytest.fixture(scope="session")
def tiny_kl(tmp_path_factory):
    """(model, folder): a tiny random AutoencoderKL (downscale 2) saved with save_pretrained."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    model = AutoencoderKL(**TINY_KL).eval()
    # Random init leaves the posterior's log-variance near 0; the mode vs sample distinction then
    # matters, which the determinism test relies on.
    folder = tmp_path_factory.mktemp("tiny_kl")
    model.save_pretrained(folder)
    return model, folder


@pytest.fixture(scope="session")
def tiny_kl16():
    """A tiny random 16-channel AutoencoderKL without quant convs, shaped like the SD3 and FLUX.1 VAEs."""
    from diffusers import AutoencoderKL

    torch.manual_seed(1)
    return AutoencoderKL(**{**TINY_KL, "latent_channels": 16}, use_quant_conv=False, use_post_quant_conv=False).eval()
