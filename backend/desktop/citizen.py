"""What makes the daemon a good desktop citizen, started beside its loop: the pause rules, the
watch on ComfyUI's health, and the recorder of what the display shows.

- Pause rules (backend.desktop.rules) are checked on a thread of their own every
  `pause.check_every` s and handed to `daemon.set_paused`: a probe of the desktop (listing the
  processes can take tens of ms on Windows) never delays a frame.
- The ComfyUI watch (comfy_watch) runs only for a ComfyUI client; its fields go into the status.
- The recorder (backend.render.recorder), when display.record is on, is a frame listener: it
  copies each frame written into its queue and encodes on its own thread.
No torch here.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from backend.desktop.comfy_watch import ComfyWatch
from backend.desktop.health import HealthSettings
from backend.desktop.platform import DesktopPlatform, default_platform
from backend.desktop.rules import PauseRules

if TYPE_CHECKING:
    from backend.config import Config
    from backend.render.recorder import Recorder

log = logging.getLogger(__name__)


class Citizen:
    def __init__(self, config: Config, set_paused: Callable[[str, bool], None], stop: threading.Event, *,
                 platform: DesktopPlatform | None = None, wall: Callable[[], float] = time.time) -> None:
        self.set_paused, self.stop, self.wall = set_paused, stop, wall
        self.busy: Callable[[], bool] = lambda: False   # our work runs now (set once the parts exist)
        self.rules = PauseRules(config.pause, platform or default_platform(), own_work_running=lambda: self.busy())
        self.health_settings = HealthSettings(warn_mib=config.comfyui.memory_warn_mib)  # a seam for tests
        self.watch: ComfyWatch | None = None
        self.recorder: Recorder | None = None
        self._url = config.comfyui.url
        self._lock = threading.Lock()
        # Set by close(): the threads below end with this daemon, also when it stops without a stop
        # request (--max-frames, an error) or runs in-process beside others, as in the tests.
        self._done = threading.Event()

    def start(self, config: Config, client: Any, busy: Callable[[], bool]) -> None:
        """Once the parts are built: the rules' thread, the health watch, the recorder."""
        self.busy = busy
        threading.Thread(target=self._check_rules, name="pause-rules", daemon=True).start()
        if callable(getattr(client, "system_stats", None)):
            self.watch = ComfyWatch(client, self._url, self.health_settings, wall=self.wall)
            self.watch.start(self._done)
        display = config.display
        if display.record:
            from backend.render.recorder import Recorder
            from backend.render.video import VideoError, check_codec
            try:
                check_codec()  # before the first frame, not in the recorder thread later
            except VideoError as exc:  # the daemon stops with it as a user's error (exit 2)
                raise VideoError(f"display.record is on, but {exc}") from None
            self.recorder = Recorder(display.record_dir, display.record_segment_seconds, display.fps,
                                     display.record_max_bytes)
            log.info("recording the display to %s in %g s segments", display.record_dir, display.record_segment_seconds)

    def on_frame(self, pixels, index: int) -> None:
        """A frame listener: hand the frame to the recorder (never blocks)."""
        if self.recorder is not None:
            self.recorder.submit(pixels)

    def update(self, config: Config) -> None:
        with self._lock:
            self.rules.update(config.pause)

    @property
    def waking(self) -> bool:
        return self.watch is not None and self.watch.waking

    def resumed(self, freed: bool) -> None:
        """The pause is over; after a /free ComfyUI loads its models again: a new memory baseline."""
        if freed and self.watch is not None:
            self.watch.health.reset_baseline()

    def fields(self) -> dict:
        return self.watch.fields() if self.watch is not None else {}

    def warning(self) -> str:
        return self.watch.health.warning if self.watch is not None else ""

    def close(self) -> None:
        self._done.set()
        if self.recorder is not None:
            self.recorder.close()
            if self.recorder.dropped:
                log.info("recording: %d of %d frames dropped (the encoder fell behind)",
                         self.recorder.dropped, self.recorder.submitted)
        if self.watch is not None:
            self.watch.close()

    def _check_rules(self) -> None:
        while not self._done.wait(self.rules.settings.check_every) and not self.stop.is_set():
            with self._lock:
                self.rules.sync(self.set_paused)
