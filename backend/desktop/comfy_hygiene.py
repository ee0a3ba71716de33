"""What in a ComfyUI setup makes long runs go bad, read from /object_info for `--check`.

- Custom (non-core) nodes in the keyframe workflow: each runs code outside ComfyUI's own, the
  usual source of a server whose RAM grows by the hour. ComfyUI tags every node class with the
  module that defined it: "nodes" and "comfy_extras.*" are its own, "custom_nodes.<pack>" is not.
- A crowded input/ folder: LoadImage's choices are the files at the top of input/, listed again
  each time a prompt is validated, so thousands of them turn a 0.1 s job into seconds.
"""

from __future__ import annotations

from typing import Iterable

CORE_PREFIXES = ("comfy_extras.", "comfy_api_nodes.", "comfy.")  # and "nodes" itself
# ComfyUI ships these in its own custom_nodes/ folder: its code, though tagged like a custom pack's
BUNDLED_PACKS = frozenset({"websocket_image_save"})
INPUT_FILES_WARN = 1000


def custom_nodes(class_types: Iterable[str], object_info: dict) -> list[tuple[str, str]]:
    """(node class, pack) for each class of the workflow that a custom node pack provides, sorted."""
    found = []
    for name in sorted(set(class_types)):
        module = str((object_info.get(name) or {}).get("python_module") or "nodes")
        if module != "nodes" and not module.startswith(CORE_PREFIXES):
            pack = module.split(".", 1)[1] if module.startswith("custom_nodes.") else module
            if pack not in BUNDLED_PACKS:
                found.append((name, pack))
    return found


def input_listing_size(object_info: dict) -> int | None:
    """How many files LoadImage lists (the top of ComfyUI's input/ folder); None when unknown."""
    spec = (object_info.get("LoadImage") or {}).get("input", {}).get("required", {}).get("image")
    choices = spec[0] if isinstance(spec, list) and spec else None
    if choices == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        choices = spec[1].get("options")   # the newer combo format: ["COMBO", {"options": [...]}]
    return len(choices) if isinstance(choices, list) else None


def hygiene_notes(class_types: Iterable[str], object_info: dict, input_warn: int = INPUT_FILES_WARN) -> list[str]:
    """One sentence per finding, for `--check` to print; [] when there is nothing to say."""
    notes = []
    custom = custom_nodes(class_types, object_info)
    if custom:
        listed = ", ".join(f"{name} ({pack})" for name, pack in custom)
        notes.append(f"the keyframe workflow uses custom nodes: {listed}; if ComfyUI's memory grows over a long "
                     f"run, try the workflow without them")
    files = input_listing_size(object_info)
    if files is not None and files > input_warn:
        notes.append(f"ComfyUI's input folder holds {files} files, listed again for every job (seconds each); "
                     f"move old ones out of it")
    return notes
