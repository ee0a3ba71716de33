"""JobTracker on hand-made event streams: filtering, tolerance, which binary frames count."""

from __future__ import annotations

import json
import struct

import pytest

from backend.comfyui.errors import ExecutionFailed, Interrupted
from backend.comfyui.events import JobTracker

PID = "ours"


def _msg(kind: str, **data) -> str:
    return json.dumps({"type": kind, "data": data})


def _frame(image: bytes, fmt: int = 2) -> bytes:
    return struct.pack(">II", 1, fmt) + image


def _meta_frame(image: bytes, **meta) -> bytes:
    blob = json.dumps(meta).encode()
    return struct.pack(">II", 4, len(blob)) + blob + image


def test_done_only_on_executing_null_for_our_prompt():
    t = JobTracker(PID, set())
    t.feed(_msg("execution_success", prompt_id=PID))
    t.feed(_msg("executing", node=None, prompt_id="theirs"))
    assert not t.done
    t.feed(_msg("executing", node=None, prompt_id=PID))
    assert t.done


@pytest.mark.parametrize("message", [
    "not json", "[]", json.dumps({"type": "status"}), json.dumps({"data": {}}), _msg("brand_new_event", x=1),
    _msg("executing"), _msg("executed", prompt_id=PID), _msg("executed", prompt_id=PID, node="3", output=None),
    _msg("execution_error", prompt_id="theirs", node_type="KSampler"), b"\x00\x00", b"\x00\x00\x00\x09abcdefgh",
])
def test_odd_or_foreign_messages_are_ignored(message):
    t = JobTracker(PID, {"9"})
    t.feed(message)
    assert not t.done and t.error is None and t.ws_images == [] and t.executed == {}


def test_execution_error_is_recorded_with_node_and_first_line():
    t = JobTracker(PID, set())
    t.feed(_msg("execution_error", prompt_id=PID, node_id="3", node_type="KSampler",
                exception_type="torch.OutOfMemoryError", exception_message="out of memory\nmore detail"))
    assert isinstance(t.error, ExecutionFailed)
    assert str(t.error) == "KSampler (node 3) failed: torch.OutOfMemoryError: out of memory"
    assert not t.done                     # history is written before `executing null`: wait for it


def test_interruption_is_recorded():
    t = JobTracker(PID, set())
    t.feed(_msg("execution_interrupted", prompt_id=PID, node_id="4", node_type="ImageScale"))
    assert isinstance(t.error, Interrupted)


def test_binary_frames_count_only_while_our_websocket_output_executes():
    t = JobTracker(PID, {"9"})
    t.feed(_frame(b"stale"))                                            # nothing of ours running yet
    t.feed(_msg("executing", node="3", prompt_id=PID))
    t.feed(_frame(b"preview", fmt=1))                                   # KSampler preview
    t.feed(_msg("executing", node="9", prompt_id=PID))
    t.feed(_frame(b"result"))
    t.feed(_meta_frame(b"meta-result", node_id="9", prompt_id=PID))
    t.feed(_meta_frame(b"other-job", node_id="9", prompt_id="theirs"))
    assert t.ws_images == [b"result", b"meta-result"]


def test_executing_without_prompt_id_after_reconnect_sets_the_node():
    t = JobTracker(PID, {"9"})
    t.feed(_msg("executing", node="9"))
    t.feed(_frame(b"result"))
    assert t.ws_images == [b"result"] and not t.done


def test_executed_images_are_kept_per_node():
    t = JobTracker(PID, set())
    ref = {"filename": "k_00001_.png", "subfolder": "", "type": "output"}
    t.feed(_msg("executed", prompt_id=PID, node="9", output={"images": [ref]}))
    assert t.executed == {"9": [ref]}
