"""The `dream:` config section: frozen DreamSettings and parse_dream_settings(raw, path).

The config owner calls `parse_dream_settings(raw_section, "dream", config_folder)` and reports the
problems with the rest; every key has a default, so an absent section means "all controls on".
Reference entries are resolved against the config file's folder here; whether they are images
is checked at start (backend.dream.references), where a bad one stops the daemon.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

MODES = ("reinhard", "histogram", "off")   # palette grounding modes (backend.dream.palette); numpy-free here


@dataclass(frozen=True)
class DreamSettings:
    control: bool = True              # False: measure only (metrics, quality.csv); no grounding, anchor walk or guard
    grounding: str = "histogram"      # histogram | reinhard | off: palette grounding of the img2img input
    chroma_strength: float = 0.6      # 0..1, how far a*/b* move toward the anchor's per keyframe
    luma_strength: float = 0.2        # 0..1, how far L* moves toward the anchor's per keyframe
    detail_strength: float = 1.0      # 0..1, how far the input's sharpness moves toward the anchor's
    anchor_every: int = 16            # keyframes chained from the previous one before one is made from the anchor; 0 = never
    anchor_denoise: float = 0.6       # denoise of the keyframe made from the anchor
    prompt_settle: int = 4            # after a prompt change, keyframes made ungrounded before the new anchor is taken
    collapse_novelty: float = 0.0001  # novelty to the previous keyframe below this counts as "not moving"
    collapse_patience: int = 3        # keyframes in a row below collapse_novelty before the guard fires
    chroma_band: float = 0.5          # guard: chroma beyond +-this fraction of the anchor's fires it
    sharpness_band: float = 0.5       # guard: sharpness beyond +-this fraction of the anchor's fires it
    magenta_max: float = 0.5          # guard: magenta-crimson share above this fires it
    blank_l_mean: float = 5.0         # a keyframe darker than this L* mean is blank (never shown)
    blank_l_std: float = 1.0          # a keyframe flatter than this L* std is blank (never shown)
    references: tuple[str, ...] = ()  # image files or folders: anchors and the palette come from these in turn
    reference_weight: float = 0.7     # comfyui.workflow builtin:img2img_ipadapter: the IP-Adapter weight on the reference
    quality_log_bytes: int = 5_000_000  # output/quality.csv is rotated to quality.csv.1 .. at this size
    quality_log_keep: int = 3         # rotated quality.csv files kept

    def summary(self) -> str:
        """One line for --check: the drift controls in force."""
        if not self.control:
            return "dream control off (keyframes are measured, not steered)"
        anchor = f"anchor every {self.anchor_every} at denoise {self.anchor_denoise:g}" if self.anchor_every \
            else "no anchor walk"
        refs = f", {len(self.references)} reference entr{'y' if len(self.references) == 1 else 'ies'}" \
            if self.references else ""
        return (f"{self.grounding} grounding (chroma {self.chroma_strength:g}, luma {self.luma_strength:g}), "
                f"detail {self.detail_strength:g}, {anchor}, collapse guard below novelty "
                f"{self.collapse_novelty:g} for {self.collapse_patience} keyframes{refs}")


def seed_warning(settings: DreamSettings, seed_policy: str) -> str:
    """"" or the warning for a fixed seed without the anchor walk (it drives the loop to a fixed point)."""
    if seed_policy == "fixed" and (not settings.control or settings.anchor_every == 0):
        return ("keyframes.seed.policy is fixed and the anchor walk is off: a fixed seed drives the img2img loop "
                "to one fixed picture; use policy random or increment, or set dream.anchor_every")
    return ""


_RANGES: dict[str, tuple[float, float]] = {
    "chroma_strength": (0.0, 1.0), "luma_strength": (0.0, 1.0), "detail_strength": (0.0, 1.0),
    "anchor_every": (0, 10_000), "anchor_denoise": (0.05, 1.0),
    "reference_weight": (0.0, 2.0), "prompt_settle": (0, 100),
    "collapse_novelty": (0.0, 1.0), "collapse_patience": (1, 1000), "chroma_band": (0.05, 10.0),
    "sharpness_band": (0.05, 10.0), "magenta_max": (0.0, 1.0), "blank_l_mean": (0.0, 100.0),
    "blank_l_std": (0.0, 50.0), "quality_log_bytes": (10_000, 10**10), "quality_log_keep": (0, 100),
}


def parse_dream_settings(raw: dict | None, path: str = "dream",
                         base: Path | str | None = None) -> tuple[DreamSettings, list[str]]:
    """`raw` (the YAML mapping, or None) -> (settings, problems); problems name `path.key` each.
    `base`: the folder relative reference entries resolve against (None: kept as written)."""
    if raw is None:
        return DreamSettings(), []
    if not isinstance(raw, dict):
        return DreamSettings(), [f"{path}: must be a mapping of settings, got {type(raw).__name__}"]
    defaults, problems, values = DreamSettings(), [], {}
    known = {f.name for f in fields(DreamSettings)}
    for key in sorted(set(map(str, raw)) - known):
        problems.append(f"{path}.{key}: unknown key (known: {', '.join(sorted(known))})")
    for key in sorted(known & set(raw)):
        value, default, where = raw[key], getattr(defaults, key), f"{path}.{key}"
        if key == "references":
            parsed = _references(value, where, problems)
            if parsed is not None and base is not None:
                try:
                    parsed = tuple(_resolve(entry, Path(base)) for entry in parsed)
                except (OSError, RuntimeError, ValueError) as exc:   # ~nobody, a NUL, a path too long
                    problems.append(f"{where}: cannot use this path ({exc}); give a shorter or accessible path")
                    parsed = None
        elif isinstance(default, bool):
            parsed = value if isinstance(value, bool) else problems.append(f"{where}: must be true or false, got {value!r}")
        elif key == "grounding":
            parsed = value if value in MODES else problems.append(
                f"{where}: must be one of {', '.join(MODES)}, got {value!r}")
        else:
            parsed = _number(value, type(default), _RANGES[key], where, problems)
        if parsed is not None:
            values[key] = parsed
    return DreamSettings(**values), problems


def _number(value, kind: type, bounds: tuple[float, float], where: str, problems: list[str]):
    low, high = bounds
    ok_type = isinstance(value, int) if kind is int else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not low <= value <= high:
        what = "an integer" if kind is int else "a number"
        problems.append(f"{where}: must be {what} from {low:g} to {high:g}, got {value!r}")
        return None
    return kind(value)


def _resolve(entry: str, base: Path) -> str:
    path = Path(entry.strip()).expanduser()
    return os.path.normpath(path if path.is_absolute() else base / path)


def _references(value, where: str, problems: list[str]):
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in items):
        problems.append(f"{where}: must be an image path, a folder, or a list of them, got {value!r}")
        return None
    return tuple(items)
