"""config.yaml -> frozen dataclasses, validated all at once, with a live-reload watcher.

`load_config(path)` reads the YAML file (UTF-8, a BOM is tolerated), `parse_config(data)` validates an
already-loaded dict. Every problem is collected into ONE `ConfigError` whose `.problems` are
"key.path: what is wrong" lines and whose message names the file. Unknown keys are rejected with the
closest known key suggested; duplicate keys are rejected too (PyYAML would silently keep the last).
Relative paths resolve against the config file's folder. Modules receive their section dataclass,
never the raw dict. No torch import here, so `--help` and config errors stay instant.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from backend import config_checks as _c
from backend.config_checks import ConfigError, Section

__all__ = ["ConfigError", "Config", "GenerationConfig", "HybridConfig", "ComfyUIConfig", "Prompt",
           "SeedConfig", "KeyframesConfig", "VaeConfig", "DisplayConfig", "ControlConfig", "LoggingConfig",
           "RESTART_ONLY", "check_writable", "load_config", "parse_config", "parse_config_text", "with_overrides",
           "changed_keys", "ConfigWatcher"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HybridConfig:
    interpolation_frames: int | str = "auto"  # in-betweens per segment, 0..1000, or "auto" (follows keyframe latency)
    keyframe_denoise: float = 0.45            # img2img strength 0..1 for each new keyframe (feedback-loop drift)
    use_vae_interpolation: bool = True        # False: plain pixel crossfade between keyframes
    interpolation_method: str = "spherical"   # "spherical" (slerp) | "linear" latent blend
    easing: str = "linear"                    # t curve inside a segment: "linear" | "smoothstep" | "cosine"


@dataclass(frozen=True)
class GenerationConfig:
    mode: str = "hybrid"                      # "hybrid" | "img2img" (every frame a keyframe)
    resolution: tuple[int, int] = (512, 512)  # (width, height) in pixels, multiples of 8, 64..4096 each
    hybrid: HybridConfig = field(default_factory=HybridConfig)

    @property
    def in_betweens(self) -> int | str:
        """Frames between two keyframes as the schedule should use them: 0 in img2img mode, else
        hybrid.interpolation_frames (an int >= 0 or "auto")."""
        return 0 if self.mode == "img2img" else self.hybrid.interpolation_frames


@dataclass(frozen=True)
class ComfyUIConfig:
    url: str = "http://127.0.0.1:8188"        # ComfyUI server; 127.0.0.1, not localhost (IPv6 first on Windows)
    workflow: str = "builtin:img2img"         # "builtin:<name>" or an API-format workflow .json path (absolute)
    txt2img_workflow: str = "builtin:txt2img"  # used for the first keyframe when there is no start image
    checkpoint: str | None = None             # checkpoint file name on the server; None = the workflow's own
    node_ids: dict = field(default_factory=dict)  # role -> node id overrides for custom workflows ({} = auto)
    request_timeout: float = 10.0             # seconds for one HTTP request, 0.1..600
    job_timeout: float = 300.0                # seconds for one keyframe job, 1..3600


@dataclass(frozen=True)
class Prompt:
    prompt: str = "a dreamlike landscape, soft volumetric light, surreal, highly detailed"  # positive text
    negative: str = "text, watermark, signature, blurry, lowres"                          # negative text


@dataclass(frozen=True)
class SeedConfig:
    policy: str = "random"                    # "random" | "fixed" | "increment" (from value, +1 per keyframe)
    value: int = 0                            # seed for fixed/increment, 0..2**64-1


@dataclass(frozen=True)
class KeyframesConfig:
    source: str = "comfyui"                   # "comfyui" (img2img feedback loop) | "folder" (morph your images)
    folder: Path | None = None                # image folder for source "folder" (absolute after loading)
    start_image: Path | None = None           # first keyframe K_0; None = txt2img (or the folder's first image)
    prompts: tuple[Prompt, ...] = (Prompt(),)  # rotated in order, at least one
    prompt_period: int = 20                   # keyframes per prompt before the next one, 1..100000
    steps: int = 20                           # sampler steps, 1..150 (img2img runs about steps*denoise)
    cfg: float = 7.0                          # classifier-free guidance scale, 0..30
    sampler: str = "euler"                    # ComfyUI sampler_name (checked against the server at start)
    scheduler: str = "normal"                 # ComfyUI scheduler (checked against the server at start)
    seed: SeedConfig = field(default_factory=SeedConfig)


@dataclass(frozen=True)
class VaeConfig:
    kind: str = "auto"                        # "auto" (kl on CUDA, tiny on a CPU) | "kl" (the SD VAE) | "tiny" (TAESD)
    source: str | None = None                 # path (absolute after loading) or Hugging Face id; None = search
    family: str = "auto"                      # "auto" | "sd1" | "sdxl" | "sd3" | "flux1" | "flux2"
    device: str = "auto"                      # "auto" | "cpu" | "cuda" | "cuda:N" | "mps"
    dtype: str = "auto"                       # "auto" | "float32" | "float16" | "bfloat16"
    max_batch: int = 8                        # frames decoded per batch, 1..64
    comfyui_dir: Path | None = None           # ComfyUI root to find models/vae etc. in; None = not searched


@dataclass(frozen=True)
class DisplayConfig:
    fps: float = 10.0                         # target frames per second, 0.1..60
    output_dir: Path = Path("output")         # where current_frame.png, frames/, status.* go (absolute after loading)
    png_compression: int = 1                  # zlib level 0..9; 1 is 1.7-3x faster than 6 for ~10% more bytes
    history_keep: int = 0                     # newest frames kept in output/history/, 0 = no history
    ring_size: int = 3                        # ring files output/frames/frame_{0..n-1}.png, 2..16
    show_raw_keyframes: bool = False          # True: keyframe slot shows ComfyUI's image, not decode(z_s)


@dataclass(frozen=True)
class ControlConfig:
    file: Path | str | None = "auto"        # skin's command INI: "auto" = installed skin's Control.ini; None = off


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"                       # "DEBUG" | "INFO" | "WARNING" | "ERROR"
    file: Path | None = Path("output/reverie.log")  # rotating log file; None = console only
    max_bytes: int = 1_000_000                # rotate when the log reaches this size, 10_000..1_000_000_000
    backups: int = 3                          # rotated files kept, 0..100


@dataclass(frozen=True)
class Config:
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    comfyui: ComfyUIConfig = field(default_factory=ComfyUIConfig)
    keyframes: KeyframesConfig = field(default_factory=KeyframesConfig)
    vae: VaeConfig = field(default_factory=VaeConfig)
    display: DisplayConfig = field(default_factory=DisplayConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


# Key paths (or whole sections) that only take effect after a restart: the watcher reports them and
# keeps the running values. Everything else is applied live.
RESTART_ONLY = frozenset({
    "generation.resolution", "comfyui", "vae", "display.output_dir", "display.ring_size",
    "keyframes.source", "keyframes.folder", "keyframes.start_image", "control", "logging",
    # The sampler settings are checked against the server once, when the workflow is prepared.
    "keyframes.steps", "keyframes.cfg", "keyframes.sampler", "keyframes.scheduler",
})


def parse_config(data: Any, source: str = "<dict>", base_dir: str | Path | None = None) -> Config:
    """Validate a loaded YAML structure. Relative paths resolve against base_dir (default: cwd).
    Returns a Config or raises ConfigError listing every problem."""
    problems: list[str] = []
    base = Path(base_dir if base_dir is not None else Path.cwd()).absolute()
    root = Section(data, "", Config, problems, base)
    g = root.sub("generation", GenerationConfig)
    h = g.sub("hybrid", HybridConfig)
    generation = GenerationConfig(
        mode=g.get("mode", _c.choice("hybrid", "img2img")),
        resolution=g.get("resolution", _c.resolution),
        hybrid=HybridConfig(
            interpolation_frames=h.get("interpolation_frames", _c.frames),
            keyframe_denoise=h.get("keyframe_denoise", _c.number(0.0, 1.0)),
            use_vae_interpolation=h.get("use_vae_interpolation", _c.boolean),
            interpolation_method=h.get("interpolation_method", _c.choice("spherical", "linear")),
            easing=h.get("easing", _c.choice("linear", "smoothstep", "cosine"))))
    c = root.sub("comfyui", ComfyUIConfig)
    comfyui = ComfyUIConfig(
        url=c.get("url", _c.url), workflow=c.get("workflow", c.workflow_check),
        txt2img_workflow=c.get("txt2img_workflow", c.workflow_check),
        checkpoint=c.get("checkpoint", _c.text(optional=True)), node_ids=c.get("node_ids", _c.node_ids),
        request_timeout=c.get("request_timeout", _c.number(0.1, 600.0)),
        job_timeout=c.get("job_timeout", _c.number(1.0, 3600.0)))
    k = root.sub("keyframes", KeyframesConfig)
    s = k.sub("seed", SeedConfig)
    keyframes = KeyframesConfig(
        source=k.get("source", _c.choice("comfyui", "folder")),
        folder=k.get("folder", k.path_check(optional=True, must="dir")),
        start_image=k.get("start_image", k.path_check(optional=True, must="file")),
        prompts=k.get("prompts", _c.prompts(Prompt)), prompt_period=k.get("prompt_period", _c.integer(1, 100_000)),
        steps=k.get("steps", _c.integer(1, 150)), cfg=k.get("cfg", _c.number(0.0, 30.0)),
        sampler=k.get("sampler", _c.text()), scheduler=k.get("scheduler", _c.text()),
        seed=SeedConfig(policy=s.get("policy", _c.choice("random", "fixed", "increment")),
                        value=s.get("value", _c.integer(0, 2**64 - 1))))
    v = root.sub("vae", VaeConfig)
    vae = VaeConfig(
        kind=v.get("kind", _c.choice("auto", "kl", "tiny")), source=v.get("source", v.model_source),
        family=v.get("family", _c.choice("auto", "sd1", "sdxl", "sd3", "flux1", "flux2")),
        device=v.get("device", _c.device), dtype=v.get("dtype", _c.choice("auto", "float32", "float16", "bfloat16")),
        max_batch=v.get("max_batch", _c.integer(1, 64)),
        comfyui_dir=v.get("comfyui_dir", v.path_check(optional=True, must="dir")))
    d = root.sub("display", DisplayConfig)
    display = DisplayConfig(
        fps=d.get("fps", _c.number(0.1, 60.0)), output_dir=d.get("output_dir", d.path_check(must="new_dir")),
        png_compression=d.get("png_compression", _c.integer(0, 9)),
        history_keep=d.get("history_keep", _c.integer(0, 1_000_000)), ring_size=d.get("ring_size", _c.integer(2, 16)),
        show_raw_keyframes=d.get("show_raw_keyframes", _c.boolean))
    ct = root.sub("control", ControlConfig)
    control = ControlConfig(file=ct.get("file", lambda v: "auto" if v == "auto" else ct.path_check(optional=True)(v)))
    lg = root.sub("logging", LoggingConfig)
    logging_ = LoggingConfig(
        level=lg.get("level", _c.choice("DEBUG", "INFO", "WARNING", "ERROR", upper=True)),
        file=lg.get("file", lg.path_check(optional=True, must="new_file")),
        max_bytes=lg.get("max_bytes", _c.integer(10_000, 1_000_000_000)), backups=lg.get("backups", _c.integer(0, 100)))
    if keyframes.source == "folder" and keyframes.folder is None:
        problems.append("keyframes.folder: required when keyframes.source is 'folder'")
    if problems:
        raise ConfigError(source, problems)
    return Config(generation, comfyui, keyframes, vae, display, control, logging_)


def parse_config_text(text: str, source: str = "<text>", base_dir: str | Path | None = None) -> Config:
    """Parse YAML text; syntax errors become a ConfigError with line and column."""
    return parse_config(_c.load_yaml(text, source), source, base_dir)


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; relative paths in it resolve against its folder."""
    path = Path(path).expanduser().absolute()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(path, ["config file not found (copy config.yaml from the Reverie folder, or pass "
                                 "--config PATH)"]) from None
    except OSError as e:
        if path.is_dir():  # IsADirectoryError on POSIX, PermissionError on Windows
            raise ConfigError(path, ["this is a folder, not a config file; pass --config PATH/config.yaml"]) from None
        raise ConfigError(path, [f"cannot read the config file: {e.strerror or e}"]) from None
    return parse_config_text(_c.decode_text(data, str(path)), str(path), path.parent)


