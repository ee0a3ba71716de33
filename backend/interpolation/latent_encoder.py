"""Images <-> scaled VAE latents. The only module that knows scaling, shift, pixel ranges, dtype, device.

Boundaries (B = batch, H and W multiples of 8):
- ``encode(images)``: RGB PIL images -> scaled latents ``[B, C, H/8, W/8]`` float32 on ``device``.
- ``encode_pixels(pixels)``: ``[B, 3, H, W]`` float in [0, 1] -> the same latents.
- ``decode(latents)`` -> PIL images; ``decode_to_uint8(latents)`` -> ``[B, H, W, 3]`` uint8 numpy.
Scaled latent = ``(raw - shift) * scale`` with the family's factors (table below). The ``tiny``
kind's latents already are the family's scaled latents (scale 1, shift 0) and its pixels are
[0, 1]; the ``kl`` kind (diffusers ``AutoencoderKL``) takes pixels in [-1, 1] and encodes with
the posterior mode, so a keyframe's latent carries no sampling noise.
Encode/decode raise ``VaeNumericsError`` (NaN/inf even in float32: broken weights or input) and
``VaeOutOfMemoryError`` (no GPU memory even one frame at a time: hold the frame and retry later).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from backend.interpolation.vae_sources import VaeNotFoundError, VaeSource, candidates
from backend.interpolation.vae_runtime import (ModelRunner, VaeNumericsError, VaeOutOfMemoryError, pick_device,
                                               pick_dtype)

__all__ = ["FAMILIES", "Family", "LatentEncoder", "VaeNotFoundError", "VaeNumericsError", "VaeOutOfMemoryError"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Family:
    """Latent conventions of one model family."""

    channels: int  # latent channels C
    scale: float  # scaled = (raw - shift) * scale
    shift: float


FAMILIES = {
    "sd1": Family(4, 0.18215, 0.0), "sdxl": Family(4, 0.13025, 0.0), "sd3": Family(16, 1.5305, 0.0609),
    "flux1": Family(16, 0.3611, 0.1159), "flux2": Family(32, 1.0, 0.0),  # flux2: tiny kind only
}
KINDS = ("kl", "tiny")
TAESD_URL = "https://github.com/madebyollin/taesd"


def fix_advice(kind: str, models_dir: str | Path | None = None) -> str:
    """What to do when no weights of ``kind`` were found: which files, where from, where to put them."""
    if kind == "kl":
        return ("Set vae.source (or pass --vae PATH) to a VAE: a diffusers folder, a .safetensors VAE file or "
                "checkpoint, or a Hugging Face id already in the local cache; or set vae.comfyui_dir so Reverie "
                "uses the VAE of the checkpoint ComfyUI loads.")
    where = f"put both in {models_dir}" if models_dir is not None else "put both in one folder"
    return (f"Get the tiny VAE (TAESD): taesd_encoder.pth and taesd_decoder.pth for SD 1.x checkpoints "
            f"(taesdxl_* for SDXL), published at {TAESD_URL} (ComfyUI keeps them in its models/vae_approx); "
            f"{where}, or pass --vae FOLDER (or set vae.source, or vae.comfyui_dir for ComfyUI's folder).")


class LatentEncoder:
    """A loaded VAE with its latent conventions; build it with ``LatentEncoder.load``.

    Attributes: ``kind`` (kl | tiny), ``family`` (sd1 | sdxl | sd3 | flux1 | flux2), ``latent_channels``
    (4 | 16 | 32), ``scale``/``shift`` (applied to raw latents; 1/0 for tiny), ``device``, ``dtype`` (may
    turn float32 after a NaN retry), ``source`` (where the weights came from, for logs and status).
    """

    def __init__(self, runner: ModelRunner, kind: str, family: str, scale: float, shift: float, source: str):
        self.runner = runner
        self.kind = kind
        self.family = family
        self.latent_channels = FAMILIES[family].channels
        self.scale = scale
        self.shift = shift
        self.source = source  # human-readable description of where the weights came from

    @property
    def device(self) -> torch.device:
        return self.runner.device

    @property
    def dtype(self) -> torch.dtype:
        return self.runner.dtype

    @classmethod
    def load(cls, kind: str = "kl", source: str | None = None, family: str = "auto", device: str = "auto",
             dtype: str = "auto", comfyui_dir: str | Path | None = None, max_batch: int = 8,
             tile_threshold: int = 1024 * 1024, tile_size: int = 512, checkpoint: str | None = None,
             vae_file: str | None = None, models_dir: str | Path | None = None) -> "LatentEncoder":
        """Find and load weights (order in ``vae_sources``); raises VaeNotFoundError listing every place tried.

        ``checkpoint`` / ``vae_file``: what the ComfyUI workflow loads (names as ComfyUI lists them), so
        the kl kind takes the VAE ComfyUI decodes with from ``comfyui_dir``, not some other model's.
        ``models_dir``: Reverie's own weights folder, searched for a tiny pair before ComfyUI's.

        ``tile_threshold`` is a pixel count (H*W) above which the kl kind decodes/encodes in tiles of
        ``tile_size`` x ``tile_size`` pixels (25% overlap, blended).
        """
        if kind == "auto":
            return cls._load_auto(source=source, family=family, device=device, dtype=dtype, comfyui_dir=comfyui_dir,
                                  max_batch=max_batch, tile_threshold=tile_threshold, tile_size=tile_size,
                                  checkpoint=checkpoint, vae_file=vae_file, models_dir=models_dir)
        if kind not in KINDS:
            raise ValueError(f"unknown VAE kind {kind!r}; choose auto or one of {', '.join(KINDS)}")
        if family != "auto" and family not in FAMILIES:
            raise ValueError(f"unknown VAE family {family!r}; choose auto or one of {', '.join(FAMILIES)}")
        if kind == "kl" and family == "flux2":
            raise ValueError("family flux2 is supported by the tiny kind only (its VAE normalises latents differently)")
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        dev = pick_device(device)
        dt = pick_dtype(dtype, dev)  # validates dtype before any weights are read
        tried: list[str] = []
        for src in candidates(kind, source, family, comfyui_dir, tried, checkpoint=checkpoint, vae_file=vae_file,
                              models_dir=models_dir):
            try:
                model, fam, scale, shift = _load_model(kind, src, family)
            except (OSError, ValueError, RuntimeError, KeyError) as exc:  # unreadable, wrong family, not a VAE
                tried.append(f"{src.describe()}: {str(exc).splitlines()[0][:200]}")
                continue
            runner = ModelRunner(model, kind, dev, dt, max_batch, tile_threshold, tile_size)
            log.info("VAE %s (%s) loaded from %s on %s/%s", kind, fam, src.describe(), dev, runner.dtype)
            return cls(runner, kind, fam, scale, shift, src.describe())
        raise VaeNotFoundError(fix_advice(kind, models_dir), tried)

    @classmethod
    def _load_auto(cls, **options) -> "LatentEncoder":
        """``auto``: kl on CUDA (sharp, and cheap there), tiny on a CPU (where the SD VAE takes seconds
        a frame); either falls back to the other kind when its weights are nowhere."""
        on_gpu = pick_device(options["device"]).type == "cuda"
        order = ("tiny",) if options["family"] == "flux2" else ("kl", "tiny") if on_gpu else ("tiny", "kl")
        missing: list[VaeNotFoundError] = []
        for kind in order:
            try:
                encoder = cls.load(kind=kind, **options)
            except VaeNotFoundError as exc:
                missing.append(exc)
                continue
            if missing and options["source"] is None:
                log.warning("vae.kind auto: no %s weights found, so the %s kind runs here%s", order[0], kind,
                            "" if on_gpu else " at several seconds a frame. " + fix_advice("tiny", options["models_dir"]))
            return encoder
        advice = " Or: ".join(fix_advice(kind, options["models_dir"]) for kind in order)
        raise VaeNotFoundError(f"vae.kind auto found no VAE of either kind. {advice}",
                               list(dict.fromkeys(place for exc in missing for place in exc.tried)))

    def encode(self, images: list[Image.Image]) -> Tensor:
        """RGB images of one size (multiples of 8) -> scaled latents ``[B, C, H/8, W/8]`` float32."""
        if not images:
            raise ValueError("encode needs at least one image")
        sizes = {im.size for im in images}
        if len(sizes) != 1:
            raise ValueError(f"all images must have the same size, got {sorted(sizes)}")
        arrays = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])  # [B, H, W, 3]
        pixels = torch.from_numpy(arrays).permute(0, 3, 1, 2).float().div_(255.0)  # [B, 3, H, W] in [0, 1]
        return self.encode_pixels(pixels)

    def encode_pixels(self, pixels: Tensor) -> Tensor:
        """``[B, 3, H, W]`` float in [0, 1] -> scaled latents ``[B, C, H/8, W/8]`` float32 on ``device``."""
        if pixels.dim() != 4 or pixels.shape[1] != 3:
            raise ValueError(f"pixels must be [B, 3, H, W], got {tuple(pixels.shape)}")
        height, width = pixels.shape[-2:]
        if height % 8 or width % 8:
            raise ValueError(f"image size {width}x{height} is not a multiple of 8; resize before encoding")
        x = pixels.clamp(0.0, 1.0) if self.kind == "tiny" else pixels.clamp(0.0, 1.0) * 2.0 - 1.0
        raw = self.runner.encode(x)
        return (raw - self.shift) * self.scale

    def _decode_pixels(self, latents: Tensor) -> Tensor:
        """Scaled latents ``[B, C, h, w]`` -> pixels ``[B, 3, 8h, 8w]`` float in [0, 1] on ``device``."""
        if latents.dim() != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"latents must be [B, {self.latent_channels}, h, w], got {tuple(latents.shape)}")
        raw = latents.float() / self.scale + self.shift
        out = self.runner.decode(raw)
        out = out if self.kind == "tiny" else (out + 1.0) / 2.0
        return out.clamp_(0.0, 1.0)

    def decode_to_uint8(self, latents: Tensor) -> np.ndarray:
        """Scaled latents ``[B, C, h, w]`` -> ``[B, 8h, 8w, 3]`` uint8 RGB (rounded, batched internally)."""
        pixels = self._decode_pixels(latents)
        # Convert on the device: moves a quarter of the bytes of float32 across to the host.
        return pixels.mul_(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    def decode(self, latents: Tensor) -> list[Image.Image]:
        """Scaled latents ``[B, C, h, w]`` -> B RGB PIL images of size 8w x 8h."""
        return [Image.fromarray(frame) for frame in self.decode_to_uint8(latents)]

    def release(self) -> None:
        """Free accelerator memory (pause); the next encode/decode moves the model back."""
        self.runner.release()

    def memory(self) -> dict[str, float]:
        """The GPU memory budget (see ModelRunner.memory): {} on a CPU."""
        return self.runner.memory()

    def free_cache(self) -> None:
        """Return cached accelerator memory (after an out-of-memory error); the model stays placed."""
        self.runner.free_cache()


def _load_model(kind: str, src: VaeSource, family: str) -> tuple[torch.nn.Module, str, float, float]:
    """(model in fp32 on CPU, family, scale, shift) for one source; raises on anything unusable."""
    if kind == "tiny":
        from backend.interpolation.taesd import TinyPair, load_tiny

        weights = load_tiny(Path(src.location), Path(src.decoder or ""), family)
        if weights.family_guessed:
            log.warning("%s: %d latent channels fit %s; assuming %s (set vae.family to choose)", src.location,
                        weights.latent_channels, "/".join(f for f, v in FAMILIES.items()
                                                          if v.channels == weights.latent_channels), weights.family)
        return TinyPair(weights.encoder, weights.decoder), weights.family, 1.0, 0.0
    from backend.interpolation.kl_loader import KL_CHANNEL_FAMILIES, load_kl

    model, fam, guessed, config_scale = load_kl(src, family)
    channels = model.config.latent_channels
    if channels not in KL_CHANNEL_FAMILIES:
        raise ValueError(f"{channels} latent channels: not an SD1/SDXL/SD3/FLUX.1 VAE")
    if fam == "auto" and config_scale is not None:  # diffusers folder / Hub: match its config to the table
        fam = next((f for f, v in FAMILIES.items() if v.channels == channels and abs(v.scale - config_scale) < 1e-4),
                   None) or "auto"
        guessed = fam == "auto"
    if fam == "auto":
        fam = KL_CHANNEL_FAMILIES[channels][0]
    if FAMILIES[fam].channels != channels:
        raise ValueError(f"{channels} latent channels do not fit family {fam!r}")
    if guessed:
        log.warning("%s: cannot tell the model family from tensor shapes alone; assuming %s (set vae.family "
                    "to choose)", src.describe(), fam)
    return model, fam, FAMILIES[fam].scale, FAMILIES[fam].shift
