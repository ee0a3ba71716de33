"""Text that came from outside (ComfyUI's error messages and node names, prompts, file names)
made safe to log and to put into status files.

Why: JSON may carry lone surrogates ("\\udcff" is valid JSON, and Python decodes it into a str
that cannot be encoded as UTF-8), file names that are not UTF-8 decode to surrogates as well,
and a server message with newlines or control characters would forge lines in a log file.
"""

from __future__ import annotations

import re

from backend.logging_setup import escape_controls, escape_surrogates

_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")


def safe_text(value, limit: int = 2000) -> str:
    """Any value -> a str that encodes as UTF-8: lone surrogates and control characters become
    visible escapes (\\udcff, \\x1b); newlines and tabs are kept; cut at `limit` characters."""
    text = value if isinstance(value, str) else "" if value is None else str(value)
    # as_bytes=False: a surrogate in ComfyUI's JSON is shown as the \uNNNN escape the server sent
    text = escape_controls(escape_surrogates(text, as_bytes=False))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def safe_line(value, limit: int = 300) -> str:
    """safe_text on one line: line breaks become " / " (a log line stays one line)."""
    return _LINE_BREAKS.sub(" / ", safe_text(value, limit * 2).strip())[:limit]
