"""Where VAE weights can come from, in search order, without loading any of them.

Order: an explicit path (or Hugging Face id), then Reverie's own models folder (tiny), then
ComfyUI's ``models/vae_approx`` (tiny) or,
for kl, the VAE ComfyUI itself decodes with when the workflow names it (its VAELoader's file in
``models/vae``, else the checkpoint it loads from ``models/checkpoints``), otherwise the files of
``models/vae`` and the VAEs inside ``models/checkpoints/*.safetensors``; then a Hugging Face id
resolved cache-first (kl). ``candidates`` lists what exists; the loader tries
each and raises ``VaeNotFoundError`` with ``tried`` when none loads. No torch import here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePath

KL_FILE_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".bin", ".pth")
TINY_SUFFIXES = (".pth", ".safetensors")
CHECKPOINT_VAE_PREFIXES = ("first_stage_model.", "vae.")
# Default Hub ids per family (the kl kind's last resort); sd1's is the usual fine-tuned SD 1.x VAE.
HUB_DEFAULTS = {
    "sd1": "stabilityai/sd-vae-ft-mse",
    "sdxl": "madebyollin/sdxl-vae-fp16-fix",
    "sd3": "stabilityai/stable-diffusion-3-medium-diffusers",
    "flux1": "black-forest-labs/FLUX.1-schnell",
}
# Tiny pairs by family, in the order preferred when the family is "auto".
TINY_PREFIXES = {"sd1": "taesd", "sdxl": "taesdxl", "sd3": "taesd3", "flux1": "taef1", "flux2": "taef2"}


class VaeNotFoundError(RuntimeError):
    """No usable VAE weights; ``tried`` lists every place looked at, with why it was passed over."""

    def __init__(self, advice: str, tried: list[str]):
        self.tried = list(tried)
        lines = "\n".join(f"  - {place}" for place in self.tried) or "  - (nowhere: no source was given)"
        super().__init__(f"{advice}\nPlaces tried:\n{lines}")


@dataclass(frozen=True)
class VaeSource:
    """One place to load a VAE from."""

    form: str  # "diffusers" (folder) | "file" (single-file VAE or full checkpoint) | "tiny" (pair) | "hub"
    location: str  # folder/file path, encoder file for "tiny", or a Hub id
    decoder: str | None = None  # the decoder file of a tiny pair
    searched: bool = False  # found by searching a folder (not named by the user): skip it if it names another family
    role: str = ""  # why this one, e.g. "the VAE of checkpoint x.safetensors, which the workflow loads"

    def describe(self) -> str:
        if self.form == "tiny":
            return f"TAESD pair {self.location} + {Path(self.decoder or '').name}"
        return f"{self.form} {self.location}" + (f" ({self.role})" if self.role else "")


def comfyui_models(comfyui_dir: str | Path) -> Path:
    """``<root>/models``, also for the Windows portable layout ``<root>/ComfyUI/models``."""
    root = Path(comfyui_dir).expanduser()
    nested = root / "ComfyUI" / "models"
    return nested if not (root / "models").is_dir() and nested.is_dir() else root / "models"


def tiny_pair(path: Path) -> VaeSource | None:
    """The pair that ``path`` (an ``*_encoder``/``*_decoder`` file) belongs to, if both exist."""
    stem = path.stem
    for own, other in (("_encoder", "_decoder"), ("_decoder", "_encoder")):
        if stem.endswith(own):
            partner = path.with_name(stem[: -len(own)] + other + path.suffix)
            if partner.is_file():
                enc, dec = (path, partner) if own == "_encoder" else (partner, path)
                return VaeSource("tiny", str(enc), str(dec))
    return None


def tiny_pairs_in(folder: Path, family: str) -> list[VaeSource]:
    """Complete pairs in ``folder``: the family's own first, then others in TINY_PREFIXES order."""
    pairs = [p for f in sorted(folder.glob("*_encoder.*")) if f.suffix in TINY_SUFFIXES and (p := tiny_pair(f))]
    order = list(TINY_PREFIXES) if family == "auto" else [family]

    def rank(src: VaeSource) -> int:
        prefix = Path(src.location).stem[: -len("_encoder")].lower()
        return next((i for i, fam in enumerate(order) if TINY_PREFIXES[fam] == prefix), len(order))

    ranked = sorted(pairs, key=rank)
    return ranked if family == "auto" else [p for p in ranked if rank(p) == 0]


