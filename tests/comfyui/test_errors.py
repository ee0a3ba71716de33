"""Rendering of the server's error bodies into WorkflowRejected lines."""

from __future__ import annotations

import pytest

from backend.comfyui.errors import node_error_lines, rejection_from_body


def test_node_errors_render_one_line_each_with_node_class_input_and_message():
    body = {"4": {"class_type": "CheckpointLoaderSimple", "errors": [
        {"type": "value_not_in_list", "message": "Value not in list",
         "details": "ckpt_name: 'x.safetensors' not in []", "extra_info": {"input_name": "ckpt_name"}}]},
        "3": {"class_type": "KSampler", "errors": [
            {"message": "Value 1.5 bigger than max of 1.0", "details": "denoise", "extra_info": {"input_name": "denoise"}},
            {"message": "Required input is missing", "details": "model", "extra_info": {"input_name": "model"}}]}}
    assert node_error_lines(body) == [
        "node 4 (CheckpointLoaderSimple) input 'ckpt_name': Value not in list: ckpt_name: 'x.safetensors' not in []",
        "node 3 (KSampler) input 'denoise': Value 1.5 bigger than max of 1.0",
        "node 3 (KSampler) input 'model': Required input is missing",
    ]


@pytest.mark.parametrize("node_errors", [None, [], "x", {"1": None}, {"1": {"errors": "x"}}, {"1": {"errors": [3]}}])
def test_malformed_node_errors_never_raise(node_errors):
    assert isinstance(node_error_lines(node_errors), list)


@pytest.mark.parametrize("status, body, text, needle", [
    (403, None, "", "Origin"),
    (500, None, "500 Internal Server Error\n\nServer got itself in trouble", "Export (API)"),
    (400, {"error": "invalid prompt: old server", "node_errors": []}, "", "old server"),
    (400, {"error": {"type": "invalid_prompt", "message": "Cannot execute because node X does not exist.",
                     "details": "Node ID '#1'"}, "node_errors": {}}, "", "Node ID '#1'"),
    (400, {"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": ""},
           "node_errors": {}}, "", "Prompt has no outputs"),
])
def test_rejections_are_readable(status, body, text, needle):
    assert needle in str(rejection_from_body(status, body, text))


def test_server_text_with_lone_surrogates_newlines_and_escapes_becomes_one_encodable_line():
    from backend.comfyui.errors import execution_error, node_error_lines

    error = execution_error({"node_type": "KSampler\udcff", "node_id": "3\n4", "exception_type": "Bad\x1b[31m",
                             "exception_message": "first \udc80 line\nsecond line"})
    lines = node_error_lines({"4": {"class_type": "Load\udcffImage", "errors": [
        {"message": "Invalid image file:\r\n x\udcfe.png", "details": "", "extra_info": {"input_name": "image"}}]}})
    for text in (str(error), error.node_type, error.exception_type, *lines):
        text.encode("utf-8")
        assert "\n" not in text and "\r" not in text and "\x1b" not in text
    assert "KSampler\\udcff" in str(error) and "second line" not in str(error)
    assert "Load\\udcffImage" in lines[0]
