"""backend/logging_setup.py without a console (pythonw): nothing crashes, the user still hears."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from backend.logging_setup import (MAX_LINE, adopt_missing_streams, escape_controls, escape_surrogates, has_console, say,
                                   setup_logging)


def test_missing_streams_become_a_sink_a_library_can_print_to(monkeypatch):
    monkeypatch.setattr(sys, "stdout", None)
    monkeypatch.setattr(sys, "stderr", None)
    assert adopt_missing_streams() is True
    print("a progress bar", file=sys.stderr)  # crashed with AttributeError on None
    print("and some output")
    assert not has_console()


def test_without_a_console_say_shows_a_message_box_instead_of_dropping_the_message(monkeypatch):
    monkeypatch.setattr(sys, "stdout", None)
    monkeypatch.setattr(sys, "stderr", None)
    adopt_missing_streams()
    shown: list[str] = []
    say("invalid config: display.fps must be 0.1..60", show_box=shown.append)
    assert shown == ["invalid config: display.fps must be 0.1..60"]


def test_with_a_console_say_writes_one_line_and_no_box(capsys):
    shown: list[str] = []
    say("hello", show_box=shown.append)
    assert capsys.readouterr().err == "hello\n" and shown == []


def test_without_a_console_only_the_file_handler_is_attached(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "stderr", None)
    adopt_missing_streams()
    handlers = setup_logging("INFO", tmp_path / "r.log")
    try:
        assert [type(h).__name__ for h in handlers] == ["RotatingFileHandler"]
    finally:
        for handler in handlers:
            logging.getLogger().removeHandler(handler)
            handler.close()


UNDECODABLE = "caf\udce9 \udcff.png"  # os.fsdecode(b"caf\xe9 \xff.png") on Linux


@pytest.fixture
def attached():
    """setup_logging's handlers, detached again after the test."""
    attached: list[logging.Handler] = []

    def attach(*args, **kwargs) -> list[logging.Handler]:
        attached.extend(setup_logging(*args, **kwargs))
        return attached

    yield attach
    for handler in attached:
        logging.getLogger().removeHandler(handler)
        handler.close()


def test_the_log_file_takes_a_non_utf8_file_name_and_its_traceback_escaped(tmp_path, attached, capsys):
    attached("INFO", tmp_path / "r.log", console=False)
    log = logging.getLogger("backend.folder_source")
    try:
        raise OSError(f"cannot identify image file {UNDECODABLE!s}")
    except OSError:
        log.exception("skipping %s", UNDECODABLE)
    log.warning("bell\x07 escape\x1b[2J carriage\r return, tab\tkept")
    text = (tmp_path / "r.log").read_text(encoding="utf-8")
    assert "skipping caf\\xe9 \\xff.png" in text and "cannot identify image file caf\\xe9 \\xff.png" in text
    assert "bell\\x07 escape\\x1b[2J carriage\\x0d return, tab\tkept" in text
    assert "Traceback (most recent call last)" in text
    assert "Logging error" not in capsys.readouterr().err


def test_a_console_that_cannot_encode_the_text_gets_it_escaped(monkeypatch, attached):
    raw = io.BytesIO()
    console = io.TextIOWrapper(raw, encoding="ascii", errors="strict", write_through=True)
    monkeypatch.setattr(sys, "stderr", console)
    attached("INFO", None)
    logging.getLogger("backend.daemon").warning("prompt \u5922 caf\u00e9 from %s", UNDECODABLE)
    written = raw.getvalue().decode("ascii")
    assert "prompt \\u5922 caf\\xe9 from caf\\xe9 \\xff.png" in written
    assert "Logging error" not in written


def test_a_huge_message_is_cut(tmp_path, attached):
    attached("INFO", tmp_path / "r.log", console=False)
    logging.getLogger("backend.daemon").warning("x" * 1_000_000)
    line = (tmp_path / "r.log").read_text(encoding="utf-8").rstrip("\n")
    assert len(line) == MAX_LINE and line.endswith("...")


def test_say_writes_a_non_utf8_file_name_escaped(monkeypatch):
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(raw, encoding="utf-8", errors="strict", write_through=True))
    say(f"cannot read {UNDECODABLE}")
    assert raw.getvalue() == b"cannot read caf\\xe9 \\xff.png\n"


def test_escape_surrogates_shows_an_undecodable_byte_as_that_byte_unless_told_otherwise():
    name = "caf\udce9 \ud800.png"                 # os.fsdecode(b"caf\xe9 ...") plus a lone high surrogate
    assert escape_surrogates(name) == "caf\\xe9 \\ud800.png"
    assert escape_surrogates(name, as_bytes=False) == "caf\\udce9 \\ud800.png"
    escape_surrogates(name).encode("utf-8")      # would raise on a lone surrogate


def test_escape_controls_keeps_tab_and_newline_and_the_wider_set_takes_c1_and_unicode_breaks():
    text = "a\tb\nc\x1b\r\x7f \x85\u2028\u2029"
    assert escape_controls(text) == "a\tb\nc\\x1b\\x0d\\x7f \x85\u2028\u2029"
    assert escape_controls(text, wider=True) == "a\tb\nc\\x1b\\x0d\\x7f \\x85\\u2028\\u2029"
