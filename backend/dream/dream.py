"""`Dream`: the hooks (contract I4) that keep a days-long img2img loop from drifting or freezing.

Keyframe thread (the ComfyUI source): `plan_input(previous)` before each img2img job,
`check_blank(image)` on each result, `keyframe_made(keyframe)` once one is accepted,
`prompt_changed()` when the prompt moves on. Main thread: `observe(keyframe, latent)` when the
schedule encodes a keyframe (metrics, novelty, quality.csv, guard), `status_fields()` for
status.json. All thread-safe behind one lock; the image work of a plan (grounding) runs
outside it, so observe() never waits for it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from backend.dream.anchor import AnchorWalk, Step
from backend.dream.detail import ground_detail
from backend.dream.guard import Guard, blank_reason, image_not_finite, relative
from backend.dream.metrics import Analysis, Metrics, analyse, novelty, pool_latent
from backend.dream.palette import PaletteTarget, ground
from backend.dream.quality_log import QualityLog
from backend.dream.settings import DreamSettings

log = logging.getLogger(__name__)

METRIC_NAMES = list(Metrics.__dataclass_fields__)
RELATIVE = ("l_mean", "l_std", "chroma", "saturation", "sharpness", "hf_ratio")   # deviation as a fraction
COLUMNS = ["time", "keyframe", "origin", "seed", "reason", *METRIC_NAMES, "novelty", "novelty_anchor",
           "dev_chroma", "dev_sharpness", "dev_hue", "event", "prompt"]
TRIM_START = {"chroma": 1.0, "sharpness": 1.0, "a": 0.0, "b": 0.0}
TRIM_RANGE = (0.5, 2.0)   # for the chroma and sharpness factors
TRIM_AB = 30.0            # largest a*/b* offset
TRIM_RATE = 0.5          # share of the last output's log-deviation taken into the trim per keyframe
RESCUES = ("collapse", "drift", "blank")
EVENTS = ("anchor", "reference", "collapse", "drift", "blank", "blank_rejected")
MEMO = 6                  # analyses kept: a keyframe is checked, then grounded as the next input, then observed


def _key(keyframe) -> tuple | None:
    """What identifies a keyframe across the schedule's copy of it (dataclasses.replace with the
    image fitted to the resolution): every field but the image."""
    if keyframe is None:
        return None
    return (keyframe.origin, keyframe.seed, keyframe.prompt_id, keyframe.seconds, keyframe.prompt,
            keyframe.negative, keyframe.denoise, keyframe.generated)


def _same(a, b) -> bool:
    return a is b or (a is not None and b is not None and _key(a) == _key(b))


@dataclass(frozen=True)
class InputPlan:
    image: Image.Image        # what to upload as the img2img input
    denoise: float | None     # None: the configured denoise
    fresh_seed: bool          # the guard fired: use a fresh seed
    reason: str               # "" | "anchor" | "reference" | "prompt" | "collapse" | "drift" | "blank"
    # what an IP-Adapter workflow conditions on: the current reference, else the palette target
    # (the anchor); None while a new prompt settles or with control off (condition on nothing)
    reference: Image.Image | None = None
    reference_weight: float = 0.0


class Dream:
    """`steering=False`: measure only, whatever the settings say (a folder source: there is no
    img2img input to ground and no anchor to walk back to, but quality.csv still tells the story)."""

    def __init__(self, settings: DreamSettings | None = None, *, quality_path: Path | str | None = None,
                 references: list[Image.Image] | None = None, steering: bool = True):
        self.steering = steering
        self.settings = self._allowed(settings or DreamSettings())
        self._lock = threading.Lock()
        s = self.settings
        self._walk = AnchorWalk(s.anchor_every, s.anchor_denoise, s.prompt_settle, references)
        self._guard = Guard(s)
        self._log = None if quality_path is None else QualityLog(
            quality_path, COLUMNS, max_bytes=s.quality_log_bytes, keep=s.quality_log_keep)
        self._step: Step | None = None              # the last plan handed out, until its keyframe is made
        self._target: tuple[Image.Image, PaletteTarget, Metrics] | None = None
        self._anchor_pooled: np.ndarray | None = None
        self._pooled: list[tuple[tuple | None, np.ndarray]] = []   # (keyframe key, pooled latent) of the last few observed
        self._previous_pooled: np.ndarray | None = None
        self._observed = 0
        self._latest: dict = {}
        self._events = dict.fromkeys(EVENTS, 0)
        self._last_event = ""
        self._cost = {"metrics_ms": 0.0, "grounding_ms": 0.0}
        self._made: list[tuple[object, str]] = []     # (keyframe, plan reason) of the last few made
        self._rescue_keyframe = None     # made by a rescue plan and not yet observed: the guard waits for it
        self._trim = dict(TRIM_START)    # grounding aims past the target by what each pass adds (see _retrim)
        self._analyses: list[tuple[Image.Image, tuple | None, Analysis]] = []   # (image, keyframe key, analysis)

    def update(self, settings: DreamSettings) -> None:
        """A live config edit: strengths, bands, the anchor schedule and the quality.csv bounds apply
        from the next keyframe (references are read at start only)."""
        settings = self._allowed(settings)
        with self._lock:
            self.settings = settings
            self._guard.settings = settings
            self._walk.configure(settings.anchor_every, settings.anchor_denoise, settings.prompt_settle)
            if self._log is not None:
                self._log.max_bytes, self._log.keep = settings.quality_log_bytes, settings.quality_log_keep

    def _allowed(self, settings: DreamSettings) -> DreamSettings:
        return settings if self.steering or not settings.control else replace(settings, control=False)

    # -- keyframe thread ------------------------------------------------------------------------
    def plan_input(self, previous) -> InputPlan:
        """What to send as the img2img input after `previous` (a Keyframe). Idempotent until
        keyframe_made(): a retried job gets the same plan."""
        with self._lock:
            s = self.settings
            if self._walk.anchor is None and previous is not None and not self._walk.references:
                self._walk.made(previous, None)          # K_0 (a start image is never "made")
                self._anchor_pooled = self._observed_latent(previous)
            if not s.control:
                return InputPlan(previous.image, None, False, "")
            step = self._walk.next_step(previous)
            self._step = step
            target = self._current_target() if step.grounded else None
            reference = self._walk.references[step.reference] if step.reference >= 0 else \
                None if step.reason == "prompt" else self._walk.target_image
            trim = dict(self._trim)
        start = time.perf_counter()
        image = previous.image if step.source is None else step.source
        if target is not None:
            target_image, palette, metrics = target
            own = self._analysis(image)      # usually check_blank's, of this very picture
            if s.detail_strength > 0:
                image = ground_detail(image, metrics.sharpness * trim["sharpness"], s.detail_strength,
                                      sharpness=own.metrics.sharpness)
            if s.grounding != "off":
                # The palette statistics are the ungrounded input's: the detail layer is finer than the
                # metrics downscale they are taken on, so grounding the detail leaves them as they were.
                image = ground(image, palette, mode=s.grounding, chroma=s.chroma_strength, luma=s.luma_strength,
                               chroma_scale=trim["chroma"], ab_offset=(trim["a"], trim["b"]), lab=own.lab)
        with self._lock:
            self._cost["grounding_ms"] = (time.perf_counter() - start) * 1000.0
        rescue = step.reason in RESCUES
        return InputPlan(image.convert("RGB"), step.denoise, rescue, step.reason, reference,
                         s.reference_weight if reference is not None else 0.0)

    def check_blank(self, image: Image.Image) -> str:
        """"" when `image` may be shown, else why not (black, flat, not finite)."""
        if image_not_finite(image):
            reason = "its pixels are not finite numbers"
        else:
            reason = blank_reason(self._analysis(image).metrics, self.settings)
        if reason:
            with self._lock:
                self._count("blank_rejected", f"blank keyframe rejected: {reason}")
        return reason

    def keyframe_made(self, keyframe) -> None:
        with self._lock:
            step, self._step = self._step, None
            before = self._walk.anchor
            self._walk.made(keyframe, step if self.settings.control else None)
            self._made = [*self._made[-7:], (keyframe, "" if step is None else step.reason)]
            self._analyses = [(i, _key(keyframe) if i is keyframe.image else k, a) for i, k, a in self._analyses]
            if step is not None and step.reason in RESCUES:
                self._rescue_keyframe = keyframe
            if self._walk.anchor is not before:
                if step is not None and step.reason in ("anchor", "reference"):
                    self._count(step.reason, "")
                self._anchor_pooled = self._observed_latent(self._walk.anchor)

    def made_from_anchor(self, keyframe) -> bool:
        """True when `keyframe` (one of the last few made) was made from the anchor or a reference,
        not chained: its segment moves further, and may want more in-between frames."""
        with self._lock:
            return self._reason(keyframe) in RESCUES + ("anchor", "reference")

    def prompt_changed(self) -> None:
        with self._lock:
            self._walk.prompt_changed()
            self._target = None

    # -- main thread ----------------------------------------------------------------------------
    def observe(self, keyframe, latent: np.ndarray) -> dict:
        """Metrics and novelty of `keyframe` (latent [C, h, w]); writes quality.csv, may fire the guard."""
        start = time.perf_counter()
        analysis = self._analysis(keyframe.image, keyframe)
        metrics = analysis.metrics
        pooled = pool_latent(latent)
        with self._lock:
            s = self.settings
            if _same(keyframe, self._walk.anchor):
                self._anchor_pooled = pooled
            self._pooled = [*self._pooled[-(MEMO - 1):], (_key(keyframe), pooled)]
            step_novelty = novelty(self._previous_pooled, pooled)
            anchor_novelty = novelty(self._anchor_pooled, pooled)
            self._previous_pooled = pooled
            target = self._current_target()
            target_metrics = None if target is None else target[2]
            if s.control and target is not None:
                self._retrim(analysis, target[1], target_metrics)
            event = ""
            if _same(keyframe, self._rescue_keyframe):
                self._rescue_keyframe = None
            # keyframes made before a rescue took effect would fire the guard again for the same cause
            elif s.control and not self._walk.rescue_pending and self._rescue_keyframe is None:
                event = self._guard.judge(metrics, step_novelty, target_metrics)
                if event:
                    self._walk.rescue(event)
                    self._count(event, f"dream guard: {event} at keyframe {self._observed}; the next keyframe "
                                       f"is made from the anchor with a fresh seed")
            row = self._row(keyframe, metrics, step_novelty, anchor_novelty, target_metrics, event)
            self._observed += 1
            self._latest = row
            self._cost["metrics_ms"] = (time.perf_counter() - start) * 1000.0
        if self._log is not None:
            self._log.write(row)
        return row

    def status_fields(self) -> dict:
        """The latest metrics, their deviation from the anchor, and event counts (status "quality")."""
        with self._lock:
            row = self._latest
            return {
                "control": self.settings.control,
                "keyframes": self._observed,
                "anchor_age": self._walk.since_anchor,
                "metrics": {k: _round(row[k]) for k in METRIC_NAMES if k in row},
                "novelty": _round(row.get("novelty")),
                "novelty_anchor": _round(row.get("novelty_anchor")),
                "deviation": dict(row.get("deviation", {})),
                "events": dict(self._events),
                "last_event": self._last_event,
                "cost_ms": {k: round(v, 2) for k, v in self._cost.items()},
                "trim": {k: round(v, 3) for k, v in self._trim.items()},
            }

    def _analysis(self, image: Image.Image, keyframe=None) -> Analysis:
        """`image`'s Analysis, from the memo when this picture was analysed already (by identity, or
        as the same keyframe's same-size copy: the schedule observes a fitted copy); not in the lock."""
        key = _key(keyframe)
        with self._lock:
            for seen, seen_key, analysis in reversed(self._analyses):
                if seen is image or (key is not None and seen_key == key and seen.size == image.size):
                    return analysis
        analysis = analyse(image)
        with self._lock:
            if key is None:     # a keyframe made already (its key is tagged on at keyframe_made otherwise)
                key = next((_key(k) for k, _ in reversed(self._made) if k.image is image), None)
            self._analyses = [*self._analyses[-(MEMO - 1):], (image, key, analysis)]
        return analysis

    # -- inside the lock -------------------------------------------------------------------------
    def _observed_latent(self, keyframe) -> np.ndarray | None:
        """`keyframe`'s pooled latent if it was observed already (the schedule may encode a keyframe
        before the keyframe thread makes it the anchor), else None: set when it is observed."""
        key = _key(keyframe)
        return next((pooled for k, pooled in reversed(self._pooled) if k == key), None)

    def _reason(self, keyframe) -> str:
        return next((r for k, r in reversed(self._made) if _same(k, keyframe)), "")

    def _current_target(self) -> tuple[Image.Image, PaletteTarget, Metrics] | None:
        image = self._walk.target_image
        if image is None:
            return None
        if self._target is None or self._target[0] is not image:
            analysis = analyse(image)
            self._target = (image, PaletteTarget.of_lab(analysis.lab), analysis.metrics)
            self._trim = dict(TRIM_START)
        return self._target

    def _retrim(self, analysis: Analysis, palette: PaletteTarget, target: Metrics) -> None:
        """Integral action: grounding puts the input on the target, but the pass then adds its own
        push (chained img2img adds a colour cast, chroma and sharpness every time), so the
        displayed keyframe would sit one push beyond the target for ever. Each observed keyframe
        moves the trim by part of its measured deviation, so the outputs, not only the inputs,
        settle on the target."""
        for name in ("chroma", "sharpness"):
            out, ref = getattr(analysis.metrics, name), getattr(target, name)
            if out > 1e-6 and ref > 1e-6:
                trim = self._trim[name] * (ref / out) ** TRIM_RATE
                self._trim[name] = float(np.clip(trim, *TRIM_RANGE))
        cast = PaletteTarget.of_lab(analysis.lab, quantiles=False).mean[1:] - palette.mean[1:]
        for name, value in zip(("a", "b"), cast):
            self._trim[name] = float(np.clip(self._trim[name] - TRIM_RATE * value, -TRIM_AB, TRIM_AB))

    def _count(self, event: str, message: str) -> None:
        self._events[event] += 1
        if message:
            self._last_event = message
            log.info("%s", message)

    def _row(self, keyframe, metrics: Metrics, step_novelty, anchor_novelty, target: Metrics | None,
             event: str) -> dict:
        values = metrics.as_dict()
        deviation = {}
        if target is not None:
            for name, value in values.items():
                ref = getattr(target, name)
                deviation[name] = _round(relative(value, ref) if name in RELATIVE else
                                         (value - ref + 180.0) % 360.0 - 180.0 if name == "hue" else value - ref)
        return {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "keyframe": self._observed,
                "origin": keyframe.origin, "seed": "" if keyframe.seed is None else keyframe.seed,
                "reason": self._reason(keyframe),
                **values, "novelty": step_novelty, "novelty_anchor": anchor_novelty,
                "dev_chroma": deviation.get("chroma"), "dev_sharpness": deviation.get("sharpness"),
                "dev_hue": deviation.get("hue"), "event": event, "prompt": keyframe.prompt,
                "deviation": deviation}


def _round(value):
    return None if value is None else float(f"{value:.4g}")
