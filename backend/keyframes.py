"""Keyframe sources: ComfyUI img2img of the previous keyframe (the dream's feedback loop), or a
folder of images (backend.folder_source). Both answer `next_keyframe(previous) -> Keyframe`, called from
the keyframe worker thread, and `close()` from any thread to abort a wait on shutdown.

No torch here: sources only talk to ComfyUI (through backend.comfyui) or read files.
"""

from __future__ import annotations

import logging
import random
import threading

from PIL import Image

from backend.comfyui.errors import ComfyError, ComfyUnavailable, Interrupted, WorkflowRejected
from backend.comfyui.workflow import WorkflowError
from backend.frames import Keyframe, KeyframeSourceError

log = logging.getLogger(__name__)

class PromptRotation:
    """Cycles `prompts` (objects with .prompt / .negative), `period` keyframes each."""

    def __init__(self, prompts, period: int) -> None:
        self.prompts, self.period = tuple(prompts), period
        self.index, self._made = 0, 0

    @property
    def current(self):
        return self.prompts[self.index % len(self.prompts)]

    def made_one(self) -> None:
        self._made += 1
        if self._made >= self.period:
            self.skip()

    def skip(self) -> None:
        self.index, self._made = (self.index + 1) % len(self.prompts), 0


class SeedPolicy:
    """`random` -> a fresh seed each keyframe; `fixed` -> value; `increment` -> value, value+1, ..."""

    def __init__(self, policy: str, value: int = 0, rng: random.Random | None = None) -> None:
        self.policy, self.value, self._rng, self._count = policy, value, rng or random.Random(), 0

    def next(self) -> int:
        if self.policy == "fixed":
            return self.value
        if self.policy == "increment":
            self._count += 1
            return (self.value + self._count - 1) % 2**64
        return self.fresh()

    def fresh(self) -> int:
        return self._rng.randrange(2**32)


