"""Several ComfyUI servers as one: health checks, a shared work queue, failover, throughput.

One worker thread per server takes the next item from a shared queue, so a fast server simply
takes more. Results come back in item order through `map_ordered`, which lets workers run at
most `ahead` items past the oldest one not yet handed out: memory stays bounded however long
the job list. A server that stops answering mid-job has its item put back at the front of the
queue for another server, and is polled until it answers again. A job that fails while
running (ExecutionFailed) goes back to the queue for whichever server is free next, up to
`attempts` tries; any other error (a rejected graph) stops the whole map at once.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence, TypeVar

from backend.comfyui.client import ComfyClient
from backend.comfyui.errors import ComfyError, ComfyTimeout, ComfyUnavailable, ExecutionFailed, JobLost

T = TypeVar("T")
R = TypeVar("R")

# Errors that say "this server, right now": the item goes to another server and this one is polled.
SERVER_LOST = (ComfyUnavailable, JobLost, ComfyTimeout, ConnectionError)


class PoolError(RuntimeError):
    """The map cannot go on: no server answers, or a job failed on every try (message says which)."""


@dataclass
class ServerStats:
    url: str
    done: int = 0
    busy: float = 0.0           # seconds spent in successful jobs
    lost: int = 0               # jobs handed to another server after this one dropped them
    failed: int = 0             # jobs that failed here (execution errors)
    up: bool = True
    _first: float | None = field(default=None, repr=False)
    _last: float | None = field(default=None, repr=False)

    @property
    def per_second(self) -> float:
        """Items per second of wall time between this server's first start and last finish."""
        if not self.done or self._first is None or self._last is None or self._last <= self._first:
            return 0.0
        return self.done / (self._last - self._first)


def default_client(url: str) -> ComfyClient:
    # a short grace: a render should move a dropped frame to another server within seconds
    return ComfyClient(url, job_timeout=1800.0, poll_interval=1.0, unavailable_grace=5.0)


class ServerPool:
    """``ServerPool(urls)``; ``map_ordered(items, task)`` with ``task(client, worker, item) -> result``."""

    def __init__(self, urls: Sequence[str], *, client_factory: Callable[[str], ComfyClient] = default_client,
                 retry_interval: float = 2.0, give_up_after: float = 120.0, attempts: int = 3):
        if not urls:
            raise ValueError("a server pool needs at least one URL")
        self.urls = [u.rstrip("/") for u in urls]
        self.clients = [client_factory(u) for u in self.urls]
        self.stats = [ServerStats(u) for u in self.urls]
        self.retry_interval, self.give_up_after, self.attempts = retry_interval, give_up_after, attempts
        self._cond = threading.Condition()
        self._stop = threading.Event()

    def check(self) -> list[str]:
        """Ask every server for /system_stats now; marks each up or down; returns the URLs that answer."""
        for client, stats in zip(self.clients, self.stats):
            stats.up = self._answers(client)
        return [s.url for s in self.stats if s.up]

    @staticmethod
    def _answers(client: ComfyClient) -> bool:
        try:
            client.system_stats()
            return True
        except ComfyError:
            return False

    def first_healthy(self) -> ComfyClient:
        """A client of a server that answers (for preflight checks); PoolError when none does."""
        for client, stats in zip(self.clients, self.stats):
            if self._answers(client):
                stats.up = True
                return client
            stats.up = False
        raise PoolError(f"no ComfyUI answers at {', '.join(self.urls)}: start ComfyUI or fix --url")

    def map_ordered(self, items: Sequence[T], task: Callable[[ComfyClient, int, T], R], *,
                    ahead: int = 8) -> Iterator[R]:
        """Run `task` on every item over the healthy servers; yield the results in item order."""
        queue: deque[int] = deque(range(len(items)))
        results: dict[int, R] = {}
        tries = [0] * len(items)
        state = {"next": 0, "error": None}

        def worker(w: int) -> None:
            client, stats = self.clients[w], self.stats[w]
            while not self._stop.is_set():
                if not stats.up:
                    if self._stop.wait(self.retry_interval):
                        return
                    stats.up = self._answers(client)
                    with self._cond:
                        self._cond.notify_all()
                    continue
                with self._cond:
                    while not self._stop.is_set() and state["error"] is None and not (
                            queue and queue[0] < state["next"] + ahead):
                        if not queue and state["next"] >= len(items):
                            return
                        self._cond.wait(0.5)
                    if self._stop.is_set() or state["error"] is not None:
                        return
                    index = queue.popleft()
                began = time.monotonic()
                try:
                    result = task(client, w, items[index])
                except SERVER_LOST:
                    with self._cond:
                        stats.up, stats.lost = False, stats.lost + 1
                        queue.appendleft(index)
                        self._cond.notify_all()
                    continue
                except Exception as exc:     # noqa: BLE001 - decided below: retry elsewhere or stop the map
                    with self._cond:
                        stats.failed += 1
                        tries[index] += 1
                        if self._stop.is_set():
                            return
                        if isinstance(exc, ExecutionFailed) and tries[index] < self.attempts:
                            queue.appendleft(index)
                        else:
                            state["error"] = exc
                        self._cond.notify_all()
                    continue
                ended = time.monotonic()
                with self._cond:
                    stats.done += 1
                    stats.busy += ended - began
                    stats._first = began if stats._first is None else stats._first
                    stats._last = ended
                    results[index] = result
                    self._cond.notify_all()

        self._stop.clear()
        threads = [threading.Thread(target=worker, args=(w,), name=f"pool-{w}", daemon=True)
                   for w in range(len(self.clients))]
        for thread in threads:
            thread.start()
        all_down_since: float | None = None
        try:
            for index in range(len(items)):
                with self._cond:
                    while index not in results and state["error"] is None:
                        if any(s.up for s in self.stats):
                            all_down_since = None
                        elif all_down_since is None:
                            all_down_since = time.monotonic()
                        elif time.monotonic() - all_down_since > self.give_up_after:
                            raise PoolError(f"no ComfyUI has answered for {self.give_up_after:.0f} s "
                                            f"({', '.join(self.urls)}); start one and rerun with --resume")
                        self._cond.wait(0.5)
                    if state["error"] is not None:
                        raise state["error"]
                    result = results.pop(index)
                    state["next"] = index + 1
                    self._cond.notify_all()
                yield result
        finally:
            self._stop.set()
            with self._cond:
                self._cond.notify_all()
            for thread in threads:
                thread.join(timeout=0.1)

    def summary(self) -> list[str]:
        """One line per server: frames done, throughput, jobs lost or failed there."""
        lines = []
        for s in self.stats:
            extra = "".join([f", {s.lost} lost" if s.lost else "", f", {s.failed} failed" if s.failed else ""])
            avg = f"{s.busy / s.done:.2f} s/frame" if s.done else "-"
            lines.append(f"{s.url}: {s.done} frames, {s.per_second:.2f} frames/s ({avg}){extra}")
        return lines

    def close(self) -> None:
        """Stop the workers and close every client (which interrupts our jobs still running)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for client in self.clients:
            client.close()
