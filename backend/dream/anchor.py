"""The anchor walk: which image the next keyframe is made from, and what the palette aims at.

Without references: the first keyframe K_0 is the anchor and the palette target. Keyframes
are chained (each from the one before) until `every` of them were made since the anchor; the
next one is made from the anchor image at `denoise` and becomes the new anchor, so at most
`every` chained passes ever compound. The palette target stays the prompt's first anchor, so
anchors cannot walk away in colour either. A prompt change lets `settle` keyframes be made
from the previous one without grounding (so the new prompt can change the picture), then the
last of them becomes the new anchor and target.
With references: anchors are made from the references in turn (the first right after K_0),
and the palette target is the current reference.
A rescue (the guard fired) makes the next keyframe from the anchor like a due re-anchor.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class Step:
    """What the next keyframe is made from: `source` None means the previous keyframe."""

    source: Image.Image | None
    denoise: float | None
    reason: str               # "" chained | "anchor" | "reference" | "prompt" (settling) | a rescue reason
    grounded: bool
    reference: int = -1       # index of the reference `source` is, else -1


class AnchorWalk:
    def __init__(self, every: int, denoise: float, settle: int, references: list[Image.Image] | None = None):
        self.every, self.denoise, self.settle = every, denoise, settle
        self.references = list(references or [])
        self.anchor = None            # the anchor Keyframe (or None before K_0)
        self.target_image: Image.Image | None = None   # what the palette aims at
        self.since_anchor = 0         # keyframes chained since the anchor was made
        self.anchors_made = 0
        self._reference = -1          # index of the current reference
        self._settling: int | None = None   # keyframes still to make ungrounded after a prompt change
        self._rescue = ""

    def configure(self, every: int, denoise: float, settle: int) -> None:
        self.every, self.denoise, self.settle = every, denoise, settle

    def rescue(self, reason: str) -> None:
        """The guard fired: make the next keyframe from the anchor."""
        self._rescue = reason

    @property
    def rescue_pending(self) -> str:
        return self._rescue

    def prompt_changed(self) -> None:
        if self.references:
            self._rescue = self._rescue or "prompt"
        elif self.anchor is not None:
            self._settling = self.settle
            self.target_image = None      # no grounding toward the old prompt's palette

    def next_step(self, previous) -> Step:
        """The plan for the keyframe after `previous` (a Keyframe); no state changes."""
        if self._settling is not None:
            return Step(None, None, "prompt", False)
        if self.references and (self._reference < 0 or self._rescue or self._due()):
            index = self._next_reference() if (self._reference < 0 or self._due()) else self._reference
            return Step(self.references[index], self.denoise, self._rescue or "reference", False, index)
        if self.anchor is not None and (self._rescue or self._due()):
            return Step(self.anchor.image, self.denoise, self._rescue or "anchor", True)
        return Step(None, None, "", self.target_image is not None)

    def made(self, keyframe, step: Step | None) -> None:
        """`keyframe` was accepted; `step` is the plan it was made with (None: not planned by us)."""
        if keyframe.origin == "skipped":
            return
        fresh = keyframe.origin in ("txt2img", "start_image")
        if step is not None and step.reference >= 0:              # made from a reference
            self._reference = step.reference
            self._take_anchor(keyframe, self.references[step.reference])
        elif step is not None and step.source is not None:        # made from the anchor
            self._take_anchor(keyframe, None)
        elif fresh or self.anchor is None:
            reference = self._current_reference()
            self._take_anchor(keyframe, keyframe.image if reference is None else reference)
        elif self._settling is not None and self._settling > 1:
            self._settling -= 1
            self.since_anchor += 1
        elif self._settling is not None:
            self._take_anchor(keyframe, keyframe.image)          # the new prompt's first anchor
        else:
            self.since_anchor += 1

    def _take_anchor(self, keyframe, target: Image.Image | None) -> None:
        """`keyframe` is the new anchor; `target` the new palette target (None: keep the current)."""
        self.anchor, self.since_anchor, self._rescue, self._settling = keyframe, 0, "", None
        self.anchors_made += 1
        if target is not None or self.target_image is None:
            self.target_image = target if target is not None else keyframe.image

    def _current_reference(self) -> Image.Image | None:
        return self.references[self._reference] if self.references and self._reference >= 0 else None

    def _due(self) -> bool:
        return self.every > 0 and self.since_anchor >= self.every - 1

    def _next_reference(self) -> int:
        return (self._reference + 1) % len(self.references)
