"""Keep an eye on ComfyUI over days: is it alive, did the PC sleep, is its memory creeping up?

`ComfyHealth.poll()` is pure logic around one `stats()` callable (the client's public
`system_stats()`), a monotonic clock and a wall clock, all injectable. It answers events for the
daemon to act on:

- "reconnect": `failures` probes in a row failed: drop the WebSocket and start afresh;
- "resumed": the OS slept (the wall clock moved further than the monotonic one, or this loop was
  not run for longer than `sleep_jump`): reconnect, and submit nothing until a probe answers;
- "ready": the first answer after either of those; `ready` is True again;
- "memory_growth": ComfyUI's memory grew more than `warn_mib` over its warm-up baseline.

A silent WebSocket is not a failure here: the HTTP probe and the history poll are the truth.
`run()` loops poll() in a thread of its own, so a probe that waits for a dead server never
holds a frame.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)
MIB = 1 << 20


@dataclass(frozen=True)
class HealthSettings:
    probe_every: float = 10.0     # seconds between /system_stats probes while all is well
    retry_every: float = 2.0      # seconds between probes while waiting for an answer after a reconnect
    failures: int = 3             # failed probes in a row that mean "reconnect"
    sleep_jump: float = 30.0      # seconds of clock jump that mean "the PC slept"
    warmup: float = 300.0         # seconds after start (or a reset) before the memory baseline is taken
    warn_mib: int = 2048          # growth over the baseline that is warned about; 0 = never


@dataclass(frozen=True)
class Memory:
    ram_used_mib: int             # the machine's RAM in use (ComfyUI reports only the machine's total)
    vram_used_mib: int | None     # the GPU's memory in use, all programs; None on a CPU-only ComfyUI
    torch_vram_mib: int | None    # what ComfyUI's torch holds on that GPU (its own share)


def memory_from_stats(stats: dict) -> Memory | None:
    """/system_stats -> Memory (None when the answer lacks the figures)."""
    try:
        system = stats["system"]
        ram = (int(system["ram_total"]) - int(system["ram_free"])) // MIB
    except (KeyError, TypeError, ValueError):
        return None
    gpus = [d for d in stats.get("devices") or [] if isinstance(d, dict) and d.get("type") != "cpu"]
    if not gpus:
        return Memory(ram, None, None)
    gpu = gpus[0]
    try:
        return Memory(ram, (int(gpu["vram_total"]) - int(gpu["vram_free"])) // MIB, int(gpu["torch_vram_total"]) // MIB)
    except (KeyError, TypeError, ValueError):
        return Memory(ram, None, None)


class ComfyHealth:
    def __init__(self, stats: Callable[[], dict], settings: HealthSettings = HealthSettings(), *,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self.stats, self.settings, self.clock, self.wall = stats, settings, clock, wall
        self._lock = threading.Lock()
        now = clock()
        self._last: tuple[float, float] | None = None   # (monotonic, wall) of the previous poll
        self._next_probe = now
        self._baseline_after = now + settings.warmup
        self.failures = 0
        self.ready = True                 # False after a reconnect or a sleep until a probe answers
        self.memory: Memory | None = None
        self.baseline: Memory | None = None
        self.warning = ""

    def reset_baseline(self) -> None:
        """Models were unloaded (a pause's /free): take a new baseline once they are back."""
        with self._lock:
            self.baseline, self.warning = None, ""
            self._baseline_after = self.clock() + self.settings.warmup

    def poll(self) -> list[str]:
        """Probe when due; the events of this call, oldest first."""
        events: list[str] = []
        now, wall = self.clock(), self.wall()
        if self._last is not None:
            moved, moved_wall = now - self._last[0], wall - self._last[1]
            if moved_wall - moved > self.settings.sleep_jump or moved > self.settings.sleep_jump:
                log.info("the PC seems to have slept (%.0f s); reconnecting to ComfyUI", max(moved_wall, moved))
                events.append("resumed")
                self.ready, self._next_probe = False, now
        self._last = (now, wall)
        if now >= self._next_probe:
            events += self._probe(now)
        return events

    def _probe(self, now: float) -> list[str]:
        try:
            answer = self.stats()
        except Exception as exc:  # noqa: BLE001 - every failure to answer counts the same
            self.failures += 1
            reconnect = self.failures % self.settings.failures == 0
            if reconnect:
                log.info("ComfyUI did not answer %d probes in a row (%s); reconnecting", self.failures, exc)
                self.ready = False
            self._next_probe = now + (self.settings.probe_every if self.ready else self.settings.retry_every)
            return ["reconnect"] if reconnect else []
        events = [] if self.ready else ["ready"]
        self.failures, self.ready = 0, True
        self._next_probe = now + self.settings.probe_every
        memory = memory_from_stats(answer) if isinstance(answer, dict) else None
        if memory is not None and self._watch(memory, now):
            events.append("memory_growth")
        return events

    def _watch(self, memory: Memory, now: float) -> bool:
        """Record a reading; True when it is the first to cross the warning line."""
        with self._lock:
            self.memory = memory
            if self.baseline is None:
                if now >= self._baseline_after:
                    self.baseline = memory
                return False
            grew = self._growth(memory)
            limit = self.settings.warn_mib
            if not limit or grew[1] <= limit:
                self.warning = ""
                return False
            if self.warning:
                return False
            self.warning = f"{grew[0]} grew by {grew[1]} MiB since ComfyUI warmed up"
        log.warning("%s; restarting ComfyUI gives it back (see 'Living with Reverie' in the README)", self.warning)
        return True

    def _growth(self, memory: Memory) -> tuple[str, int]:
        """(what, MiB) of the larger growth over the baseline: ComfyUI's own VRAM, or the RAM in use."""
        base = self.baseline
        vram = memory.torch_vram_mib - base.torch_vram_mib \
            if memory.torch_vram_mib is not None and base.torch_vram_mib is not None else 0
        ram = memory.ram_used_mib - base.ram_used_mib
        return ("ComfyUI's VRAM", vram) if vram > ram else ("the RAM in use on ComfyUI's machine", ram)

    def fields(self) -> dict:
        """For status.json: ComfyUI's memory and the warning ("" when none)."""
        with self._lock:
            m, base = self.memory, self.baseline
            out = {"ram_in_use_mib": m.ram_used_mib if m else None,
                   "comfyui_vram_mib": m.torch_vram_mib if m else None,
                   "comfyui_memory_growth_mib": self._growth(m)[1] if m and base else None,
                   "comfyui_warning": self.warning}
        return out

    def run(self, stop: threading.Event, on_event: Callable[[str], None], tick: float = 1.0) -> None:
        """poll() every `tick` s until `stop` is set, handing each event to on_event."""
        while not stop.wait(tick):
            for event in self.poll():
                try:
                    on_event(event)
                except Exception:  # noqa: BLE001 - a failing handler must not end the watch
                    log.exception("handling the ComfyUI health event %r failed", event)

    def start(self, stop: threading.Event, on_event: Callable[[str], None]) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop, on_event), name="comfyui-health", daemon=True)
        thread.start()
        return thread
