"""Keyframe sources: ComfyUI img2img of the previous keyframe (the dream's feedback loop), or a
folder of images (backend.folder_source). Both answer `next_keyframe(previous) -> Keyframe`, called from
the keyframe worker thread, and `close()` from any thread to abort a wait on shutdown.

No torch here: sources only talk to ComfyUI (through backend.comfyui) or read files.
"""

from __future__ import annotations

import logging
import threading

from PIL import Image

from backend.comfyui.errors import ComfyError, ComfyUnavailable, Interrupted, JobLost, WorkflowRejected
from backend.comfyui.reachability import ReachabilityWatch
from backend.comfyui.text import safe_line, safe_text
from backend.comfyui.workflow import WorkflowError
from backend.frames import Keyframe, KeyframeSourceError
from backend.seeds import PromptRotation, SeedPolicy  # SeedPolicy is still imported from here by older callers

log = logging.getLogger(__name__)

# Lost jobs in a row made again without counting: a restart loses one; a server that loses
# every job (it forgets history at once) must still end in a skip, never in a loop.
LOST_JOBS_FORGIVEN = 10


class ComfyUISource:
    """K_0 = the start image (or txt2img when none); K_{n+1} = img2img(K_n) via ComfyUI.

    A failed keyframe is retried with a new seed `attempts` times and then skipped (the previous
    image is reused, so the dream holds still for one segment): never fatal. Not failures, and
    made again with the SAME seed: a job ComfyUI lost (it restarted mid-job), a job interrupted
    from ComfyUI's own UI, and one we interrupted (`interrupt_current`, made again after
    `resume`). `state` is "unavailable" from the first request that meets no server (the client's
    reachability; between jobs an idle probe asks once a second) and "connected" again, with
    `last_error` cleared, as soon as one is answered. `generator` is a backend.comfyui
    KeyframeGenerator, `client` its ComfyClient or FailoverClient; `dream` (optional) is
    backend.dream's Dream, called as INTERFACES.md I4 says.
    """

    def __init__(self, generator, *, prompts, prompt_period: int, seed: SeedPolicy, denoise: float,
                 start_image: Image.Image | None = None, attempts: int = 3, max_backoff: float = 10.0,
                 preflight_done: bool = False, client=None, dream=None) -> None:
        self.generator, self.client, self.dream = generator, client, dream
        self.rotation = PromptRotation(prompts, prompt_period)
        self.seeds, self.denoise, self.start_image = seed, denoise, start_image
        self.attempts, self.max_backoff = attempts, max_backoff
        self.state = "connected" if preflight_done else "starting"  # | "unavailable"
        self.last_error = ""
        self._preflight_done = preflight_done
        self._fresh = False
        self._closed = threading.Event()
        self._wake = threading.Event()    # ends a backoff early: closed, resumed, or ComfyUI answers again
        self._state_lock = threading.Lock()
        self._held = False                # interrupt_current() was called and resume() not yet
        self._watch = None                # the idle ReachabilityWatch, started with the first keyframe
        self._traceback_logged = self._dream_traceback_logged = False  # a traceback is logged once per run
        self._made_with = ""              # prompt of the last keyframe made: a skipped one shows its image
        self._last: Keyframe | None = None  # the keyframe returned last (to map a bare previous image back)
        reachability = getattr(client, "reachability", None)
        if reachability is not None:
            reachability.subscribe(self._on_reachability)

    @property
    def prompt(self) -> str:
        return safe_text(self.rotation.current.prompt)

    def update(self, *, prompts, prompt_period: int, seed: SeedPolicy, denoise: float) -> None:
        """Live config edit: new prompts/seed policy/denoise apply from the next keyframe."""
        if tuple(prompts) != self.rotation.prompts or prompt_period != self.rotation.period:
            before = self.prompt
            self.rotation = PromptRotation(prompts, prompt_period)
            if self.prompt != before:
                self._prompt_changed()
        if (seed.policy, seed.value) != (self.seeds.policy, self.seeds.value):
            self.seeds = seed
        self.denoise = denoise

    def next_prompt(self) -> None:
        self.rotation.skip()
        self._prompt_changed()

    def new_keyframe(self) -> None:
        """The next keyframe starts over from txt2img with a fresh seed instead of img2img."""
        self._fresh = True
        self._prompt_changed()

    def interrupt_current(self) -> bool:
        """Interrupt OUR job in flight (never another client's) and hold: no job is sent to ComfyUI
        until resume(); the interrupted keyframe is then made with the same seed. True when a job
        of ours was running or queued."""
        self._held = True
        return bool(self.client is not None and self.client.interrupt_current())

    def resume(self) -> None:
        """End the hold interrupt_current() started."""
        self._held = False
        self._wake.set()

    def close(self) -> None:
        """Abort waits and the job in flight; returns at once (the client closes in the background)."""
        self._closed.set()
        self._wake.set()
        if self._watch is not None:
            self._watch.stop()
        if self.client is not None:
            reachability = getattr(self.client, "reachability", None)
            if reachability is not None:
                reachability.unsubscribe(self._on_reachability)
            # ComfyClient.close() interrupts our job but may wait for it up to request_timeout:
            # shutdown must not, so it runs on a daemon thread.
            threading.Thread(target=self.client.close, name="reverie-comfy-close", daemon=True).start()

    def next_keyframe(self, previous: Keyframe | Image.Image | None) -> Keyframe | None:
        """Blocks until ComfyUI made the keyframe; None once `close()` was called. `previous` is
        the last keyframe (or its image)."""
        self._start_watch()
        previous = self._as_keyframe(previous)
        fresh, self._fresh = self._fresh, False
        if previous is None and self.start_image is not None and not fresh:
            return self._remember(Keyframe(self.start_image, generated=False, origin="start_image"))
        seed = self.seeds.fresh() if fresh else self.seeds.next()
        source, denoise = None if fresh or previous is None else previous.image, self.denoise
        plan = self._ask_dream("plan_input", previous) if source is not None else None
        if plan is not None:
            source = plan.image
            denoise = self.denoise if plan.denoise is None else plan.denoise
            if plan.fresh_seed:
                seed = self.seeds.fresh()
        extra = {k: getattr(plan, k) for k in ("reference", "reference_weight") if getattr(plan, "reference", None)}
        failures, blanks, lost, backoff = 0, 0, 0, 0.5
        while not self._closed.is_set():
            if self._wait_while_held():
                return None
            prompt = self.rotation.current
            try:
                self._preflight()
                keyframe = self.generator.generate_keyframe(source, safe_text(prompt.prompt),
                                                            safe_text(prompt.negative), seed, denoise, **extra)
            except ComfyUnavailable as exc:
                self._set_state("unavailable", f"ComfyUI is not reachable: {safe_line(exc)}")
                if self._sleep(backoff):
                    return None
                backoff = min(self.max_backoff, backoff * 2)
                continue
            except Interrupted:
                if self._closed.is_set():  # our own shutdown interrupted the job
                    return None
                if self._held:
                    log.info("the keyframe job was interrupted for a pause; it is made again with the same "
                             "seed on resume")
                    continue
                # stopped from ComfyUI's own UI: a cancellation, not a failure; the same keyframe again
                log.info("the keyframe job was interrupted in ComfyUI; making it again")
                if self._sleep(0.5):
                    return None
                continue
            except JobLost as exc:
                if self._closed.is_set():
                    return None
                lost += 1
                if lost <= LOST_JOBS_FORGIVEN:
                    # ComfyUI restarted (or its socket dropped) under the job: nothing was wrong with
                    # it, so it is not a failed attempt and keeps its seed (seed.policy stays true).
                    log.info("ComfyUI lost the keyframe job (%s); making it again with the same seed",
                             safe_line(exc))
                    if self._sleep(min(self.max_backoff, 0.1 * lost)):
                        return None
                    continue
                failures, error = failures + 1, f"ComfyUI lost the job {lost} times in a row: {safe_line(exc)}"
            except WorkflowRejected as exc:
                if not self._preflight_done:
                    raise KeyframeSourceError(_rejected(exc)) from None
                failures, error = failures + 1, _rejected(exc)
            except ComfyError as exc:
                failures, error = failures + 1, f"{type(exc).__name__}: {safe_line(exc)}"
            except WorkflowError as exc:
                raise KeyframeSourceError(f"The ComfyUI workflow cannot make this keyframe ({safe_line(exc)}); "
                                          f"fix comfyui.workflow or comfyui.node_ids.") from None
            except Exception as exc:  # a bug or an unforeseen server answer: one failed attempt, never fatal
                failures, error = failures + 1, f"unexpected {type(exc).__name__}: {safe_line(exc)}"
                if not self._traceback_logged:
                    self._traceback_logged = True
                    log.exception("unexpected error while making a keyframe (counted as a failed attempt)")
            else:
                self._set_state("connected", "")
                problem = self._ask_dream("check_blank", keyframe.image) or ""
                if not problem:
                    return self._accepted(keyframe)
                blanks += 1
                if blanks >= self.attempts and previous is not None:
                    log.warning("keyframe came out blank %d times (%s); skipping it", blanks, safe_line(problem))
                    return self._skipped(previous, seed)
                log.info("keyframe came out blank (%s); trying seed %d", safe_line(problem), seed + 1)
                seed = (seed + 1) % 2**64
                continue
            if self._closed.is_set():  # the failure is our own shutdown interrupting the job
                return None
            self.last_error = error
            if failures >= self.attempts and previous is not None:
                log.warning("keyframe failed %d times (%s); skipping it", failures, error)
                return self._skipped(previous, seed)
            log.warning("keyframe failed (%s); retrying with a new seed", error)
            seed = self.seeds.fresh()
            if self._sleep(min(self.max_backoff, 0.25 * failures)):
                return None
        return None

    # -- helpers ---------------------------------------------------------------------------------
    def _accepted(self, keyframe: Keyframe) -> Keyframe:
        self.last_error = ""  # the problem is over: the skin should not keep showing it
        index = self.rotation.index
        self.rotation.made_one()
        self._made_with = keyframe.prompt
        self._ask_dream("keyframe_made", keyframe)
        if self.rotation.index != index:
            self._prompt_changed()
        return self._remember(keyframe)

    def _skipped(self, previous: Keyframe, seed: int) -> Keyframe:
        return self._remember(Keyframe(previous.image, 0.0, self._made_with, seed, False, "skipped"))

    def _remember(self, keyframe: Keyframe) -> Keyframe:
        self._last = keyframe
        return keyframe

    def _as_keyframe(self, previous) -> Keyframe | None:
        """The worker may hand back the keyframe or only its image: the Keyframe either way."""
        if previous is None or isinstance(previous, Keyframe):
            return previous
        if self._last is not None and self._last.image is previous:
            return self._last
        return Keyframe(previous, generated=False, origin="previous")

    def _prompt_changed(self) -> None:
        self._ask_dream("prompt_changed")

    def _ask_dream(self, hook: str, *args):
        """dream.<hook>(*args), or None without a dream. A bug in a hook must not stop the dream:
        it is logged (with its traceback once) and the keyframe goes on as if there were no dream."""
        if self.dream is None:
            return None
        try:
            return getattr(self.dream, hook)(*args)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            if not self._dream_traceback_logged:
                self._dream_traceback_logged = True
                log.exception("dream.%s failed; going on without it for this keyframe", hook)
            else:
                log.warning("dream.%s failed (%s: %s)", hook, type(exc).__name__, safe_line(exc))
            return None

    def _sleep(self, seconds: float) -> bool:
        """Wait up to `seconds` (less when woken); True when closed."""
        self._wake.wait(seconds)
        self._wake.clear()
        return self._closed.is_set()

    def _wait_while_held(self) -> bool:
        while self._held and not self._closed.is_set():
            self._sleep(1.0)
        return self._closed.is_set()

    def _start_watch(self) -> None:
        if (self._watch is None and getattr(self.client, "reachability", None) is not None
                and not self._closed.is_set()):
            timeout = min(2.0, getattr(self.client, "request_timeout", 2.0))
            self._watch = ReachabilityWatch(self.client, interval=1.0, timeout=timeout).start()

    def _on_reachability(self, ok: bool, error: str) -> None:
        """The client's reachability changed (any thread): status follows at once."""
        if ok:
            if self.state == "unavailable":
                self._set_state("connected", "")
                self.last_error = ""
            self._wake.set()      # a backoff wait ends: the server is back
        else:
            self._set_state("unavailable", f"ComfyUI is not reachable: {safe_line(error)}")

    def _preflight(self) -> None:
        if not self._preflight_done:
            self.generator.preflight()  # ComfyUnavailable / WorkflowRejected propagate
            self._preflight_done = True
            self._set_state("connected", "")

    def _set_state(self, state: str, error: str) -> None:
        with self._state_lock:
            changed, self.state = state != self.state, state
            if error:
                self.last_error = error
        if changed:
            (log.warning if state == "unavailable" else log.info)(
                "ComfyUI %s%s", state, f": {error}" if error else "")


def _rejected(exc: WorkflowRejected) -> str:
    summary, lines = getattr(exc, "summary", None) or str(exc), getattr(exc, "lines", None) or []
    return safe_line("; ".join([summary.rstrip(".:"), *lines]), 1000)
