"""Run a VAE's raw encode/decode on a device: dtype, channels_last, batching, tiling, NaN guard.

Works in the model's own ranges (raw latents; pixels [0, 1] for the tiny kind, [-1, 1] for kl);
``latent_encoder`` owns the conversions around it. Inputs ``[B, *, H, W]`` on any device; outputs
float32 on ``device``, processed ``max_batch`` samples at a time. Out of GPU memory, the batch is
halved until it fits, down to one sample, and a sample that does not fit alone is retried in tiles
(kl); ``VaeOutOfMemoryError`` means even that failed.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
TILE_OVERLAP = 0.25  # fraction of a tile blended with its neighbour (hides tile seams)


class VaeNumericsError(RuntimeError):
    """The VAE produced NaN or infinite values, even after upcasting to float32."""


class VaeOutOfMemoryError(RuntimeError):
    """The GPU ran out of memory even one frame at a time (and in tiles, for kl): hold the frame, retry later."""


# torch.OutOfMemoryError is new in torch 2.5; before that only the CUDA one existed (the same class since).
OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


CUDA_INSTALL = "pip install --force-reinstall torch --index-url https://download.pytorch.org/whl/cu128"


def pick_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``.

    Raises ValueError for a name torch does not know or a CUDA device this torch cannot use.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        picked = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown vae.device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if picked.type == "cuda":
        # Without this check the first .to("cuda") dies with an AssertionError traceback.
        if torch.version.cuda is None and torch.version.hip is None:
            raise ValueError(f"vae.device is {device} but this torch ({torch.__version__}) was built without "
                             f"CUDA: install the CUDA build from pytorch.org (e.g. {CUDA_INSTALL}) "
                             f"or set vae.device: auto")
        if not torch.cuda.is_available():
            raise ValueError(f"vae.device is {device} but torch finds no usable CUDA GPU (check the NVIDIA "
                             f"driver with nvidia-smi) or set vae.device: auto")
        if picked.index is not None and picked.index >= torch.cuda.device_count():
            raise ValueError(f"vae.device is {device} but only {torch.cuda.device_count()} CUDA device(s) "
                             f"exist: use cuda:0 to cuda:{torch.cuda.device_count() - 1} or set vae.device: auto")
    return picked


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` -> bf16 on CUDA that supports it, else fp16 on CUDA; fp32 on CPU (half convs are slow there)."""
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        # Native bf16 starts at compute capability 8 (Ampere). is_bf16_supported() alone also says
        # True for the emulated bf16 of older GPUs (GTX 10xx/16xx, RTX 20xx), which is much slower than fp16.
        native = torch.cuda.get_device_capability(device)[0] >= 8 and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if native else torch.float16
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose auto or one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


