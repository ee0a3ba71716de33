"""API-format ComfyUI workflows: load (built-in or a user's export), find roles, patch a copy.

Only the API format can be queued ("Save (API Format)" / Workflow > Export (API) in ComfyUI);
the UI format (`{"nodes": [...], "links": [...]}`) makes the server answer 500 text/plain, so it
is detected here with instructions instead. `patch()` never mutates the loaded graph.

Disk: SaveImage keeps every keyframe in ComfyUI's output folder forever (and PreviewImage in its
temp folder until ComfyUI restarts). `with_websocket_output()` swaps such an output node for
SaveImageWebsocket, which writes nothing; `with_save_output()` is the fallback for servers that
lack it, saving under `output/reverie/keyframe_#####_.png`.
"""

from __future__ import annotations

import copy
import json
import numbers
from pathlib import Path

from backend.comfyui.roles import TEXT_INPUTS, RoleError, find_roles

BUILTINS = {"builtin:img2img": "img2img_sd15.json", "builtin:txt2img": "txt2img_sd15.json",
            "builtin:img2img_ipadapter": "img2img_ipadapter_sd15.json"}
SAVE_PREFIX = "reverie/keyframe"
_EXPORT_HINT = ("this is a UI-format workflow (it has 'nodes' and 'links'); ComfyUI can only queue the API "
                "format: open it in ComfyUI, enable Settings > Comfy > Dev mode if needed, and use "
                "Workflow > Export (API) / 'Save (API Format)'")


class WorkflowError(ValueError):
    """The workflow file or a patch value is unusable; the message says what and how to fix it."""


def load_workflow(spec: str | Path, node_ids: dict | None = None) -> "Workflow":
    """spec: "builtin:img2img" | "builtin:txt2img" | "builtin:img2img_ipadapter" | path to an API-format JSON file."""
    text_spec = str(spec)
    path = Path(__file__).parent / "workflows" / BUILTINS[text_spec] if text_spec in BUILTINS else Path(spec)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowError(f"cannot read workflow {path}: {exc}") from exc
    # RecursionError: json (and deepcopy later) recurse per nesting level; "[" * 100000 is a
    # few hundred KB of valid-looking text that must be refused, not crash the daemon.
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise WorkflowError(f"workflow {path} is not valid JSON: {exc}") from exc
    except RecursionError:
        raise WorkflowError(f"workflow {path} is nested too deeply to be a ComfyUI workflow") from None
    try:
        return parse_workflow(data, source=text_spec, node_ids=node_ids)
    except RecursionError:
        raise WorkflowError(f"workflow {path} is nested too deeply to be a ComfyUI workflow") from None


def parse_workflow(data, source: str = "<dict>", node_ids: dict | None = None) -> "Workflow":
    """Validate the shape of an API-format graph (already parsed JSON) and find its roles."""
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict) \
            and set(data) <= {"prompt", "client_id", "prompt_id", "extra_data"}:
        data = data["prompt"]                       # a saved /prompt request body
    if isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data:
        raise WorkflowError(f"{source}: {_EXPORT_HINT}")
    if not isinstance(data, dict) or not data:
        raise WorkflowError(f"{source}: an API-format workflow is a JSON object of nodes "
                            f"{{\"id\": {{\"class_type\": ..., \"inputs\": {{...}}}}}}")
    for node_id, node in data.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str) or not node["class_type"]:
            raise WorkflowError(f"{source}: node {node_id!r} has no class_type (is this an API-format export?)")
        if not isinstance(node.get("inputs", {}), dict):
            raise WorkflowError(f"{source}: node {node_id!r} has inputs that are not an object")
    graph = {str(k): {**v, "inputs": dict(v.get("inputs", {}))} for k, v in data.items()}
    if node_ids is not None and not isinstance(node_ids, dict):
        raise WorkflowError(f"{source}: node_ids must be a mapping of role -> node id")
    try:
        roles = find_roles(graph, node_ids)
    except RoleError as exc:
        raise WorkflowError(f"{source}: {exc}") from exc
    return Workflow(graph, roles, source)


