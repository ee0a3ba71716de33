"""The render loop: frames spread over the server pool, written in order as they complete.

Frames already on disk (--resume) are read back instead of rendered; the rest go to the pool,
which keeps a bounded number in flight. Ctrl-C (KeyboardInterrupt) ends the loop at once: the
sink is closed either way, so the MP4 is playable with every frame written so far.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from backend.comfyui.pool import ServerPool
from backend.render.frames_out import FrameSink
from backend.render.progress import Progress


@dataclass(frozen=True)
class RenderResult:
    written: int            # frames in the outputs (rendered + resumed)
    rendered: int           # frames ComfyUI made this run
    resumed: int            # frames read back from the PNG folder
    total: int
    interrupted: bool

    @property
    def complete(self) -> bool:
        return self.written == self.total


def render(frames: Sequence, job: Callable, pool: ServerPool, sink: FrameSink, *, resume: bool = False,
           ahead: int | None = None, progress: bool = True) -> RenderResult:
    """Render `frames` (each handed to ``job(client, worker, frame) -> PIL image``) into `sink`."""
    done = sink.existing(len(frames)) if resume else set()
    todo = [f for i, f in enumerate(frames) if i not in done]
    bar = Progress(len(frames), 0, enabled=progress)
    # enough in flight to keep every server busy while the oldest frame is still out
    window = ahead or max(4, 2 * len(pool.urls))
    results = iter(pool.map_ordered(todo, job, ahead=window)) if todo else iter(())
    rendered = resumed = 0
    interrupted = False
    try:
        for index in range(len(frames)):
            if index in done:
                sink.put(index, sink.load(index), from_disk=True)
                resumed += 1
                bar.update(rendered=False)
                continue
            sink.put(index, next(results))
            rendered += 1
            bar.update()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()
        bar.close()
        sink.close()
    return RenderResult(sink.written, rendered, resumed, len(frames), interrupted)
