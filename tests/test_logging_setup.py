"""backend/logging_setup.py without a console (pythonw): nothing crashes, the user still hears."""

from __future__ import annotations

import logging
import sys

from backend.logging_setup import adopt_missing_streams, has_console, say, setup_logging


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
