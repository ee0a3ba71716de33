"""Typed ComfyUI errors a caller can act on, and the rendering of server error bodies.

What each means for the daemon: ComfyUnavailable -> back off and retry; WorkflowRejected ->
the graph or config is wrong (retrying cannot help; show `.lines`); ExecutionFailed -> this run
failed (retry once or skip the keyframe); Interrupted -> cancelled, not an error; ComfyTimeout
-> the job took longer than job_timeout; JobLost -> the server restarted and forgot the job:
resubmit; ImagesNotReceived (a JobLost) -> the job succeeded but its SaveImageWebsocket images
never came over the socket: resubmitting the same graph may lose them again, so switch to a
SaveImage output (fetched over HTTP).
"""

from __future__ import annotations

from backend.comfyui.text import safe_line


class ComfyError(Exception):
    """Base of every error this package raises about the server."""


class ComfyUnavailable(ComfyError):
    """No ComfyUI answers at the URL (refused, reset, DNS, HTTP timeout)."""


class UnexpectedAnswer(ComfyError):
    """An HTTP answer with an unexpected status or body (an older or a different server); `.status`
    is the HTTP status code."""

    def __init__(self, message: str, status: int):
        self.status = status
        super().__init__(message)


class WorkflowRejected(ComfyError):
    """The server (or our preflight) refused the graph; `.lines` has one readable line per problem."""

    def __init__(self, summary: str, lines: list[str] | None = None):
        self.summary = summary
        self.lines = list(lines or [])
        super().__init__(summary + "".join(f"\n  - {line}" for line in self.lines))


class ExecutionFailed(ComfyError):
    """A node raised while running (corrupt input, OOM, ...), or the output was unusable."""

    def __init__(self, message: str, *, node_id: str | None = None, node_type: str | None = None,
                 exception_type: str | None = None):
        self.node_id, self.node_type, self.exception_type = node_id, node_type, exception_type
        super().__init__(message)


class Interrupted(ComfyError):
    """The prompt was interrupted (from ComfyUI's UI, or by us on close())."""


class ComfyTimeout(ComfyError):
    """The job did not finish within job_timeout seconds."""


class JobLost(ComfyError):
    """The server no longer knows the job (restarted mid-run) or its result: resubmit."""


class ImagesNotReceived(JobLost):
    """History says the job succeeded, but its SaveImageWebsocket frames never arrived (a silent,
    stalled or dropped socket). Only an output ComfyUI keeps on disk (SaveImage) can be fetched.
    `socket_dropped`: the socket broke during the job, so the frames were lost in transit (a
    hiccup: run the job again), not withheld by a socket that stays connected but silent."""

    def __init__(self, message: str, *, socket_dropped: bool = False):
        super().__init__(message)
        self.socket_dropped = socket_dropped


# A UI-format workflow ({"nodes": [...], "links": [...]}) sent as the prompt is refused with 500
# text/plain when its first value is a number ("last_node_id": 9), or with 400 invalid_prompt
# "a node is missing the class_type property" (Node ID '#nodes' / '#id') when it is a list or string.
UI_FORMAT_HINT = ("a workflow saved with 'Save' (UI format, with 'nodes' and 'links') cannot be queued: in ComfyUI "
                  "enable Settings > Dev mode and use 'Save (API Format)' / Workflow > Export (API)")


def _text(value) -> str:
    """A server-supplied value as one line that is safe to log and to write into status."""
    return safe_line(value)


def node_error_lines(node_errors) -> list[str]:
    """`node_errors` of a /prompt answer -> 'node 4 (CheckpointLoaderSimple) ckpt_name: ...' lines."""
    lines: list[str] = []
    if not isinstance(node_errors, dict):
        return lines
    for node_id, entry in node_errors.items():
        entry = entry if isinstance(entry, dict) else {}
        cls = _text(entry.get("class_type")) or "?"
        errors = entry.get("errors") if isinstance(entry.get("errors"), list) else []
        for err in errors or [{}]:
            err = err if isinstance(err, dict) else {"message": _text(err)}
            extra = err.get("extra_info") if isinstance(err.get("extra_info"), dict) else {}
            name = _text(extra.get("input_name"))
            message, details = _text(err.get("message")), _text(err.get("details"))
            text = message or "invalid"
            if details and details != name:
                text = f"{message}: {details}" if message else details
            where = f"node {node_id} ({cls})" + (f" input '{name}'" if name else "")
            lines.append(f"{where}: {text}")
    return lines


def rejection_from_body(status: int, body, text: str) -> WorkflowRejected:
    """Build the error for a refused POST /prompt from its JSON body (or text when not JSON)."""
    if status == 403:
        return WorkflowRejected("ComfyUI answered 403 Forbidden (its Origin check or a proxy refused the request)",
                                ["the request must not carry an Origin header that differs from Host"])
    if not isinstance(body, dict):
        first = _text((text or "").strip().splitlines()[0]) if (text or "").strip() else f"HTTP {status}"
        return WorkflowRejected(
            f"ComfyUI could not parse the workflow (HTTP {status}: {first})", [UI_FORMAT_HINT])
    error = body.get("error")
    lines = node_error_lines(body.get("node_errors"))
    if isinstance(error, dict):
        summary = _text(error.get("message")) or _text(error.get("type")) or f"HTTP {status}"
        details = _text(error.get("details"))
        if not lines and details:
            lines = [details]
        elif not lines and error.get("type"):
            lines = [_text(error.get("type"))]
        if "missing the class_type property" in _text(error.get("message")):
            lines.append(UI_FORMAT_HINT)
    else:
        summary = _text(error) or "ComfyUI rejected the workflow"
    return WorkflowRejected(f"ComfyUI rejected the workflow: {summary}", lines)


def execution_error(data: dict) -> ExecutionFailed:
    """execution_error data -> 'KSampler (node 3) failed: torch.OutOfMemoryError: first line'."""
    node_type, node_id = _text(data.get("node_type")) or None, _text(data.get("node_id")) or None
    exc_type = _text(data.get("exception_type")) or "error"
    first = str(data.get("exception_message") or "").strip().splitlines()
    line = _text(first[0]) if first else ""
    return ExecutionFailed(f"{node_type} (node {node_id}) failed: {exc_type}: {line}".rstrip(": "),
                           node_id=node_id, node_type=node_type, exception_type=exc_type)


def raise_for_history_status(entry: dict, prompt_id: str) -> None:
    """A history entry with status_str "error" -> the ExecutionFailed/Interrupted it records."""
    status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
    if status.get("status_str") != "error":
        return
    for message in reversed(status.get("messages") or []):
        if isinstance(message, list) and len(message) == 2 and isinstance(message[1], dict):
            if message[0] == "execution_error":
                raise execution_error(message[1])
            if message[0] == "execution_interrupted":
                raise Interrupted(f"ComfyUI interrupted prompt {prompt_id}")
    raise ExecutionFailed(f"prompt {prompt_id} ended with an error")
