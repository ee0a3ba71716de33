"""Finding the nodes that play each role in an API-format graph.

Order of evidence: explicit node ids from config, then `_meta.title` (newer exports keep the
titles a user typed, e.g. "Reverie Positive"), then the graph itself: the single LoadImage, the
single KSampler/KSamplerAdvanced, positive/negative by following the sampler's links back to a
text encoder, the output node. Ambiguity is an error naming the candidates, never a guess.
"""

from __future__ import annotations

import logging
from collections import deque

log = logging.getLogger(__name__)

ROLES = ("image", "positive", "negative", "sampler", "seed", "denoise", "checkpoint", "size", "output",
         "reference", "ipadapter")
OUTPUT_CLASSES = ("SaveImageWebsocket", "SaveImage", "PreviewImage")
SAMPLER_CLASSES = ("KSampler", "KSamplerAdvanced")
IPADAPTER_CLASSES = ("IPAdapterAdvanced",)
TITLES = {
    "image": ("reverie image", "reverie input", "input image"),
    "positive": ("reverie positive", "positive prompt", "positive"),
    "negative": ("reverie negative", "negative prompt", "negative"),
    "sampler": ("reverie sampler",),
    "checkpoint": ("reverie checkpoint",),
    "size": ("reverie size",),
    "output": ("reverie output",),
    # IP-Adapter workflows: the LoadImage of the reference picture and the node whose weight is set
    "reference": ("reverie reference",),
    "ipadapter": ("reverie ipadapter",),
}
# the prompt inputs of text encoders: CLIPTextEncode `text`, CLIPTextEncodeSDXL `text_g` + `text_l`,
# CLIPTextEncodeSD3 / CLIPTextEncodeFlux `clip_l`, `clip_g`, `t5xxl`; a prompt is written to each one present
TEXT_INPUTS = ("text", "text_g", "text_l", "clip_l", "clip_g", "t5xxl")
# conditioning that passes through one of these carries no text: a prompt written upstream changes nothing
TEXTLESS_CLASSES = ("ConditioningZeroOut",)
# an explicitly named node must carry the input its role writes
REQUIRED_INPUT = {"image": ("image",), "positive": TEXT_INPUTS, "negative": TEXT_INPUTS, "seed": ("seed", "noise_seed"),
                  "denoise": ("denoise",), "checkpoint": ("ckpt_name",), "size": ("width",),
                  "sampler": ("seed", "noise_seed", "steps"), "reference": ("image",),
                  "ipadapter": ("weight",)}


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
            what = f"text input ({', '.join(needed)})" if needed is TEXT_INPUTS else f"{' / '.join(needed)} input"
            raise RoleError(f"node_ids.{role} = {node_id!r} is {_label(graph, node_id)}, which has no {what}")
        roles[role] = node_id
    for role, titles in TITLES.items():
        if role in roles:
            continue
        found = [n for n, node in graph.items() if _title(node) in titles]
        picked = _pick(graph, role, found, "several nodes carry its title")
        if picked is not None:
            roles[role] = picked
    _infer(graph, roles)
    if "negative" in roles and roles.get("negative") == roles.get("positive"):
        # writing the negative there would replace the positive prompt (a sampler fed by one encoder
        # twice, or a negative made by ConditioningZeroOut of the positive)
        log.warning("the workflow's negative conditioning comes from the positive prompt's %s, so the "
                    "configured negative prompts are not applied (give the sampler its own negative "
                    "CLIPTextEncode, or set comfyui.node_ids.negative)", _label(graph, roles["positive"]))
        del roles["negative"]
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
                found, textless = _trace_text(graph, inputs[role][0])
                picked = _pick(graph, role, found, "several text encoders feed it")
                if picked is not None:
                    if not any(name in graph[picked]["inputs"] for name in TEXT_INPUTS):
                        raise RoleError(f"the {role} prompt goes to {_label(graph, picked)}, which has none of "
                                        f"the text inputs Reverie can write ({', '.join(TEXT_INPUTS)}); use a "
                                        f"CLIPTextEncode there or set comfyui.node_ids.{role}")
                    roles[role] = picked
                elif textless and role == "negative":
                    log.warning("the workflow's negative conditioning comes from %s, which has no text, so the "
                                "configured negative prompts are not applied", ", ".join(
                                    _label(graph, n) for n in textless))
    if "ipadapter" not in roles:
        picked = _pick(graph, "ipadapter", _of_class(graph, IPADAPTER_CLASSES), "several IPAdapterAdvanced nodes")
        if picked is not None:
            roles["ipadapter"] = picked
    if "reference" not in roles and "ipadapter" in roles:
        link = graph[roles["ipadapter"]]["inputs"].get("image")
        if is_link(graph, link) and graph[link[0]]["class_type"] == "LoadImage":
            roles["reference"] = link[0]
    if "image" not in roles:
        loaders = [n for n in _of_class(graph, ("LoadImage",)) if n != roles.get("reference")]
        picked = _pick(graph, "image", loaders, "several LoadImage nodes")
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


def _trace_text(graph: dict, start: str) -> tuple[list[str], list[str]]:
    """(text encoders, text-less nodes) reached by following links back from `start`: a text
    encoder has a string text input or "TextEncode" in its class; the search stops at both."""
    found, textless, seen, todo = [], [], {start}, deque([start])
    while todo:
        node_id = todo.popleft()
        inputs = graph[node_id]["inputs"]
        if graph[node_id]["class_type"] in TEXTLESS_CLASSES:
            textless.append(node_id)
            continue
        if any(isinstance(inputs.get(name), str) for name in TEXT_INPUTS) \
                or "TextEncode" in graph[node_id]["class_type"]:
            found.append(node_id)
            continue
        for value in inputs.values():
            if is_link(graph, value) and value[0] not in seen:
                seen.add(value[0])
                todo.append(value[0])
    return found, textless