def checkpoint_has_vae(path: Path) -> bool:
    """True when a .safetensors checkpoint holds ``first_stage_model.*`` tensors (reads only its header)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return any(k.startswith(CHECKPOINT_VAE_PREFIXES) for k in handle.keys())
    except Exception:  # a corrupt or partly downloaded file holds no usable VAE; the search moves on
        return False


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~")) and ":" not in text and "\\" not in text


def _explicit(kind: str, source: str, family: str, tried: list[str]) -> list[VaeSource]:
    path = Path(source).expanduser()
    if kind == "tiny":
        if path.is_file():
            pair = tiny_pair(path)
            tried.append(f"{path} (explicit file)" + ("" if pair else ": its *_encoder/*_decoder partner is missing"))
            return [pair] if pair else []
        if path.is_dir():
            pairs = tiny_pairs_in(path, family)
            tried.append(f"{path} (explicit folder)" + ("" if pairs else f": no *_encoder/*_decoder pair for family {family}"))
            return pairs
        tried.append(f"{path} (explicit path): does not exist")
        return []
    if path.is_dir():
        for folder in (path, path / "vae"):
            if (folder / "config.json").is_file():
                tried.append(f"{folder} (explicit diffusers folder)")
                return [VaeSource("diffusers", str(folder))]
        tried.append(f"{path} (explicit folder): no config.json, neither there nor in vae/")
        return []
    if path.is_file():
        tried.append(f"{path} (explicit file)")
        return [VaeSource("file", str(path))]
    if _looks_like_hub_id(source):
        return [VaeSource("hub", source)]
    tried.append(f"{path} (explicit path): does not exist")
    return []


def _model_file(folder: Path, name: str) -> Path:
    """A model name as ComfyUI lists it (``sub/x.safetensors``, ``sub\\x.safetensors`` on Windows) in ``folder``."""
    return folder.joinpath(*PurePath(name.replace("\\", "/")).parts)


def _workflow_vae(models: Path, checkpoint: str | None, vae_file: str | None, tried: list[str]) -> list[VaeSource]:
    """The one VAE ComfyUI decodes the keyframes with. Any other file could belong to another model
    (two checkpoints in models/checkpoints are common), so none is tried in its place."""
    if vae_file:
        path = _model_file(models / "vae", vae_file)
        if path.is_file():
            return [VaeSource("file", str(path), role=f"the workflow's VAELoader loads {vae_file}")]
        tried.append(f"{path}: not found (the workflow's VAELoader names {vae_file})")
        return []
    path = _model_file(models / "checkpoints", checkpoint or "")
    if not path.is_file():
        tried.append(f"{path}: not found (the workflow uses checkpoint {checkpoint}; the VAEs of other checkpoints "
                     f"are not used, as they may not match it)")
    elif path.suffix == ".safetensors" and not checkpoint_has_vae(path):
        tried.append(f"{path}: checkpoint {checkpoint} holds no first_stage_model.* (VAE) tensors")
    else:
        return [VaeSource("file", str(path), role=f"the VAE of checkpoint {checkpoint}, which the workflow uses")]
    return []


def candidates(kind: str, source: str | None, family: str, comfyui_dir: str | Path | None,
               tried: list[str], *, checkpoint: str | None = None, vae_file: str | None = None,
               models_dir: str | Path | None = None) -> list[VaeSource]:
    """Sources to try in order. Appends a line to ``tried`` for every place looked at and passed over.

    An explicit ``source`` is the only candidate when given: a typo there must not silently
    load some other VAE. ``checkpoint`` / ``vae_file``: the names (as ComfyUI lists them) of the
    checkpoint and VAELoader file the workflow uses; when given, the kl search of ComfyUI's
    folders takes that VAE only. ``models_dir``: Reverie's own folder, searched first for a tiny pair
    (there and in its ``vae_approx``), so a CPU user only drops two files in and runs.
    """
    if source:
        return _explicit(kind, source, family, tried)
    found: list[VaeSource] = []
    if kind == "tiny" and models_dir is not None:
        for folder in (Path(models_dir), Path(models_dir) / "vae_approx"):
            pairs = tiny_pairs_in(folder, family) if folder.is_dir() else []
            if pairs or folder == Path(models_dir):
                tried.append(f"{folder}" + ("" if pairs else f": no *_encoder/*_decoder pair for family {family}"))
            found += pairs
    if comfyui_dir is None:
        tried.append("ComfyUI models folders: skipped, no comfyui_dir configured")
    else:
        models = comfyui_models(comfyui_dir)
        if kind == "tiny":
            folder = models / "vae_approx"
            pairs = tiny_pairs_in(folder, family) if folder.is_dir() else []
            tried.append(f"{folder}" + ("" if pairs else f": no *_encoder/*_decoder pair for family {family}"))
            found += pairs
        elif checkpoint or vae_file:
            found += _workflow_vae(models, checkpoint, vae_file, tried)
        else:
            vae_dir, ckpt_dir = models / "vae", models / "checkpoints"
            files = sorted(f for f in vae_dir.glob("*") if f.suffix in KL_FILE_SUFFIXES) if vae_dir.is_dir() else []
            tried.append(f"{vae_dir}" + ("" if files else ": no VAE files"))
            found += [VaeSource("file", str(f), searched=True) for f in files]
            ckpts = sorted(ckpt_dir.glob("*.safetensors")) if ckpt_dir.is_dir() else []
            with_vae = [f for f in ckpts if checkpoint_has_vae(f)]
            tried.append(f"{ckpt_dir}" + ("" if with_vae else ": no .safetensors checkpoint with first_stage_model.* tensors"))
            found += [VaeSource("file", str(f), searched=True) for f in with_vae]
    if kind == "kl":
        hub_id = HUB_DEFAULTS.get("sd1" if family == "auto" else family)
        if hub_id:
            found.append(VaeSource("hub", hub_id))
    return found
