"""Finding the nodes that play each role in an API-format graph.

Order of evidence: explicit node ids from config, then `_meta.title` (newer exports keep the
titles a user typed, e.g. "Reverie Positive"), then the graph itself: the single LoadImage, the
single KSampler/KSamplerAdvanced, positive/negative by following the sampler's links back to a
text encoder, the output node. Ambiguity is an error naming the candidates, never a guess.
"""

from __future__ import annotations

from collections import deque

ROLES = ("image", "positive", "negative", "sampler", "seed", "denoise", "checkpoint", "size", "output")
OUTPUT_CLASSES = ("SaveImageWebsocket", "SaveImage", "PreviewImage")
SAMPLER_CLASSES = ("KSampler", "KSamplerAdvanced")
TITLES = {
    "image": ("reverie image", "reverie input", "input image"),
    "positive": ("reverie positive", "positive prompt", "positive"),
    "negative": ("reverie negative", "negative prompt", "negative"),
    "sampler": ("reverie sampler",),
    "checkpoint": ("reverie checkpoint",),
    "size": ("reverie size",),
    "output": ("reverie output",),
}
# an explicitly named node must carry the input its role writes
REQUIRED_INPUT = {"image": ("image",), "positive": ("text",), "negative": ("text",), "seed": ("seed", "noise_seed"),
                  "denoise": ("denoise",), "checkpoint": ("ckpt_name",), "size": ("width",),
                  "sampler": ("seed", "noise_seed", "steps")}


class RoleError(ValueError):
    """Raised with a message naming the role, the candidates and the config key to set."""


def _label(graph: dict, node_id: str) -> str:
    return f"node {node_id} ({graph[node_id].get('class_type')})"


def _pick(graph: dict, role: str, candidates: list[str], what: str) -> str | None:
    if len(candidates) > 1:
        names = ", ".join(_label(graph, n) for n in candidates)
        raise RoleError(f"cannot tell which node is the {role} ({what}): {names}; "
                        f"set comfyui.node_ids.{role} to one of them")
    return candidates[0] if candidates else None


def is_link(graph: dict, value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and value[0] in graph \
        and isinstance(value[1], int) and not isinstance(value[1], bool)


def find_roles(graph: dict, node_ids: dict | None = None) -> dict[str, str]:
    """role -> node id for every role found (roles the graph lacks are absent)."""
    roles: dict[str, str] = {}
    for role, node_id in (node_ids or {}).items():
        if role not in ROLES:
            raise RoleError(f"unknown role {role!r} in node_ids; roles are {', '.join(ROLES)}")
        node_id = str(node_id)
        if node_id not in graph:
            raise RoleError(f"node_ids.{role} = {node_id!r}, but the workflow has no node {node_id!r}")
        needed = REQUIRED_INPUT.get(role, ())
        if needed and not any(name in graph[node_id]["inputs"] for name in needed):
            raise RoleError(f"node_ids.{role} = {node_id!r} is {_label(graph, node_id)}, which has no "
                            f"{' / '.join(needed)} input")
        roles[role] = node_id
    for role, titles in TITLES.items():
        if role in roles:
            continue
        found = [n for n, node in graph.items() if _title(node) in titles]
        picked = _pick(graph, role, found, "several nodes carry its title")
        if picked is not None:
            roles[role] = picked
    _infer(graph, roles)
    return roles


def _title(node: dict) -> str:
    meta = node.get("_meta")
    title = meta.get("title") if isinstance(meta, dict) else None
    return title.strip().lower() if isinstance(title, str) else ""


def _of_class(graph: dict, classes: tuple[str, ...]) -> list[str]:
    return [n for n, node in graph.items() if node["class_type"] in classes]


def _infer(graph: dict, roles: dict[str, str]) -> None:
    if "sampler" not in roles:
        picked = _pick(graph, "sampler", _of_class(graph, SAMPLER_CLASSES), "several KSampler nodes")
        if picked is not None:
            roles["sampler"] = picked
    sampler = roles.get("sampler")
    if sampler is not None:
        inputs = graph[sampler]["inputs"]
        if "seed" not in roles and ("seed" in inputs or "noise_seed" in inputs):
            roles["seed"] = sampler
        if "denoise" not in roles and "denoise" in inputs:
            roles["denoise"] = sampler
        for role in ("positive", "negative"):
            if role not in roles and is_link(graph, inputs.get(role)):
                picked = _pick(graph, role, _trace_text(graph, inputs[role][0]), "several text encoders feed it")
                if picked is not None:
                    roles[role] = picked
    if "image" not in roles:
        picked = _pick(graph, "image", _of_class(graph, ("LoadImage",)), "several LoadImage nodes")
        if picked is not None:
            roles["image"] = picked
    if "checkpoint" not in roles:
        found = [n for n, node in graph.items() if "ckpt_name" in node["inputs"]]
        picked = _pick(graph, "checkpoint", found, "several checkpoint loaders")
        if picked is not None:
            roles["checkpoint"] = picked
    if "size" not in roles:
        found = [n for n, node in graph.items() if node["class_type"].startswith("Empty")
                 and "Latent" in node["class_type"] and "width" in node["inputs"]]
        picked = _pick(graph, "size", found, "several empty latents")
        if picked is not None:
            roles["size"] = picked
    if "output" not in roles:
        outputs = _of_class(graph, OUTPUT_CLASSES)
        websocket = _of_class(graph, ("SaveImageWebsocket",))
        if len(outputs) > 1 and len(websocket) == 1:
            outputs = websocket
        if not outputs:
            raise RoleError("the workflow has no image output: add a SaveImageWebsocket, SaveImage or "
                            "PreviewImage node")
        roles["output"] = _pick(graph, "output", outputs, "several image outputs")


def _trace_text(graph: dict, start: str) -> list[str]:
    """Nodes with a string `text` input reached by following links back from `start`."""
    found, seen, todo = [], {start}, deque([start])
    while todo:
        node_id = todo.popleft()
        inputs = graph[node_id]["inputs"]
        if isinstance(inputs.get("text"), str) or "TextEncode" in graph[node_id]["class_type"]:
            found.append(node_id)
            continue
        for value in inputs.values():
            if is_link(graph, value) and value[0] not in seen:
                seen.add(value[0])
                todo.append(value[0])
    return found
