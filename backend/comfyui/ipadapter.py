"""What an IP-Adapter workflow needs from the server: the ComfyUI_IPAdapter_plus nodes, and the
model files its IPAdapterUnifiedLoader preset looks for in models/ipadapter and models/clip_vision.

The loader finds its files by name, so the check compares the server's file listings (GET
/models/<folder>, or the IPAdapterModelLoader / CLIPVisionLoader choices in /object_info on
servers without those routes) with the names each SD1.5 preset wants. It returns problems as
sentences that say what to install; the caller joins them into its preflight error.
"""

from __future__ import annotations

import logging
import re

from backend.comfyui.errors import ComfyError, ComfyUnavailable, UnexpectedAnswer

log = logging.getLogger(__name__)

NODES = ("IPAdapterUnifiedLoader", "IPAdapterAdvanced")
PACKAGE = "ComfyUI_IPAdapter_plus"
VIT_H = "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"
VIT_G = "CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors"
# preset -> (models/ipadapter file, models/clip_vision file), the SD1.5 names the loader accepts
PRESETS = {
    "LIGHT - SD1.5 only (low strength)": ("ip-adapter_sd15_light_v11.bin", VIT_H),
    "STANDARD (medium strength)": ("ip-adapter_sd15.safetensors", VIT_H),
    "VIT-G (medium strength)": ("ip-adapter_sd15_vit-G.safetensors", VIT_G),
    "PLUS (high strength)": ("ip-adapter-plus_sd15.safetensors", VIT_H),
    "PLUS FACE (portraits)": ("ip-adapter-plus-face_sd15.safetensors", VIT_H),
    "FULL FACE - SD1.5 only (portraits stronger)": ("ip-adapter-full-face_sd15.safetensors", VIT_H),
}
# where /object_info lists each folder when the server has no /models routes
_LISTED_BY = {"ipadapter": ("IPAdapterModelLoader", "ipadapter_file"), "clip_vision": ("CLIPVisionLoader", "clip_name")}


def uses_ipadapter(class_types: set[str]) -> bool:
    return any(cls.startswith("IPAdapter") for cls in class_types)


def presets(graph: dict) -> list[str]:
    return sorted({node["inputs"]["preset"] for node in graph.values()
                   if node["class_type"] == "IPAdapterUnifiedLoader" and isinstance(node["inputs"].get("preset"), str)})


def missing_nodes(class_types: set[str], info: dict) -> str | None:
    """The sentence naming the IP-Adapter node classes the server lacks, None when it has them."""
    wanted = sorted((class_types & set(NODES)) | {c for c in class_types if c.startswith("IPAdapter")})
    missing = [c for c in wanted if c not in info]
    if not missing:
        return None
    return (f"ComfyUI has no IP-Adapter node {', '.join(missing)}: install the {PACKAGE} custom nodes "
            f"(ComfyUI Manager, or git clone https://github.com/cubiq/{PACKAGE} into ComfyUI/custom_nodes) "
            f"and restart ComfyUI")


def missing_models(client, graph: dict, info: dict) -> list[str]:
    """Sentences naming the model files each preset in `graph` needs and the server lacks."""
    problems = []
    listings: dict[str, list[str] | None] = {}
    for preset in presets(graph):
        if preset not in PRESETS:
            problems.append(f"IP-Adapter preset {preset!r} is not one Reverie knows for SD1.5; use one of "
                            f"{', '.join(PRESETS)}")
            continue
        for folder, name in zip(("ipadapter", "clip_vision"), PRESETS[preset]):
            if folder not in listings:
                listings[folder] = _listing(client, folder, info)
            files = listings[folder]
            if files is not None and not _has(files, name):
                problems.append(f"the IP-Adapter preset {preset!r} needs {name} in ComfyUI's models/{folder} "
                                f"folder, which has {', '.join(files) if files else 'no files'}: download it "
                                f"there (see the {PACKAGE} README) and restart ComfyUI")
    return problems


# a CLIP vision file counts when its name carries all the words of one of these (the loader
# finds it by name, and people keep the Hugging Face names or rename it after the SD version)
_CLIP_WORDS = {VIT_H: (("vith14", "b79k"), ("sd15", "model"), ("ipadapter", "sd15")),
               VIT_G: (("vitbigg14", "b160k"), ("sdxl", "model"), ("ipadapter", "sdxl"))}


def _squash(name: str, *, folders: bool = False) -> str:
    """Lower-case letters and digits of a file's name without extension (and folders unless `folders`)."""
    path = name.replace("\\", "/")
    base = path if folders else path.rsplit("/", 1)[-1]
    stem = base.rsplit(".", 1)[0] if "." in base.rsplit("/", 1)[-1] else base
    return re.sub(r"[^a-z0-9]", "", stem.lower())


def _has(files: list[str], name: str) -> bool:
    """Whether `files` holds `name`: in any subfolder, with any extension, separators and case aside
    (a CLIP vision file also by the words of _CLIP_WORDS in its relative path)."""
    if name in _CLIP_WORDS:
        return any(all(w in _squash(f, folders=True) for w in words) for f in files for words in _CLIP_WORDS[name])
    return any(_squash(f) == _squash(name) for f in files)


def _listing(client, folder: str, info: dict) -> list[str] | None:
    """File names in models/<folder>; None (with a warning) when the server says neither way."""
    try:
        return [str(n) for n in client.get_json(f"/models/{folder}", expect=list)]
    except ComfyUnavailable:
        raise
    except UnexpectedAnswer as exc:
        if exc.status != 404:
            log.warning("could not list ComfyUI's models/%s (%s); skipping that check", folder, exc)
            return None
    except ComfyError as exc:
        log.warning("could not list ComfyUI's models/%s (%s); skipping that check", folder, exc)
        return None
    node, key = _LISTED_BY[folder]
    spec = info.get(node, {}).get("input", {}).get("required", {}).get(key)
    choices = spec[0] if isinstance(spec, list) and spec else None
    if choices == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        choices = spec[1].get("options")
    if not isinstance(choices, list):
        log.warning("ComfyUI lists its models/%s neither at /models/%s nor in %s; skipping that check",
                    folder, folder, node)
        return None
    return [str(n) for n in choices]
