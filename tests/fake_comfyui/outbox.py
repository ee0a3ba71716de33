"""Late WebSocket delivery for the fake's `ws_lag` fault.

A freshly started real ComfyUI sends its WebSocket messages up to ~1 s behind its HTTP answers
(its first prompt), so GET /history can say "done" before that job's events and its
SaveImageWebsocket frame have reached the client. The outbox holds each message until `delay`
seconds after it was produced, keeps the order, and forgets its backlog on a server restart.
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

Delivery = Callable[[], Awaitable[None]]


class Outbox:
    """FIFO of deliveries, each run no earlier than its due time; create and use inside the loop."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[tuple[int, float, Delivery]] = asyncio.Queue()
        self._generation = 0          # bumped by clear(): a delivery taken before it is dropped
        self._held = 0                # deliveries queued or waiting to be sent
        self._task = asyncio.ensure_future(self._run())

    @property
    def busy(self) -> bool:
        """True while something is held: a later message must queue behind it to keep the order."""
        return self._held > 0

    def put(self, delay: float, deliver: Delivery) -> None:
        """Run `deliver` `delay` seconds from now (>= 0), after everything put before it."""
        self._held += 1
        self._queue.put_nowait((self._generation, time.monotonic() + max(0.0, delay), deliver))

    def clear(self) -> None:
        """Drop the backlog (the server restarted: what it had not sent is lost)."""
        self._generation += 1
        while not self._queue.empty():
            self._queue.get_nowait()
        self._held = 0

    def close(self) -> None:
        self.clear()
        self._task.cancel()

    async def _run(self) -> None:
        while True:
            generation, due, deliver = await self._queue.get()
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if generation != self._generation:
                continue
            await deliver()
            if generation == self._generation:
                self._held -= 1     # only now: a direct send must not overtake this one mid-write
