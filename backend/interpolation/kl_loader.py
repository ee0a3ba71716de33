"""Build a diffusers ``AutoencoderKL`` from one ``VaeSource``, offline-first, and name its family.

Single files and full checkpoints are read with safetensors' ``safe_open`` (only the VAE's
``first_stage_model.*`` tensors of a checkpoint), the architecture sizes are read off the tensor
shapes, and the rest of the config comes from ``vae_configs/<family>/config.json`` shipped with
the project, so no Hub access is needed. Families with equal shapes (sd1/sdxl, sd3/flux1) are told
apart by checkpoint keys or file names; ``guessed`` says when neither helped.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections import Counter
from pathlib import Path

import torch

from backend.interpolation.vae_sources import CHECKPOINT_VAE_PREFIXES, VaeSource

CONFIG_DIR = Path(__file__).resolve().parent / "vae_configs"
KL_CHANNEL_FAMILIES = {4: ("sd1", "sdxl"), 16: ("sd3", "flux1")}
# Keys elsewhere in a full checkpoint that name its model family.
CHECKPOINT_KEY_HINTS = (
    ("conditioner.embedders.1.", "sdxl"), ("cond_stage_model.", "sd1"),
    ("model.diffusion_model.joint_blocks.", "sd3"), ("model.diffusion_model.double_blocks.", "flux1"),
)
NAME_HINTS = (("sdxl", "sdxl"), ("xl", "sdxl"), ("sd3", "sd3"), ("flux", "flux1"), ("ae", "flux1"),
              ("sd15", "sd1"), ("sd-vae", "sd1"), ("v1-5", "sd1"), ("vae-ft", "sd1"))


# The parts of an AutoencoderKL, in the LDM and the diffusers layout alike. Other keys in a VAE file
# are training bookkeeping (``model_ema.decay``, ``model_ema.num_updates``, ``loss.*``) and are dropped.
VAE_PARTS = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")


def read_vae_tensors(path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """VAE tensors of a single-file VAE or a checkpoint, prefix stripped, plus the file's other keys.

    Raises ValueError for a file that is not a readable state dict.
    """
    try:
        tensors, other_keys = _read_vae_tensors(path)
    except Exception as exc:  # safetensors and pickle raise their own error types for corrupt files
        raise ValueError(f"not a readable VAE file ({type(exc).__name__}: {str(exc)[:120]})") from exc
    return {k: v for k, v in tensors.items() if k.startswith(VAE_PARTS) and isinstance(v, torch.Tensor)}, other_keys


def _read_vae_tensors(path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
            prefix = next((p for p in CHECKPOINT_VAE_PREFIXES if any(k.startswith(p) for k in keys)), "")
            tensors = {k[len(prefix):]: handle.get_tensor(k) for k in keys if k.startswith(prefix)}
        return tensors, [k for k in keys if not k.startswith(prefix)] if prefix else []
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    prefix = next((p for p in CHECKPOINT_VAE_PREFIXES if any(k.startswith(p) for k in state)), "")
    others = [k for k in state if not k.startswith(prefix)] if prefix else []
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, others


def family_from_hints(name: str, other_keys: list[str], channels: int) -> str | None:
    """Family named by checkpoint keys, else by the file name; None when nothing fits ``channels``."""
    fits = KL_CHANNEL_FAMILIES.get(channels, ())
    for marker, family in CHECKPOINT_KEY_HINTS:
        if family in fits and any(k.startswith(marker) for k in other_keys):
            return family
    stem = Path(name).stem.lower()
    words = stem.replace("-", "_").replace(".", "_").split("_")
    for marker, family in NAME_HINTS:
        if family in fits and (marker in words or (len(marker) > 2 and marker in stem)):
            return family
    return None


def architecture(tensors: dict[str, torch.Tensor]) -> dict:
    """Config fields that tensor shapes decide (LDM or diffusers key layout)."""
    ldm = any(k.startswith("encoder.down.") for k in tensors)
    block = "encoder.down.{}.block.{}.conv1.weight" if ldm else "encoder.down_blocks.{}.resnets.{}.conv1.weight"
    widths: list[int] = []
    while block.format(len(widths), 0) in tensors:
        widths.append(tensors[block.format(len(widths), 0)].shape[0])
    layers = 0
    while block.format(0, layers) in tensors:
        layers += 1
    if not widths or "decoder.conv_in.weight" not in tensors:
        raise ValueError("not an AutoencoderKL state dict (no encoder blocks or decoder.conv_in)")
    return {
        "block_out_channels": widths, "layers_per_block": layers,
        "down_block_types": ["DownEncoderBlock2D"] * len(widths), "up_block_types": ["UpDecoderBlock2D"] * len(widths),
        "latent_channels": tensors["decoder.conv_in.weight"].shape[1],
        "use_quant_conv": "quant_conv.weight" in tensors, "use_post_quant_conv": "post_quant_conv.weight" in tensors,
    }


def _quiet_kwargs() -> dict:
    """diffusers warns on every load when ``accelerate`` is missing unless told not to use it."""
    return {"low_cpu_mem_usage": importlib.util.find_spec("accelerate") is not None}


def _online_allowed() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("1", "true", "yes", "on")


def _from_hub(hub_id: str):
    """Cache first (``local_files_only``, also ``vae/``), then the Hub unless HF_HUB_OFFLINE is set."""
    from diffusers import AutoencoderKL
    from huggingface_hub.constants import HF_HUB_CACHE  # where diffusers looks with cache_dir unset

    for subfolder in (None, "vae"):
        try:
            with warnings.catch_warnings():  # diffusers passes huggingface_hub a deprecated argument
                warnings.simplefilter("ignore", UserWarning)
                return AutoencoderKL.from_pretrained(hub_id, subfolder=subfolder, local_files_only=True,
                                                     **_quiet_kwargs())
        except (OSError, ValueError):  # not in the cache (diffusers raises OSError/EnvironmentError)
            pass
    if not _online_allowed():
        raise FileNotFoundError(f"not in the Hugging Face cache {HF_HUB_CACHE} (HF_HUB_OFFLINE is set, so no "
                                "download was tried)")
    # One quick metadata request first: it fails in well under a second without a network (a blind
    # download retries for many seconds per file) and tells whether the VAE sits at the root or in vae/.
    from huggingface_hub import model_info

    try:
        files = {f.rfilename for f in model_info(hub_id, timeout=10).siblings or []}
    except Exception as exc:  # offline, unknown repo, gated: huggingface_hub/httpx error types vary
        raise FileNotFoundError(f"not in the Hugging Face cache {HF_HUB_CACHE}, and the Hub did not answer "
                                f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from exc
    subfolder = None if "config.json" in files else "vae" if "vae/config.json" in files else None
    if subfolder is None and "config.json" not in files:
        raise FileNotFoundError("the Hub repository has no VAE config.json (neither at its root nor in vae/)")
    return AutoencoderKL.from_pretrained(hub_id, subfolder=subfolder, **_quiet_kwargs())


def load_kl(source: VaeSource, family: str) -> tuple[torch.nn.Module, str, bool, float | None]:
    """Build the model. Returns (model in fp32 on CPU, family, family_guessed, config scaling factor or None).

    Raises FileNotFoundError / ValueError / OSError when ``source`` holds no usable VAE.
    """
    from diffusers import AutoencoderKL

    if source.form in ("diffusers", "hub"):
        if source.form == "diffusers":
            model = AutoencoderKL.from_pretrained(source.location, local_files_only=True, **_quiet_kwargs())
        else:
            model = _from_hub(source.location)
        return model.eval(), family, family == "auto", float(model.config.scaling_factor)
    tensors, other_keys = read_vae_tensors(Path(source.location))
    arch = architecture(tensors)
    fits = KL_CHANNEL_FAMILIES.get(arch["latent_channels"])
    if fits is None:
        raise ValueError(f"{arch['latent_channels']} latent channels: not an SD1/SDXL/SD3/FLUX.1 VAE")
    hinted = family_from_hints(source.location, other_keys, arch["latent_channels"])
    guessed = False
    if family == "auto":
        family, guessed = hinted or fits[0], hinted is None
    elif family not in fits:
        raise ValueError(f"{arch['latent_channels']} latent channels do not fit family {family!r}")
    elif source.searched and hinted and hinted != family:
        raise ValueError(f"looks like a {hinted} VAE (by its name or checkpoint keys), not {family}")
    model = AutoencoderKL.from_single_file(tensors, config=str(CONFIG_DIR / family), local_files_only=True,
                                           **_quiet_kwargs(), **arch)
    # diffusers loads converted weights with strict=False and leaves what it missed at random init.
    loaded = model.state_dict()
    missing = uncovered(loaded, tensors)
    if missing or any(p.is_meta for p in model.parameters()):
        raise ValueError(f"{len(missing)} of the model's {len(loaded)} tensors are not in the file "
                         f"(first: {(missing or ['meta parameters'])[0]}): incomplete VAE")
    if not torch.equal(loaded["decoder.conv_out.weight"], tensors["decoder.conv_out.weight"]):
        raise ValueError("decoder weights did not load from the file")
    return model.eval(), family, guessed, None


def _fingerprint(tensor: torch.Tensor) -> tuple[int, float]:
    # Layout conversion only renames and reshapes (attention 1x1 convs -> linear), so size and sum match.
    return tensor.numel(), float(tensor.detach().reshape(-1).double().sum())


def uncovered(loaded: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of model tensors whose values come from no file tensor (works across key layouts)."""
    available = Counter(_fingerprint(t) for t in tensors.values())
    missing = []
    for name, tensor in loaded.items():
        fingerprint = _fingerprint(tensor)
        if available[fingerprint] > 0:
            available[fingerprint] -= 1
        else:
            missing.append(name)
    return missing