class Workflow:
    """A loaded graph and its roles (role -> node id). Immutable in use: patch() returns copies."""

    def __init__(self, graph: dict, roles: dict[str, str], source: str):
        self._graph = copy.deepcopy(graph)
        self.roles = dict(roles)
        self.source = source

    @property
    def graph(self) -> dict:
        """A deep copy of the unpatched graph."""
        return copy.deepcopy(self._graph)

    @property
    def output_node(self) -> str:
        return self.roles["output"]

    @property
    def output_class(self) -> str:
        return self._graph[self.output_node]["class_type"]

    def class_types(self) -> set[str]:
        return {node["class_type"] for node in self._graph.values()}

    def checkpoint(self) -> str | None:
        node = self.roles.get("checkpoint")
        value = self._graph[node]["inputs"].get("ckpt_name") if node else None
        return value if isinstance(value, str) else None

    def sampler_settings(self) -> dict:
        """The sampler node's literal inputs (sampler_name, scheduler, ...), {} without one."""
        node = self.roles.get("sampler")
        return {k: v for k, v in self._graph[node]["inputs"].items() if not isinstance(v, list)} if node else {}

    def with_websocket_output(self) -> "Workflow":
        """Same graph with a SaveImage/PreviewImage output replaced by SaveImageWebsocket (no disk)."""
        return self._swap_output("SaveImageWebsocket", {})

    def with_save_output(self, prefix: str = SAVE_PREFIX) -> "Workflow":
        """Same graph with a SaveImageWebsocket output replaced by SaveImage(prefix)."""
        return self._swap_output("SaveImage", {"filename_prefix": prefix})

    def _swap_output(self, cls: str, extra: dict) -> "Workflow":
        node = self._graph[self.output_node]
        if node["class_type"] == cls or "images" not in node["inputs"]:
            return self
        graph = copy.deepcopy(self._graph)
        graph[self.output_node] = {"class_type": cls, "inputs": {"images": node["inputs"]["images"], **extra},
                                   "_meta": copy.deepcopy(node.get("_meta", {"title": "Reverie Output"}))}
        return Workflow(graph, self.roles, self.source)

    def patch(self, *, image=None, positive=None, negative=None, seed=None, denoise=None, steps=None, cfg=None,
              sampler=None, scheduler=None, checkpoint=None, width=None, height=None,
              filename_prefix=None, reference=None, reference_weight=None) -> dict:
        """A patched deep copy of the graph. Values for roles the graph lacks are ignored, except
        `image` (an img2img call on a graph without LoadImage is a configuration error).

        Ranges: seed 0..2**64-1, denoise 0..1, steps 1..10000, cfg 0..100, width/height positive
        multiples of 8 (<= 16384); strings non-empty where a name is expected. `reference` (an
        uploaded image name) and `reference_weight` (-1..5) go to an IP-Adapter graph's reference
        LoadImage and IPAdapterAdvanced; other graphs ignore them.
        """
        graph = copy.deepcopy(self._graph)
        if image is not None and "image" not in self.roles:
            raise WorkflowError(f"{self.source}: has no LoadImage node to receive the input image")
        _check_str("image", image, empty_ok=False)
        _check_str("reference", reference, empty_ok=False)
        _check_number("reference_weight", reference_weight, -1.0, 5.0)
        for name, value in (("positive", positive), ("negative", negative)):
            _check_str(name, value, empty_ok=True)
        for name, value in (("sampler", sampler), ("scheduler", scheduler), ("checkpoint", checkpoint),
                            ("filename_prefix", filename_prefix)):
            _check_str(name, value, empty_ok=False)
        _check_number("seed", seed, 0, 2 ** 64 - 1, integer=True)
        _check_number("denoise", denoise, 0.0, 1.0)
        _check_number("steps", steps, 1, 10000, integer=True)
        _check_number("cfg", cfg, 0.0, 100.0)
        for name, value in (("width", width), ("height", height)):
            _check_number(name, value, 8, 16384, integer=True)
            if value is not None and value % 8:
                raise WorkflowError(f"{name} must be a multiple of 8, got {value}")

        def put(role: str, names: tuple[str, ...], value, *, every: bool = False) -> None:
            """Write `value` to the first of `names` the role's node has (to each of them: `every`)."""
            node = self.roles.get(role)
            if value is None or node is None:
                return
            for name in names:
                if name in graph[node]["inputs"]:
                    graph[node]["inputs"][name] = value
                    if not every:
                        return

        put("image", ("image",), image)
        # every prompt input of the encoder: CLIPTextEncodeSDXL has text_g and text_l
        put("positive", TEXT_INPUTS, positive, every=True)
        put("negative", TEXT_INPUTS, negative, every=True)
        put("seed", ("seed", "noise_seed"), seed)
        put("denoise", ("denoise",), None if denoise is None else float(denoise))
        put("sampler", ("steps",), steps)
        put("sampler", ("cfg",), None if cfg is None else float(cfg))
        put("sampler", ("sampler_name",), sampler)
        put("sampler", ("scheduler",), scheduler)
        put("checkpoint", ("ckpt_name",), checkpoint)
        put("size", ("width",), width)
        put("size", ("height",), height)
        put("output", ("filename_prefix",), filename_prefix)
        put("reference", ("image",), reference)
        put("ipadapter", ("weight",), None if reference_weight is None else float(reference_weight))
        return graph


def _check_str(name: str, value, *, empty_ok: bool) -> None:
    if value is not None and (not isinstance(value, str) or (not empty_ok and not value.strip())):
        raise WorkflowError(f"{name} must be a {'' if empty_ok else 'non-empty '}string, got {value!r}")


def _check_number(name: str, value, low, high, *, integer: bool = False) -> None:
    if value is None:
        return
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
        raise WorkflowError(f"{name} must be {'an integer' if integer else 'a number'} in "
                            f"[{low}, {high}], got {value!r}")
