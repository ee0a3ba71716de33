"""Benchmark the latent core: ms per frame for encode, decode and slerp, per VAE kind and size.

    python bench/latents.py                                  # everything (slow on a small CPU)
    python bench/latents.py --kinds tiny --sizes 512x256 --reps 3
    python bench/latents.py --kl-sizes 512x256 --reps 2 --batch 2   # CPU-friendly

kl = diffusers' AutoencoderKL in the SD 1.5 VAE architecture with RANDOM weights (speed does not
depend on the weights, and none can be downloaded here); tiny = the real TAEF2 weights from
../shared/models/taesd. Both run through LatentEncoder, the daemon's own code path (encode_pixels
and decode_to_uint8). Times are medians after warm-up; "ms/frame" divides a batch's time by B.
Peak memory is measured per op (encode, decode), reset before each: on CUDA torch's
max_memory_allocated (weights included); on the CPU the process's resident-set high-water mark
(Linux VmHWM, reset through /proc/self/clear_refs) above the resident set when the op started,
i.e. what the op adds on top of the loaded model. On CUDA every size also runs in fp16 beside
--dtype, and the table adds the decoder's achieved TFLOP/s against the GPU's peak.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import re
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.interpolation.latent_encoder import FAMILIES, LatentEncoder  # noqa: E402
from backend.interpolation.spherical_lerp import slerp  # noqa: E402
from backend.interpolation.vae_runtime import ModelRunner, pick_device, pick_dtype  # noqa: E402

SHARED_TAESD = REPO.parent / "shared" / "models" / "taesd"
# Dense fp16/bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, by device-name fragment.
PEAK_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "4090": 165.0}


def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def build(kind: str, device: str, dtype: str, max_batch: int) -> LatentEncoder:
    if kind == "tiny":
        return LatentEncoder.load("tiny", source=str(SHARED_TAESD), device=device, dtype=dtype, max_batch=max_batch)
    from diffusers import AutoencoderKL

    config = json.loads((REPO / "backend/interpolation/vae_configs/sd1/config.json").read_text())
    model = AutoencoderKL(**{k: v for k, v in config.items() if not k.startswith("_")}).eval()
    dev = pick_device(device)
    # Tiling off: the threshold is above every benchmarked size so the full-frame cost is measured.
    runner = ModelRunner(model, "kl", dev, pick_dtype(dtype, dev), max_batch, tile_threshold=1 << 30)
    fam = FAMILIES["sd1"]
    return LatentEncoder(runner, "kl", "sd1", fam.scale, fam.shift, "random SD 1.5 VAE architecture")


def timed(fn, reps: int, warmup: int, cuda: bool) -> tuple[float, float]:
    """Median (wall seconds, process CPU seconds) of ``fn()`` over ``reps`` runs after ``warmup`` runs.

    CPU seconds summed over torch's threads: on a shared machine wall time mostly measures the
    neighbours, while CPU time / threads estimates the wall time of an idle machine.
    """
    walls, cpus = [], []
    for i in range(warmup + reps):
        if cuda:
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            walls.append(time.perf_counter() - start)
            cpus.append(time.process_time() - cpu_start)
    return statistics.median(walls), statistics.median(cpus)


def _proc_status_bytes(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(match[1]) * 1024 if match else None


def peak_reset(cuda: bool) -> int | None:
    """Start a peak measurement; returns the baseline (CPU: resident bytes) or None where unsupported."""
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return 0
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back so it is not counted as "already resident"
        Path("/proc/self/clear_refs").write_text("5")  # "5" resets VmHWM to the current VmRSS (Linux >= 4.0)
    except (OSError, AttributeError):  # not Linux, or a libc without malloc_trim (musl)
        return None
    return _proc_status_bytes("VmRSS")


def peak_mib(cuda: bool, baseline: int | None) -> str:
    if baseline is None:
        return "?"
    if cuda:
        return f"{torch.cuda.max_memory_allocated() / 2**20:.0f}"
    high = _proc_status_bytes("VmHWM")
    return "?" if high is None else f"{max(high - baseline, 0) / 2**20:.0f}"


def measured(fn, reps: int, warmup: int, cuda: bool) -> tuple[float, float, str]:
    """``timed`` plus the peak memory (MiB, as a table cell) over those runs."""
    baseline = peak_reset(cuda)
    wall, cpu = timed(fn, reps, warmup, cuda)
    return wall, cpu, peak_mib(cuda, baseline)


def decoder_flops(encoder: LatentEncoder, latents: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        encoder.decode_to_uint8(latents[:1])
    return counter.get_total_flops()


def bench_kind(kind: str, dtype: str, args, rows: list[list[str]]) -> None:
    sizes = args.kl_sizes if kind == "kl" and args.kl_sizes else args.sizes
    encoder = build(kind, args.device, dtype, max(args.batch, 1))
    cuda = encoder.device.type == "cuda"
    for width, height in sizes:
        for batch in sorted({1, args.batch}):
            pixels = torch.rand(batch, 3, height, width, device=encoder.device)
            latents = encoder.encode_pixels(pixels)
            enc_s, enc_cpu, enc_peak = measured(lambda: encoder.encode_pixels(pixels), args.reps, args.warmup, cuda)
            dec_s, dec_cpu, dec_peak = measured(lambda: encoder.decode_to_uint8(latents), args.reps, args.warmup, cuda)
            ts = torch.linspace(0, 1, args.inbetweens + 2, device=encoder.device)[1:-1]
            slerp_s, _ = timed(lambda: slerp(latents[:1], latents[-1:], ts), max(args.reps, 20), 3, cuda)
            row = [kind, f"{width}x{height}", str(batch), str(encoder.dtype).replace("torch.", ""),
                   f"{enc_s / batch * 1e3:.0f}", f"{dec_s / batch * 1e3:.0f}", f"{slerp_s / len(ts) * 1e3:.3f}",
                   enc_peak, dec_peak]
            if not cuda:
                threads = torch.get_num_threads()
                row += [f"{enc_cpu / batch / threads * 1e3:.0f}", f"{dec_cpu / batch / threads * 1e3:.0f}"]
            if cuda:
                flops = decoder_flops(encoder, latents)
                achieved = flops / (dec_s / batch) / 1e12
                peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items()
                                                 if k in torch.cuda.get_device_name()), None)
                ratio = f"{peak / achieved:.1f}x" if peak else "?"
                row += [f"{flops / 1e12:.2f}", f"{achieved:.0f}", ratio]
            rows.append(row)
            print(" | ".join(row), flush=True)
    encoder = None  # let the next kind load into freed memory
    if cuda:
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="tiny,kl", help="comma list of kl,tiny")
    parser.add_argument("--sizes", default="512x256,512x512,1024x576", help="comma list of WxH")
    parser.add_argument("--kl-sizes", default="", help="sizes for kl only (default: --sizes)")
    parser.add_argument("--batch", type=int, default=4, help="the 'batch N' besides batch 1")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--inbetweens", type=int, default=6, help="t values per slerp call")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="auto = fp32 on CPU, bf16/fp16 on CUDA (CUDA adds fp16 rows)")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="GPU fp16 peak, if not in the built-in table")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = parser.parse_args()
    unknown = set(filter(None, args.kinds.split(","))) - {"kl", "tiny"}
    if unknown:
        parser.error(f"unknown kinds: {', '.join(sorted(unknown))}")
    args.sizes = [parse_size(s) for s in args.sizes.split(",") if s]
    args.kl_sizes = [parse_size(s) for s in args.kl_sizes.split(",") if s]
    if args.threads:
        torch.set_num_threads(args.threads)

    # The slerp target: 6 t-values on one [1, 4, 64, 64] latent (an SD 512x512 frame).
    v0, v1, ts = torch.randn(1, 4, 64, 64), torch.randn(1, 4, 64, 64), torch.linspace(0, 1, 8)[1:-1]
    call, _ = timed(lambda: slerp(v0, v1, ts), 200, 20, False)
    print(f"slerp 6 t on [1,4,64,64], CPU, {torch.get_num_threads()} threads: {call * 1e3:.3f} ms per call\n")

    header = ["kind", "size", "B", "dtype", "encode ms/frame", "decode ms/frame", "slerp ms/frame"]
    try:
        device = pick_device(args.device)
        pick_dtype(args.dtype, device)
    except ValueError as exc:
        parser.error(str(exc))
    dtypes = [args.dtype]
    if device.type == "cuda":
        if pick_dtype(args.dtype, device) != torch.float16:
            dtypes.append("fp16")  # the issue asks for fp16 figures; auto may pick bf16
        header += ["enc peak MiB (allocated)", "dec peak MiB (allocated)", "dec TFLOP/frame", "dec TFLOP/s",
                   "x FLOP limit"]
        print(f"device: {torch.cuda.get_device_name()}")
    else:
        header += ["enc peak MiB (RSS above start)", "dec peak MiB (RSS above start)",
                   "encode CPU-ms/thread", "decode CPU-ms/thread"]  # idle-machine estimate of wall ms
        print(f"device: CPU, {torch.get_num_threads()} torch threads")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    rows: list[list[str]] = []
    for kind in filter(None, args.kinds.split(",")):  # --kinds "" prints only the slerp line
        if kind == "tiny" and not (SHARED_TAESD / "taef2_encoder.pth").is_file():
            print(f"tiny: skipped, no TAEF2 weights at {SHARED_TAESD}")
            continue
        for dtype in dtypes:
            bench_kind(kind, dtype, args, rows)


if __name__ == "__main__":
    main()
