"""Prompt validation with the same outcomes and body shapes as ComfyUI 0.3.75 (as recorded).

`validate(prompt, info, image_exists)` returns a `Verdict`: either an HTTP status with the exact
JSON body the real server sent, or the list of outputs that may run plus the `node_errors` of
the outputs that may not (the real server answers 200 with those when some outputs are valid).
The real server walks the graph with `for x in prompt: if 'class_type' not in prompt[x]`, so a
value that is a list (a UI export sent as "prompt": "nodes" first) or a string is answered 400
invalid_prompt "missing the class_type property", while a number, bool or null (a real UI
export starts with "last_node_id": 9, or "id" then "revision": 0) makes it raise and answer
500 text/plain: `MalformedPrompt`. Same for a prompt that is neither a dict nor empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


class MalformedPrompt(Exception):
    """The real server raises inside its handler here and answers 500 text/plain."""


@dataclass
class Verdict:
    status: int = 200
    body: dict | None = None                       # error body when status != 200
    outputs: list[str] = field(default_factory=list)
    node_errors: dict = field(default_factory=dict)


def _err(kind: str, message: str, details: str, extra: dict | None = None) -> dict:
    return {"type": kind, "message": message, "details": details, "extra_info": extra or {}}


def _top(kind: str, message: str, details: str = "") -> Verdict:
    return Verdict(400, {"error": _err(kind, message, details), "node_errors": {}})


def validate(prompt, info: dict, image_exists: Callable[[str], bool]) -> Verdict:
    if not isinstance(prompt, dict):
        if isinstance(prompt, (list, str)) and not prompt:       # nothing to iterate over
            return _top("prompt_no_outputs", "Prompt has no outputs")
        raise MalformedPrompt("prompt")                           # prompt[x] raises on the first item
    outputs = []
    for node_id, node in prompt.items():
        try:
            has_class_type = "class_type" in node                 # the real server's very test
        except TypeError:
            raise MalformedPrompt(node_id) from None              # a number, bool or null
        if not has_class_type:
            return _top("invalid_prompt", "Cannot execute because a node is missing the class_type property.",
                        f"Node ID '#{node_id}'")
        if not isinstance(node, dict):
            raise MalformedPrompt(node_id)                        # a str holding "class_type": str['x'] raises
        cls = node["class_type"]
        if isinstance(cls, (list, dict)):
            raise MalformedPrompt(node_id)                        # unhashable: NODE_CLASS_MAPPINGS.get raises
        if not isinstance(cls, str) or cls not in info:
            return _top("invalid_prompt", f"Cannot execute because node {cls} does not exist.",
                        f"Node ID '#{node_id}'")
        if info[cls]["output_node"]:
            outputs.append(node_id)
    if not outputs:
        return _top("prompt_no_outputs", "Prompt has no outputs")

    checker = _Checker(prompt, info, image_exists)
    good, node_errors, own_lines = [], {}, []
    for out in outputs:
        checker.reset()
        if checker.check(out):
            good.append(out)
            continue
        own_lines += [f"{e['message']}: {e['details']}" for e in checker.errors.get(out, [])]
        for node_id, errors in checker.errors.items():
            entry = node_errors.setdefault(node_id, {"errors": errors, "dependent_outputs": [],
                                                     "class_type": prompt[node_id]["class_type"]})
            entry["dependent_outputs"].append(out)
    if not good:
        body = {"error": _err("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                              "\n".join(own_lines)), "node_errors": node_errors}
        return Verdict(400, body)
    return Verdict(200, outputs=good, node_errors=node_errors)


class _Checker:
    """Recursive input validation of one output's dependency tree."""

    def __init__(self, prompt: dict, info: dict, image_exists: Callable[[str], bool]):
        self.prompt, self.info, self.image_exists = prompt, info, image_exists
        self.reset()

    def reset(self) -> None:
        self.done: dict[str, bool] = {}
        self.errors: dict[str, list] = {}

    def check(self, node_id: str) -> bool:
        if node_id in self.done:
            return self.done[node_id]
        self.done[node_id] = True                       # breaks cycles like the real server's cache
        node = self.prompt[node_id]
        schema = self.info[node["class_type"]]
        inputs = node.get("inputs") if isinstance(node.get("inputs"), dict) else {}
        errors, valid = [], True
        for name, config in schema["input"]["required"].items():
            if name not in inputs:
                errors.append(_err("required_input_missing", "Required input is missing", name,
                                   {"input_name": name}))
                continue
            value = inputs[name]
            if isinstance(value, list):
                ok, err = self._check_link(name, config, value)
                valid &= ok
                if err:
                    errors.append(err)
                continue
            err = self._check_value(node["class_type"], name, config, value)
            if err:
                errors.append(err)
        if errors:
            self.errors[node_id] = errors
        self.done[node_id] = valid and not errors
        return self.done[node_id]

    def _check_link(self, name: str, config: list, value: list) -> tuple[bool, dict | None]:
        if len(value) != 2 or str(value[0]) not in self.prompt or not isinstance(value[1], int):
            return False, _err("bad_linked_input", "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                               name, {"input_name": name, "input_config": config, "received_value": value})
        source = str(value[0])
        out_types = self.info[self.prompt[source]["class_type"]]["output"]
        received = out_types[value[1]] if 0 <= value[1] < len(out_types) else None
        if received != config[0]:
            return False, _err("return_type_mismatch", "Return type mismatch between linked nodes",
                               f"{name}, received_type({received}) mismatch input_type({config[0]})",
                               {"input_name": name, "input_config": config, "received_type": received,
                                "linked_node": value})
        return self.check(source), None

    def _check_value(self, cls: str, name: str, config: list, value) -> dict | None:
        kind, opts = config[0], config[1] if len(config) > 1 else {}
        extra = {"input_name": name, "input_config": config, "received_value": value}
        if cls == "LoadImage" and name == "image":      # its VALIDATE_INPUTS replaces the combo check
            if not isinstance(value, str) or not self.image_exists(value):
                return _err("custom_validation_failed", "Custom validation failed for node",
                            f"{name} - Invalid image file: {value}", {"input_name": name})
            return None
        if isinstance(kind, list):
            if value not in kind:
                # the real server abbreviates long lists (scanned model paths) and drops input_config
                listed = f"(list of length {len(kind)})" if len(kind) > 20 else str(kind)
                if len(kind) > 20:
                    extra["input_config"] = None
                return _err("value_not_in_list", "Value not in list", f"{name}: '{value}' not in {listed}", extra)
            return None
        if kind in ("INT", "FLOAT"):
            try:
                value = int(value) if kind == "INT" else float(value)
            except (TypeError, ValueError) as exc:
                return _err("invalid_input_type", f"Failed to convert an input value to a {kind} value",
                            f"{name}, {extra['received_value']}, {exc}", {**extra, "exception_message": str(exc)})
            extra["received_value"] = value
            if "min" in opts and value < opts["min"]:
                return _err("value_smaller_than_min", f"Value {value} smaller than min of {opts['min']}", name, extra)
            if "max" in opts and value > opts["max"]:
                return _err("value_bigger_than_max", f"Value {value} bigger than max of {opts['max']}", name, extra)
        return None
