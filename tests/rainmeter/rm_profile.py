"""What Rainmeter's !WriteKeyValue does to a file, re-implemented for tests off Windows.

Read from Rainmeter's source (Common/IniFile.cpp, ApplyWriteKey/Encode/WriteBytes, which
mirrors WritePrivateProfileString): the file is decoded (UTF-16LE with or without BOM, else
ANSI), the first matching section (case-insensitive) and the first matching key in it are
found; an existing key gets its value replaced in place up to the line end and the line ends
in CRLF; a missing key is appended after the section's last non-blank line; a missing section
is appended at the end. The text is re-encoded in the file's own encoding (BOM kept) and written
back in place: CreateFile(CREATE_ALWAYS, share 0), so the file is empty for a moment and then
grows. ``write_key(..., pause_after_truncate=...)`` lets tests catch it in that window.
"""

from __future__ import annotations

import time
from pathlib import Path


def _decode(data: bytes) -> tuple[str, str, bool]:
    """bytes -> (text, encoding 'utf-16-le'|'cp1252', has_bom)."""
    if data[:2] == b"\xff\xfe":
        return data[2:].decode("utf-16-le"), "utf-16-le", True
    if len(data) >= 2 and b"\x00" in data:
        return data.decode("utf-16-le"), "utf-16-le", False
    return data.decode("cp1252"), "cp1252", False


def _lines(text: str) -> list[tuple[int, int, int]]:
    """(begin, content_end, end) per line; CR, LF and CRLF all end a line."""
    out, pos = [], 0
    while pos < len(text):
        ends = [i for i in (text.find("\r", pos), text.find("\n", pos)) if i != -1]
        line_end = min(ends) if ends else len(text)
        nxt = line_end
        if nxt < len(text):
            nxt += 1
            if text[line_end] == "\r" and nxt < len(text) and text[nxt] == "\n":
                nxt += 1
        out.append((pos, line_end, nxt))
        pos = nxt
    return out


def _section_name(line: str) -> str | None:
    line = line.strip()
    if line.startswith("[") and "]" in line:
        return line[1 : line.index("]")].strip()
    return None


def apply_write_key(text: str, section: str, key: str, value: str) -> str:
    """The text after !WriteKeyValue section key value (ApplyWriteKey)."""
    lines = _lines(text)
    content = [text[b:c] for b, c, _ in lines]
    header = next((i for i, ln in enumerate(content)
                   if (_section_name(ln) or "\0").lower() == section.strip().lower()), None)
    if header is None:
        if text and text[-1] not in "\r\n":
            text += "\r\n"
        return text + f"[{section}]\r\n{key}={value}\r\n"
    end = next((i for i in range(header + 1, len(lines)) if _section_name(content[i]) is not None), len(lines))
    for i in range(header + 1, end):
        stripped = content[i].strip()
        if not stripped or stripped.startswith(";") or "=" not in stripped:
            continue
        if stripped.split("=", 1)[0].strip().lower() == key.strip().lower():
            begin, _, line_end = lines[i]
            eq = begin + content[i].index("=")
            return text[: eq + 1] + value + "\r\n" + text[line_end:]
    separator = end
    while separator > header + 1 and not content[separator - 1].strip():
        separator -= 1
    offset = lines[separator][0] if separator < len(lines) else len(text)
    prefix = "\r\n" if offset > 0 and text[offset - 1] not in "\r\n" else ""
    return text[:offset] + prefix + f"{key}={value}\r\n" + text[offset:]


def write_key(path: Path, section: str, key: str, value: str, *, pause_after_truncate: float = 0.0,
              chunk: int = 0) -> None:
    """!WriteKeyValue on a real file, written in place the way Rainmeter writes it.

    pause_after_truncate: seconds the file stays empty (a reader's worst moment);
    chunk: if > 0, write in pieces of this many bytes with a tiny pause between (a cut-off file)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"!WriteKeyValue: File not found: {path}")
    text, encoding, bom = _decode(path.read_bytes())
    data = (b"\xff\xfe" if bom else b"") + apply_write_key(text, section, key, value).encode(encoding)
    with open(path, "r+b") as f:  # CREATE_ALWAYS: same file object, truncated then written
        f.truncate(0)
        f.flush()
        if pause_after_truncate:
            time.sleep(pause_after_truncate)
        step = chunk or len(data)
        for i in range(0, len(data), step):
            f.write(data[i : i + step])
            f.flush()
            if chunk:
                time.sleep(0.0005)