def check_writable(config: Config, source: str | Path = "config") -> None:
    """Raise ConfigError when the output folder or the log file cannot be written (creates them:
    call once at start, before anything is written)."""
    problems = _c.writable_problems(config.display.output_dir, config.logging.file)
    if problems:
        raise ConfigError(source, problems)


def with_overrides(config: Config, *, fps: float | None = None, source: str | None = None) -> Config:
    """Apply command-line overrides: --fps N, --source comfyui|folder|<image folder path> (a path means
    source "folder" with that folder, resolved against the current directory)."""
    problems: list[str] = []
    display, keyframes = config.display, config.keyframes
    if fps is not None:
        display = dataclasses.replace(display, fps=_c.check_one("--fps", fps, _c.number(0.1, 60.0), problems, 10.0))
    if source is not None:
        if source.strip().lower() in ("comfyui", "folder"):
            keyframes = dataclasses.replace(keyframes, source=source.strip().lower())
        elif _is_dir(source):
            keyframes = dataclasses.replace(keyframes, source="folder", folder=Path(source).expanduser().absolute())
        else:
            problems.append(f"--source: must be 'comfyui', 'folder' or an existing image folder, got {source!r}")
    if keyframes.source == "folder" and keyframes.folder is None:
        problems.append("--source folder: keyframes.folder is not set in the config")
    if problems:
        raise ConfigError("command line", problems)
    return dataclasses.replace(config, display=display, keyframes=keyframes)