class ComfyUISource:
    """K_0 = the start image (or txt2img when none); K_{n+1} = img2img(K_n) via ComfyUI.

    A failed keyframe is retried with a new seed `attempts` times and then skipped (the previous
    image is reused, so the dream holds still for one segment): never fatal. A job interrupted
    from ComfyUI's own UI is a cancellation: made again with the same seed, not counted. While ComfyUI is
    unreachable `state` is "unavailable" and the source retries with backoff (0.5 s doubling to
    `max_backoff`) until it is back. `generator` is a backend.comfyui KeyframeGenerator.
    """

    def __init__(self, generator, *, prompts, prompt_period: int, seed: SeedPolicy, denoise: float,
                 start_image: Image.Image | None = None, attempts: int = 3, max_backoff: float = 10.0,
                 preflight_done: bool = False, client=None) -> None:
        self.generator, self.client = generator, client
        self.rotation = PromptRotation(prompts, prompt_period)
        self.seeds, self.denoise, self.start_image = seed, denoise, start_image
        self.attempts, self.max_backoff = attempts, max_backoff
        self.state = "connected" if preflight_done else "starting"  # | "unavailable"
        self.last_error = ""
        self._preflight_done = preflight_done
        self._fresh = False
        self._closed = threading.Event()
        self._traceback_logged = False    # an unexpected error's traceback is logged once per run
        self._made_with = ""              # prompt of the last keyframe made: a skipped one shows its image

    @property
    def prompt(self) -> str:
        return self.rotation.current.prompt

    def update(self, *, prompts, prompt_period: int, seed: SeedPolicy, denoise: float) -> None:
        """Live config edit: new prompts/seed policy/denoise apply from the next keyframe."""
        if tuple(prompts) != self.rotation.prompts or prompt_period != self.rotation.period:
            self.rotation = PromptRotation(prompts, prompt_period)
        if (seed.policy, seed.value) != (self.seeds.policy, self.seeds.value):
            self.seeds = seed
        self.denoise = denoise

    def next_prompt(self) -> None:
        self.rotation.skip()

    def new_keyframe(self) -> None:
        """The next keyframe starts over from txt2img with a fresh seed instead of img2img."""
        self._fresh = True

    def close(self) -> None:
        """Abort waits and the job in flight; returns at once (the client closes in the background)."""
        self._closed.set()
        if self.client is not None:
            # ComfyClient.close() interrupts our job but may wait for it up to request_timeout:
            # shutdown must not, so it runs on a daemon thread.
            threading.Thread(target=self.client.close, name="reverie-comfy-close", daemon=True).start()

    def next_keyframe(self, previous: Image.Image | None) -> Keyframe | None:
        """Blocks until ComfyUI made the keyframe; None once `close()` was called."""
        fresh, self._fresh = self._fresh, False
        if previous is None and self.start_image is not None and not fresh:
            return Keyframe(self.start_image, generated=False, origin="start_image")
        source = None if fresh else previous
        seed = self.seeds.fresh() if fresh else self.seeds.next()
        failures, backoff = 0, 0.5
        while not self._closed.is_set():
            prompt = self.rotation.current
            try:
                self._preflight()
                result = self.generator.generate_keyframe(source, prompt.prompt, prompt.negative, seed,
                                                          self.denoise)
            except ComfyUnavailable as exc:
                self._set_state("unavailable", f"ComfyUI is not reachable: {exc}")
                if self._closed.wait(backoff):
                    return None
                backoff = min(self.max_backoff, backoff * 2)
                continue
            except Interrupted:
                if self._closed.is_set():  # our own shutdown interrupted the job
                    return None
                # stopped from ComfyUI's own UI: a cancellation, not a failure; the same keyframe again
                log.info("the keyframe job was interrupted in ComfyUI; making it again")
                if self._closed.wait(0.5):
                    return None
                continue
            except WorkflowRejected as exc:
                if not self._preflight_done:
                    raise KeyframeSourceError(_rejected(exc)) from None
                failures, error = failures + 1, _rejected(exc)
            except ComfyError as exc:
                failures, error = failures + 1, f"{type(exc).__name__}: {exc}"
            except WorkflowError as exc:
                raise KeyframeSourceError(f"The ComfyUI workflow cannot make this keyframe ({exc}); fix "
                                          f"comfyui.workflow or comfyui.node_ids.") from None
            except Exception as exc:  # a bug or an unforeseen server answer: one failed attempt, never fatal
                failures, error = failures + 1, f"unexpected {type(exc).__name__}: {exc}"
                if not self._traceback_logged:
                    self._traceback_logged = True
                    log.exception("unexpected error while making a keyframe (counted as a failed attempt)")
            else:
                self._set_state("connected", "")
                self.last_error = ""  # the problem is over: the skin should not keep showing it
                self.rotation.made_one()
                self._made_with = prompt.prompt
                origin = "txt2img" if source is None else "img2img"
                return Keyframe(result.image, result.seconds, prompt.prompt, seed, True, origin)
            if self._closed.is_set():  # the failure is our own shutdown interrupting the job
                return None
            self.last_error = error
            if failures >= self.attempts and source is not None:
                log.warning("keyframe failed %d times (%s); skipping it", failures, error)
                return Keyframe(source, 0.0, self._made_with, seed, False, "skipped")
            log.warning("keyframe failed (%s); retrying with a new seed", error)
            seed = self.seeds.fresh()
            if self._closed.wait(min(self.max_backoff, 0.25 * failures)):
                return None
        return None

    def _preflight(self) -> None:
        if not self._preflight_done:
            self.generator.preflight()  # ComfyUnavailable / WorkflowRejected propagate
            self._preflight_done = True

    def _set_state(self, state: str, error: str) -> None:
        if state != self.state:
            (log.warning if state == "unavailable" else log.info)(
                "ComfyUI %s%s", state, f": {error}" if error else "")
        self.state = state
        if error:
            self.last_error = error


def _rejected(exc: WorkflowRejected) -> str:
    lines = getattr(exc, "lines", None) or []
    summary = getattr(exc, "summary", None) or str(exc)
    return "; ".join([summary.rstrip(".:"), *lines])
