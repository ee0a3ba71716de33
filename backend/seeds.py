"""What each keyframe is asked for: the prompt rotation and the seed policy.

Plain state with no I/O: the ComfyUI source asks them before each keyframe, and a live config
edit replaces them.
"""

from __future__ import annotations

import random


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
