"""Pause: the display holds while any reason to pause is on.

Reasons are short names: "skin" for the skin's Pause command, a rule's name for the desktop
rules (a full-screen game, a busy GPU). `set(reason, on)` may be called from any thread; the
daemon's loop acts on the change (`wanted` vs `applied`), because only that thread may touch
the VAE. While paused, ComfyUI's memory is given back with /free `free_delay` seconds after the
pause began (a rule that comes and goes should not unload the models each time; ComfyUI
applies /free after the job in flight, so the interrupted job is over by then anyway). The
skin's Pause is the user asking for the GPU now: with "skin" among the reasons /free is due at once.
After a pause the daemon is `resuming` until the first keyframe made since arrives (the first
one may have to load the models again: the picture holds meanwhile).
No torch here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class Pause:
    """Why the display is paused (`reason`), and when the memory is due to be given back."""

    def __init__(self, clock: Callable[[], float], free_delay: float = 0.0) -> None:
        self._clock, self.free_delay = clock, free_delay
        self._lock = threading.Lock()
        self._reasons: dict[str, None] = {}  # in the order they came on
        self.applied = False                 # the loop has paused the schedule
        self.freed = False                   # /free was posted during the last pause
        self._began: float | None = None     # when the pause began; None once /free is done
        self._resume_made: int | None = None  # keyframes made when the last pause ended, until one more

    def set(self, reason: str, on: bool) -> None:
        with self._lock:
            if on:
                self._reasons.setdefault(reason, None)
            else:
                self._reasons.pop(reason, None)

    def toggle(self, reason: str) -> None:
        with self._lock:
            on = reason not in self._reasons
        self.set(reason, on)

    @property
    def wanted(self) -> bool:
        with self._lock:
            return bool(self._reasons)

    @property
    def reason(self) -> str:
        """The reasons on, comma-separated ("" when not paused)."""
        with self._lock:
            return ", ".join(self._reasons)

    def began(self) -> None:
        self.applied, self.freed = True, False
        self._began = self._clock()

    def ended(self, made: int = 0) -> None:
        """The pause is over; `made`: keyframes made so far (resuming until there is one more)."""
        self.applied = False
        self._began = None
        self._resume_made = made

    def resuming(self, made: int) -> bool:
        """True from the end of a pause until a keyframe made since has arrived."""
        if self._resume_made is not None and made > self._resume_made:
            self._resume_made = None
        return self._resume_made is not None and not self.applied

    def free_due(self) -> bool:
        """True once per pause, when the memory should be given back now."""
        if self._began is None:
            return False
        with self._lock:
            delay = 0.0 if "skin" in self._reasons else self.free_delay
        if self._clock() < self._began + delay:
            return False
        self._began, self.freed = None, True
        return True


def hold_work(gen: Any, source: Any, encoder: Any) -> None:
    """Stop ComfyUI requests and VAE work and give the VAE's memory back; the picture stays."""
    gen.pause()
    interrupt = getattr(source, "interrupt_current", None)
    if callable(interrupt):
        interrupt()  # our job in flight stops now; it is made again, same seed, on resume
    if encoder is not None:
        encoder.release()


def free_comfyui(client: Any) -> None:
    """POST /free: ComfyUI unloads its models and frees its memory (a folder source has no client)."""
    if client is not None:
        try:
            client.free()
        except Exception as exc:  # noqa: BLE001 - freeing is a courtesy; ComfyUI may be down
            log.info("ComfyUI did not free memory: %s", exc)


def resume_work(gen: Any, source: Any, *, hold: bool = False) -> None:
    """Let keyframe jobs start again (`hold`: not yet, the PC has just woken and ComfyUI not answered)."""
    resume = getattr(source, "resume", None)
    if callable(resume):
        resume()
    if not hold:
        gen.resume()