def _is_dir(text: str) -> bool:
    try:
        return Path(text).expanduser().is_dir()
    except (OSError, RuntimeError):  # too long, no access, no home folder: not a folder we can use
        return False


def changed_keys(old: Config, new: Config) -> list[str]:
    """Dotted key paths whose values differ between two configs, in declaration order."""
    a, b = _c.flatten(old), _c.flatten(new)
    return [key for key in a if a[key] != b[key]]


def _needs_restart(key: str) -> bool:
    return any(key == r or key.startswith(r + ".") for r in RESTART_ONLY)


class ConfigWatcher:
    """Re-reads the config file after an edit. `poll()` is cheap enough to call every loop iteration:
    it stats the file at most every `interval` seconds and parses only when mtime or size changed.
    `overrides` (with_overrides' keywords, e.g. {"fps": 24}) are applied to every edit before it is
    compared, so command-line values stay in force and are not reported as pending restarts.

    `problem` is "" normally; after an edit that is ignored (invalid YAML or values, not UTF-8, the
    file emptied or deleted for longer than `absent_grace` seconds) it is one line naming the problem,
    and it goes back to "" once a good edit loads (status shows it: a skin user never sees the log)."""

    def __init__(self, path: str | Path, current: Config, *, interval: float = 0.5,
                 clock: Callable[[], float] = time.monotonic, overrides: dict[str, Any] | None = None,
                 absent_grace: float = 2.0):
        self.path = Path(path).expanduser().absolute()
        self.current = current
        self.overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        self.interval = interval
        self.problem = ""
        # An editor that saves by truncating, or by deleting and renaming, leaves the file empty or
        # missing for a moment: only an absence that outlasts this grace is reported.
        self.absent_grace = absent_grace
        self._absent_since: float | None = None
        self._absence_reported = False
        self._clock = clock
        self._next_check = clock() + interval
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _absent(self, now: float, what: str) -> None:
        if self._absent_since is None:
            self._absent_since = now
        if now - self._absent_since >= self.absent_grace and not self._absence_reported:
            self._absence_reported = True
            self.problem = f"{self.path.name} {what}; the running settings are kept until it is saved again"
            log.warning("config %s %s; the running config is kept", self.path, what)

    def _present(self) -> None:
        self._absent_since = None
        if self._absence_reported:  # the absence was the problem, and it is over
            self._absence_reported = False
            self.problem = ""

    def poll(self) -> Config | None:
        """A new valid Config when a live-applicable setting changed, else None. Invalid edits are
        logged with all their problems, set `problem`, and the running config is kept; restart-only
        changes are logged and not applied (the returned Config keeps their running values)."""
        now = self._clock()
        if now < self._next_check:
            return None
        self._next_check = now + self.interval
        stamp = self._stat()
        if stamp is None:
            self._absent(now, "was deleted or moved")
            return None
        if stamp == self._stamp:
            self._present()  # unchanged (perhaps put back exactly as it was)
            return None
        try:
            data = self.path.read_bytes()
        except OSError as e:  # e.g. an editor or antivirus holds it on Windows: try again next interval
            log.debug("config %s: cannot read it yet (%s)", self.path, e)
            return None
        if self._stat() != stamp:
            return None  # an editor is half-way through saving: look again next interval
        if not data.strip():
            self._absent(now, "is empty")  # never taken as "all defaults"
            return None
        self._present()
        self._stamp = stamp
        try:
            text = _c.decode_text(data, str(self.path))
            new = with_overrides(parse_config_text(text, str(self.path), self.path.parent), **self.overrides)
        except ConfigError as e:
            log.warning("%s\nconfig edit ignored; the running config is kept", e)
            self.problem = _c.one_line("; ".join(e.problems))
            return None
        except Exception:  # noqa: BLE001 - a bug in a check must not stop a running daemon
            log.exception("config edit ignored after an unexpected error; the running config is kept")
            self.problem = "an unexpected error while reading it (see the log)"
            return None
        self.problem = ""
        changed = changed_keys(self.current, new)
        restart = [key for key in changed if _needs_restart(key)]
        live = [key for key in changed if not _needs_restart(key)]
        if restart:
            log.warning("config: %s changed; restart Reverie to apply", ", ".join(restart))
        for key in restart:
            new = _c.replace_at(new, self.current, key.split("."))
        if not live:
            return None
        log.info("config reloaded: %s", ", ".join(live))
        self.current = new
        return new
