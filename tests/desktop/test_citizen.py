"""The desktop citizen's threads (pause rules, ComfyUI watch) end with their daemon."""

from __future__ import annotations

import threading
import time

from backend.config import parse_config
from backend.desktop.citizen import Citizen
from backend.desktop.platform import FakePlatform


class _Client:
    """Just enough of a ComfyClient for the watch to start: it answers system_stats."""

    def system_stats(self) -> dict:
        return {"system": {"ram_total": 1, "ram_free": 1}, "devices": []}


def _alive(names: set[str]) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in names and t.is_alive()]


def test_close_ends_the_rules_and_watch_threads_without_a_stop_request():
    config = parse_config({"pause": {"check_every": 0.5}})
    stop = threading.Event()  # never set: the daemon ended on --max-frames, not on a stop request
    citizen = Citizen(config, lambda reason, on: None, stop, platform=FakePlatform())
    before = len(_alive({"pause-rules", "comfyui-health"}))
    citizen.start(config, _Client(), lambda: False)
    assert len(_alive({"pause-rules", "comfyui-health"})) == before + 2
    citizen.close()
    deadline = time.monotonic() + 10
    while len(_alive({"pause-rules", "comfyui-health"})) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_alive({"pause-rules", "comfyui-health"})) == before
    assert not stop.is_set()
