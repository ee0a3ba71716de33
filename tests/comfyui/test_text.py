"""comfyui.text: what a server, a prompt or a file name says, made safe to log and to show."""

from __future__ import annotations

from backend.comfyui.text import safe_line, safe_text


def test_safe_text_shows_surrogates_as_the_servers_escapes_and_control_characters_as_hex():
    text = safe_text("Bad\udcffNode\ud800 \x1b[31m\r\n\tkept \x85\u2028")
    assert text == "Bad\\udcffNode\\ud800 \\x1b[31m\\x0d\n\tkept \x85\u2028"
    text.encode("utf-8")            # would raise on a lone surrogate


def test_safe_text_takes_any_value_and_cuts_after_escaping():
    assert safe_text(None) == "" and safe_text(42) == "42"
    assert safe_text("\x00" * 10, limit=8) == "\\x00\\..."
    assert len(safe_text("y" * 5000)) == 2000


def test_safe_line_keeps_a_message_on_one_line():
    assert safe_line("first line\r\n  second\n\nthird \udc80") == "first line\\x0d / second / third \\udc80"
    assert safe_line("z" * 1000) == "z" * 300