class ModelRunner:
    """Owns the model's placement; ``encode``/``decode`` map raw tensors through it in batches."""

    def __init__(self, model: nn.Module, kind: str, device: torch.device, dtype: torch.dtype, max_batch: int,
                 tile_threshold: int, tile_size: int = 512):
        self.model, self.kind, self.device, self.dtype = model, kind, device, dtype
        self.max_batch = max_batch
        self.tile_threshold = tile_threshold  # pixels (H*W) above which the kl kind works in tiles
        self.tile_size = tile_size  # tile edge in pixels
        self._placed = False
        self._warned_memory = False  # the low-memory retry is logged once per run
        # The float32 retry after NaN/inf needs the original weights: upcasting half ones keeps their
        # rounding. Kept on the CPU (4 bytes per weight) while running in half.
        self._fp32_weights = None
        if dtype != torch.float32 and next(model.parameters()).dtype == torch.float32:
            self._fp32_weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        self._place()

    def _place(self) -> None:
        # Every parameter, not the first: a cast cut short by an out-of-memory error leaves them mixed.
        if any(p.dtype != self.dtype for p in self.model.parameters()):  # diffusers warns on every .to(dtype=...)
            self.model.to(dtype=self.dtype)
            if self.dtype == torch.float32 and self._fp32_weights is not None:
                self.model.load_state_dict(self._fp32_weights)
                self._fp32_weights = None
        self.model.to(device=self.device, memory_format=torch.channels_last)
        self._placed = True

    def memory(self) -> dict[str, float]:
        """On CUDA, the GPU memory budget in MiB: the VAE's weights, the most this process has held
        (weights plus the largest batch so far) and what the GPU has free now; {} on a CPU."""
        if self.device.type != "cuda":
            return {}
        weights = sum(p.numel() * p.element_size() for p in self.model.parameters()) if self._placed else 0
        free, _total = torch.cuda.mem_get_info(self.device)
        return {"vae_weights_mib": round(weights / 2**20, 1),
                "vae_peak_mib": round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1),
                "gpu_free_mib": round(free / 2**20, 1)}

    def free_cache(self) -> None:
        """Give the accelerator memory torch keeps cached (after a failed call) back; weights stay."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def release(self) -> None:
        """Move the weights to the CPU and free the accelerator's cache; the next call moves them back."""
        if self.device.type == "cuda" and self._placed:
            self.model.to("cpu")
            torch.cuda.empty_cache()
            self._placed = False

    def _set_tiling(self, pixel_count: int, tile_size: int | None = None) -> None:
        """Tiles above the threshold (kl only); ``tile_size`` forces tiles of that edge at any size."""
        if self.kind != "kl":
            return  # the tiny decoder's activations are small enough to run whole
        if tile_size or pixel_count > self.tile_threshold:
            tile_size = tile_size or self.tile_size
            self.model.enable_tiling()
            self.model.tile_sample_min_size = tile_size
            self.model.tile_latent_min_size = tile_size // self.downscale
            self.model.tile_overlap_factor = TILE_OVERLAP
        else:
            self.model.disable_tiling()

    @property
    def downscale(self) -> int:
        """Pixels per latent along each axis: 8 for every real VAE here, less for tiny test models."""
        if self.kind == "tiny":
            return 8
        return 2 ** (len(self.model.config.block_out_channels) - 1)

    def _forward(self, x: Tensor, encode: bool) -> Tensor:
        if self.kind == "tiny":
            return self.model.encoder(x) if encode else self.model.decoder(x)
        if encode:
            return self.model.encode(x).latent_dist.mode()  # posterior mode: deterministic, noise-free
        return self.model.decode(x).sample

    def _place_or_fail(self, step: str) -> None:
        """``_place``, where running out of memory (moving back after ``release``, or the float32 cast
        of the NaN retry) is a VaeOutOfMemoryError."""
        try:
            self._place()
            return
        except OUT_OF_MEMORY:
            pass  # raised outside the except block, whose traceback would keep the tensors alive
        torch.cuda.empty_cache()
        raise VaeOutOfMemoryError(f"the GPU ran out of memory moving the VAE weights onto it for {step}: hold "
                                  f"the frame and retry when ComfyUI or other programs free GPU memory")

    def _run(self, x: Tensor, encode: bool) -> Tensor:
        if not self._placed:
            self._place_or_fail("encode" if encode else "decode")
        height, width = x.shape[-2:]
        pixel_count = height * width if encode else height * width * self.downscale**2
        self._set_tiling(pixel_count)
        outs = []
        with torch.inference_mode():
            for chunk in x.split(self.max_batch):
                outs.extend(self._run_fitting(chunk, encode, pixel_count))
        # Concatenated outside inference_mode: callers get ordinary tensors they may modify in place.
        return torch.cat(outs).contiguous()

    def _run_fitting(self, chunk: Tensor, encode: bool, pixel_count: int) -> list[Tensor]:
        """``chunk`` in parts that fit: out of GPU memory, the part size is halved (and stays halved
        for the rest of this call) down to one frame, then ``_run_low_memory`` (kl: tiles)."""
        outs: list[Tensor] = []
        size, start = len(chunk), 0
        while start < len(chunk):
            part = chunk[start:start + size]
            try:
                outs.append(self._run_chunk(part, encode))
                start += len(part)
                continue
            except OUT_OF_MEMORY:
                pass  # retried outside the except block, whose traceback would keep the tensors alive
            torch.cuda.empty_cache()  # a no-op unless CUDA was initialised
            if size == 1:
                outs.append(self._run_low_memory(part, encode, pixel_count))
                start += 1
                continue
            if not self._warned_memory:
                log.warning("VAE %s ran out of GPU memory at batch %d; halving the batch",
                            "encode" if encode else "decode", size)
            size = (size + 1) // 2
        return outs

    def _run_chunk(self, chunk: Tensor, encode: bool) -> Tensor:
        out = self._forward(self._prepare(chunk), encode)
        if not torch.isfinite(out).all():
            out = self._retry_in_fp32(chunk, encode)
        return out.float()

    def _run_low_memory(self, chunk: Tensor, encode: bool, pixel_count: int) -> Tensor:
        """After an out-of-memory error: free the cache, then one sample at a time (kl: in half-size tiles)."""
        step = "encode" if encode else "decode"
        if not self._warned_memory:
            log.warning("VAE %s ran out of GPU memory at batch %d; retrying one frame at a time%s", step,
                        len(chunk), " in tiles" if self.kind == "kl" else "")
            self._warned_memory = True
        torch.cuda.empty_cache()  # a no-op unless CUDA was initialised
        self._place_or_fail(step)  # finishes a float32 cast (NaN retry) that ran out of memory halfway
        self._set_tiling(pixel_count, tile_size=max(self.tile_size // 2, 8 * self.downscale))
        try:
            return torch.cat([self._run_chunk(one, encode) for one in chunk.split(1)])
        except OUT_OF_MEMORY:
            pass  # raised outside the except block, whose traceback would keep the tensors alive
        finally:
            self._set_tiling(pixel_count)
        torch.cuda.empty_cache()
        raise VaeOutOfMemoryError(f"the GPU ran out of memory in VAE {step} even one frame at a time: hold the "
                                  f"frame and retry when ComfyUI or other programs free GPU memory")

    def _prepare(self, chunk: Tensor) -> Tensor:
        return chunk.to(device=self.device, dtype=self.dtype).contiguous(memory_format=torch.channels_last)

    def _retry_in_fp32(self, chunk: Tensor, encode: bool) -> Tensor:
        step = "encode" if encode else "decode"
        if self.dtype == torch.float32:
            raise VaeNumericsError(f"VAE {step} produced NaN/inf in float32: the weights or the input are broken")
        log.warning("VAE %s produced NaN/inf in %s; switching to float32 for the rest of the run", step, self.dtype)
        self.dtype = torch.float32
        self._place()
        out = self._forward(self._prepare(chunk), encode)
        if not torch.isfinite(out).all():
            raise VaeNumericsError(f"VAE {step} produced NaN/inf even in float32: the weights or the input are broken")
        return out

    def encode(self, pixels: Tensor) -> Tensor:
        """Pixels ``[B, 3, H, W]`` in the model's range -> raw latents ``[B, C, H/8, W/8]`` float32."""
        return self._run(pixels, encode=True)

    def decode(self, latents: Tensor) -> Tensor:
        """Raw latents ``[B, C, h, w]`` -> pixels ``[B, 3, 8h, 8w]`` float32 in the model's range."""
        return self._run(latents, encode=False)
