"""Tiny autoencoder in the TAESD file layout: pixels [0, 1] <-> family-scaled latents.

The weight files (``taesd_*``, ``taesdxl_*``, ``taesd3_*``, ``taef1_*``, ``taef2_*`` with
``_encoder.pth`` / ``_decoder.pth``) are plain state dicts of an ``nn.Sequential`` whose keys
are positions in the sequence (``0.weight``, ``1.conv.0.weight``, ...). This module rebuilds
that sequence so the files load with ``strict=True``. The FLUX.2 files add a ``pool`` branch to
the three innermost blocks of each half. Diffusers' ``AutoencoderTiny`` state dicts
(``encoder.layers.<i>`` / ``decoder.layers.<i-1>``) are accepted too and re-keyed.

Shapes: encoder ``[B, 3, H, W]`` in [0, 1] -> ``[B, C, H/8, W/8]``; decoder the reverse, with
output roughly in [0, 1] (callers clamp). C is 4 (SD1/SDXL), 16 (SD3/FLUX.1) or 32 (FLUX.2).
Latents are already in the family's *scaled* space (raw latents of TAEF2 lie in about ±4.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

WIDTH = 64  # feature channels of every hidden layer in the TAESD layout
POOL_BLOCKS_ENCODER = (11, 12, 13)  # positions carrying the FLUX.2 pool branch
POOL_BLOCKS_DECODER = (3, 4, 5)

# Filename stem prefix -> family; longest prefix first so "taesdxl" is not read as "taesd".
FILENAME_FAMILIES = (("taesdxl", "sdxl"), ("taesd3", "sd3"), ("taesd", "sd1"), ("taef1", "flux1"), ("taef2", "flux2"))
CHANNEL_FAMILIES = {4: ("sd1", "sdxl"), 16: ("sd3", "flux1"), 32: ("flux2",)}


def conv3(n_in: int, n_out: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1, bias=bias)


def relu() -> nn.ReLU:
    # In place: every ReLU here acts on a fresh conv/norm output; saves memory traffic on a CPU.
    return nn.ReLU(inplace=True)


class SoftClamp(nn.Module):
    """Squash latents smoothly into (-3, 3): ``tanh(x / 3) * 3``."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    """Residual block: three 3x3 convs with ReLUs; FLUX.2 files add a ``pool`` branch (1x1 convs around a
    4x wider GroupNorm) whose output is added to the block input before the convs."""

    def __init__(self, n_in: int, n_out: int, pool: bool = False):
        super().__init__()
        self.conv = nn.Sequential(conv3(n_in, n_out), relu(), conv3(n_out, n_out), relu(), conv3(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.pool = None
        if pool:
            self.pool = nn.Sequential(
                nn.Conv2d(n_in, 4 * n_in, 1, bias=False), nn.GroupNorm(4, 4 * n_in), relu(),
                nn.Conv2d(4 * n_in, n_in, 1, bias=False),
            )
        self.fuse = relu()

    def forward(self, x: Tensor) -> Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


def build_encoder(latent_channels: int, pool: bool = False) -> nn.Sequential:
    """[B, 3, H, W] pixels in [0, 1] -> [B, latent_channels, H/8, W/8] scaled latents."""
    layers: list[nn.Module] = [conv3(3, WIDTH), Block(WIDTH, WIDTH)]
    for _ in range(3):  # three stride-2 stages: 8x down
        layers.append(conv3(WIDTH, WIDTH, stride=2, bias=False))
        for _ in range(3):
            layers.append(Block(WIDTH, WIDTH, pool=pool and len(layers) in POOL_BLOCKS_ENCODER))
    layers.append(conv3(WIDTH, latent_channels))
    return nn.Sequential(*layers)


def build_decoder(latent_channels: int, pool: bool = False) -> nn.Sequential:
    """[B, latent_channels, h, w] scaled latents -> [B, 3, 8h, 8w] pixels, roughly [0, 1]."""
    layers: list[nn.Module] = [SoftClamp(), conv3(latent_channels, WIDTH), relu()]
    for _ in range(3):  # three nearest-neighbour 2x upsamplings: 8x up
        for _ in range(3):
            layers.append(Block(WIDTH, WIDTH, pool=pool and len(layers) in POOL_BLOCKS_DECODER))
        layers.extend([nn.Upsample(scale_factor=2), conv3(WIDTH, WIDTH, bias=False)])
    layers.extend([Block(WIDTH, WIDTH), conv3(WIDTH, 3)])
    return nn.Sequential(*layers)


class TinyPair(nn.Module):
    """Encoder and decoder as one module, so placement (device, dtype) moves both."""

    def __init__(self, encoder: nn.Sequential, decoder: nn.Sequential):
        super().__init__()
        self.encoder = encoder  # [B, 3, H, W] in [0, 1] -> [B, C, H/8, W/8]
        self.decoder = decoder  # [B, C, h, w] -> [B, 3, 8h, 8w], roughly [0, 1]


@dataclass(frozen=True)
class TinyWeights:
    """A loaded encoder/decoder pair and what was detected about it."""

    encoder: nn.Sequential
    decoder: nn.Sequential
    family: str  # sd1 | sdxl | sd3 | flux1 | flux2
    latent_channels: int  # 4 | 16 | 32
    family_guessed: bool  # True when channels alone could not decide and no hint was found


def _read_state_dict(path: Path, half: str) -> dict[str, Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors and pickle raise their own error types for corrupt files
        raise ValueError(f"{path.name} is not a readable state dict ({type(exc).__name__})") from exc
    prefix = f"{half}.layers."
    if any(k.startswith(prefix) for k in state):  # diffusers AutoencoderTiny layout
        shift = 1 if half == "decoder" else 0  # diffusers applies the decoder clamp outside its layers
        state = {
            f"{int(k[len(prefix):].split('.', 1)[0]) + shift}.{k[len(prefix):].split('.', 1)[1]}": v
            for k, v in state.items() if k.startswith(prefix)
        }
    return state


def family_from_name(name: str) -> str | None:
    """Family named by a TAESD file or folder name (``taesdxl_decoder.pth`` -> ``sdxl``), else None."""
    lowered = Path(name).name.lower()
    return next((family for prefix, family in FILENAME_FAMILIES if lowered.startswith(prefix)), None)


def load_tiny(encoder_path: Path, decoder_path: Path, family: str = "auto") -> TinyWeights:
    """Load a TAESD-layout pair with ``strict=True``; detect channels, pool branch and family."""
    enc_state = _read_state_dict(Path(encoder_path), "encoder")
    dec_state = _read_state_dict(Path(decoder_path), "decoder")
    last = max(int(k.split(".", 1)[0]) for k in enc_state)
    channels = enc_state[f"{last}.weight"].shape[0]
    if channels not in CHANNEL_FAMILIES or dec_state["1.weight"].shape[1] != channels:
        raise ValueError(f"{encoder_path} / {decoder_path} do not look like a TAESD pair ({channels} latent channels)")
    pool = any(".pool." in k for k in enc_state) or any(".pool." in k for k in dec_state)
    encoder, decoder = build_encoder(channels, pool), build_decoder(channels, pool)
    encoder.load_state_dict(enc_state, strict=True)
    decoder.load_state_dict(dec_state, strict=True)
    candidates = CHANNEL_FAMILIES[channels] if not pool else ("flux2",)
    guessed = False
    if family == "auto":
        hint = family_from_name(Path(encoder_path).name)
        family = hint if hint in candidates else candidates[0]
        guessed = hint not in candidates and len(candidates) > 1
    elif family not in candidates:
        raise ValueError(f"{encoder_path} has {channels} latent channels, which does not fit family {family!r}")
    return TinyWeights(encoder.eval(), decoder.eval(), family, channels, guessed)
