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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from backend import config_checks as _c
from backend import config_schema as _schema
from backend.config_checks import ConfigError, Section
from backend.desktop.rules import PauseSettings, parse_pause_settings
from backend.dream.settings import DreamSettings, parse_dream_settings

__all__ = ["ConfigError", "Config", "GenerationConfig", "HybridConfig", "ComfyUIConfig", "Prompt",
           "SeedConfig", "KeyframesConfig", "VaeConfig", "DisplayConfig", "ControlConfig", "LoggingConfig",
           "PauseSettings", "DreamSettings",
           "RESTART_ONLY", "check_writable", "load_config", "parse_config", "parse_config_text", "with_overrides",
           "changed_keys", "ConfigWatcher"]

log = logging.getLogger(__name__)


# Every key is declared ONCE below: its default, its checker (which holds the range) and whether a
# change needs a restart. parse_config, the --fps override and RESTART_ONLY read these declarations;
# tests keep config.yaml's values and the ranges in its comments equal to them.
key, section, path = _schema.key, _schema.section, _schema.path_rule
DEFAULT_URL = "http://127.0.0.1:8188"


@dataclass(frozen=True)
class HybridConfig:
    interpolation_frames: int | str = key("auto", _c.frames)  # in-betweens per segment, or "auto" (follows keyframe latency)
    keyframe_denoise: float = key(0.45, _c.number(0.0, 1.0))    # img2img strength for each new keyframe (feedback-loop drift)
    use_vae_interpolation: bool = key(True, _c.boolean)         # False: plain pixel crossfade between keyframes
    interpolation_method: str = key("spherical", _c.choice("spherical", "linear"))  # slerp or linear latent blend
    easing: str = key("linear", _c.choice("linear", "smoothstep", "cosine"))        # t curve inside a segment


@dataclass(frozen=True)
class GenerationConfig:
    mode: str = key("hybrid", _c.choice("hybrid", "img2img"))   # img2img: every frame a keyframe
    resolution: tuple[int, int] = key((512, 512), _c.resolution, restart=True)  # (width, height), multiples of 8
    hybrid: HybridConfig = section(HybridConfig)

    @property
    def in_betweens(self) -> int | str:
        """Frames between two keyframes as the schedule should use them: 0 in img2img mode, else
        hybrid.interpolation_frames (an int >= 0 or "auto")."""
        return 0 if self.mode == "img2img" else self.hybrid.interpolation_frames


@dataclass(frozen=True)
class ComfyUIConfig:
    url: str = key(DEFAULT_URL, _c.urls)  # one URL or a list (failover in order); 127.0.0.1, not localhost (IPv6 first on Windows)
    workflow: str = key("builtin:img2img", _schema.workflow_rule)     # "builtin:<name>" or an API-format .json (absolute)
    txt2img_workflow: str = key("builtin:txt2img", _schema.workflow_rule)  # the first keyframe when there is no start image
    checkpoint: str | None = key(None, _c.text(optional=True))   # checkpoint file name on the server; None = the workflow's
    node_ids: dict = key(dict, _c.node_ids)                       # role -> node id overrides for custom workflows ({} = auto)
    request_timeout: float = key(10.0, _c.number(0.1, 600.0))    # seconds for one HTTP request
    job_timeout: float = key(300.0, _c.number(1.0, 3600.0))      # seconds for one keyframe job
    memory_warn_mib: int = key(2048, _c.integer(0, 1_000_000))   # warn when ComfyUI's RAM grows this much; 0 = off
    urls: tuple[str, ...] = _schema.derived()                     # every server, url first (not a key: url's list)

    def __post_init__(self) -> None:
        # `url` arrives as one URL or as the checked list; `urls` keeps them all and `url` the first, for the
        # callers that talk to one server. A dataclasses.replace() hands both back: a url that is still
        # urls[0] keeps the list, a new single url replaces it.
        given = (self.url,) if isinstance(self.url, str) else tuple(self.url)
        if len(given) > 1 or not self.urls or self.urls[0] != given[0]:
            object.__setattr__(self, "urls", given)
        object.__setattr__(self, "url", given[0])


@dataclass(frozen=True)
class Prompt:
    prompt: str = "a dreamlike landscape, soft volumetric light, surreal, highly detailed"  # positive text
    negative: str = "text, watermark, signature, blurry, lowres"                          # negative text


@dataclass(frozen=True)
class SeedConfig:
    policy: str = key("random", _c.choice("random", "fixed", "increment"))  # increment: value, value+1, ...
    value: int = key(0, _c.integer(0, 2**64 - 1))                            # seed for fixed/increment


@dataclass(frozen=True)
class KeyframesConfig:
    source: str = key("comfyui", _c.choice("comfyui", "folder"), restart=True)  # img2img loop | morph your images
    folder: Path | None = key(None, path(optional=True, must="dir"), restart=True)  # image folder (absolute)
    start_image: Path | None = key(None, path(optional=True, must="file"), restart=True)  # K_0; None = txt2img / first image
    prompts: tuple[Prompt, ...] = key((Prompt(),), _c.prompts(Prompt))  # rotated in order, at least one
    prompt_period: int = key(20, _c.integer(1, 100_000))                 # keyframes per prompt before the next one
    # The sampler settings are checked against the server once, when the workflow is prepared.
    steps: int = key(20, _c.integer(1, 150), restart=True)               # sampler steps (img2img runs ~steps*denoise)
    cfg: float = key(7.0, _c.number(0.0, 30.0), restart=True)            # classifier-free guidance scale
    sampler: str = key("euler", _c.text(), restart=True)                 # ComfyUI sampler_name
    scheduler: str = key("normal", _c.text(), restart=True)              # ComfyUI scheduler
    seed: SeedConfig = section(SeedConfig)


@dataclass(frozen=True)
class VaeConfig:
    kind: str = key("auto", _c.choice("auto", "kl", "tiny"))   # auto: kl on CUDA, tiny (TAESD) on a CPU
    source: str | None = key(None, _schema.model_source_rule)       # path (absolute after loading) or Hub id; None = search
    family: str = key("auto", _c.choice("auto", "sd1", "sdxl", "sd3", "flux1", "flux2"))
    device: str = key("auto", _c.device)                       # "auto" | "cpu" | "cuda" | "cuda:N" | "mps"
    dtype: str = key("auto", _c.choice("auto", "float32", "float16", "bfloat16"))
    max_batch: int = key(8, _c.integer(1, 64))                 # frames decoded per batch
    models_dir: Path = key(Path("models"), path())  # Reverie's own weights folder, searched first
    comfyui_dir: Path | None = key(None, path(optional=True, must="dir"))  # ComfyUI root (models/...); None = not searched


@dataclass(frozen=True)
class DisplayConfig:
    fps: float = key(10.0, _c.number(0.1, 60.0))                       # target frames per second
    output_dir: Path = key(Path("output"), path(must="new_dir"), restart=True)  # current_frame.png, frames/, status.*
    png_compression: int = key(1, _c.integer(0, 9))                    # zlib level (1: much faster than 6, a bit larger)
    history_keep: int = key(0, _c.integer(0, 1_000_000))               # newest frames kept in output/history/, 0 = off
    ring_size: int = key(3, _c.integer(2, 16), restart=True)           # ring files output/frames/frame_{0..n-1}.png
    show_raw_keyframes: bool = key(False, _c.boolean)                  # True: keyframe slot shows ComfyUI's image
    record: bool = key(False, _c.boolean, restart=True)                # True: record what is shown to MP4 segments
    record_dir: Path | None = key(None, path(optional=True, must="new_dir"), restart=True)  # None = output_dir/recordings
    record_segment_seconds: float = key(60.0, _c.number(1.0, 3600.0), restart=True)  # length of one MP4 segment
    record_max_bytes: int = key(2_000_000_000, _c.integer(1_000_000, 10**13), restart=True)  # oldest deleted beyond

    def __post_init__(self) -> None:
        if self.record_dir is None:  # the default follows output_dir
            object.__setattr__(self, "record_dir", self.output_dir / "recordings")


@dataclass(frozen=True)
class ControlConfig:
    file: Path | str | None = key("auto", _schema.control_file_rule)  # the skin's command INI: "auto" | a path | None = off


@dataclass(frozen=True)
class LoggingConfig:
    level: str = key("INFO", _c.choice("DEBUG", "INFO", "WARNING", "ERROR", upper=True))
    file: Path | None = key(Path("output/reverie.log"), path(optional=True, must="new_file"))  # None = console only
    max_bytes: int = key(1_000_000, _c.integer(10_000, 1_000_000_000))  # rotate when the log reaches this size
    backups: int = key(3, _c.integer(0, 100))                             # rotated files kept


@dataclass(frozen=True)
class Config:
    generation: GenerationConfig = section(GenerationConfig)
    comfyui: ComfyUIConfig = section(ComfyUIConfig, restart=True)
    keyframes: KeyframesConfig = section(KeyframesConfig)
    vae: VaeConfig = section(VaeConfig, restart=True)
    display: DisplayConfig = section(DisplayConfig)
    control: ControlConfig = section(ControlConfig, restart=True)
    logging: LoggingConfig = section(LoggingConfig, restart=True)
    pause: PauseSettings = _schema.parsed(PauseSettings, parse_pause_settings)   # backend.desktop.rules
    dream: DreamSettings = _schema.parsed(DreamSettings, parse_dream_settings,   # backend.dream.settings
                                          restart=("references",))


# Key paths (or whole sections) that only take effect after a restart: the watcher reports them and
# keeps the running values. Everything else is applied live. Read off the declarations above.
RESTART_ONLY = _schema.restart_keys(Config)


def parse_config(data: Any, source: str = "<dict>", base_dir: str | Path | None = None) -> Config:
    """Validate a loaded YAML structure. Relative paths resolve against base_dir (default: cwd).
    Returns a Config or raises ConfigError listing every problem."""
    problems: list[str] = []
    base = Path(base_dir if base_dir is not None else Path.cwd()).absolute()
    config = Section(data, "", Config, problems, base).build()
    if config.keyframes.source == "folder" and config.keyframes.folder is None:
        problems.append("keyframes.folder: required when keyframes.source is 'folder'")
    if problems:
        raise ConfigError(source, problems)
    return config


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


def with_overrides(config: Config, *, fps: float | None = None, source: str | None = None,
                   folder: str | None = None, vae: str | None = None) -> Config:
    """Apply command-line overrides: --fps N, --source comfyui|folder|<image folder path> (a path means
    source "folder" with that folder), --folder DIR (source "folder" with DIR), --vae PATH (a VAE file,
    a TAESD pair's folder or a diffusers folder: overrides vae.source). Paths resolve against the
    current directory."""
    problems: list[str] = []
    display, keyframes, vae_config = config.display, config.keyframes, config.vae
    if fps is not None:
        display = dataclasses.replace(display, fps=_c.check_one("--fps", fps, _schema.declared(DisplayConfig, "fps"),
                                                                 problems, display.fps))
    if source is not None:
        if source.strip().lower() in ("comfyui", "folder"):
            keyframes = dataclasses.replace(keyframes, source=source.strip().lower())
        elif _is_dir(source):
            keyframes = dataclasses.replace(keyframes, source="folder", folder=Path(source).expanduser().absolute())
        else:
            problems.append(f"--source: must be 'comfyui', 'folder' or an existing image folder, got {source!r}")
    if folder is not None:
        if _is_dir(folder):
            keyframes = dataclasses.replace(keyframes, source="folder", folder=Path(folder).expanduser().absolute())
        else:
            problems.append(f"--folder: no such folder: {folder}")
    if keyframes.source == "folder" and keyframes.folder is None:
        problems.append("--source folder: keyframes.folder is not set in the config")
    if vae is not None:
        if _exists(vae):
            vae_config = dataclasses.replace(vae_config, source=str(Path(vae).expanduser().absolute()))
        else:
            problems.append(f"--vae: no such file or folder: {vae} (give a VAE file, the folder of a "
                            "taesd_encoder.pth + taesd_decoder.pth pair, or a diffusers VAE folder)")
    if problems:
        raise ConfigError("command line", problems)
    return dataclasses.replace(config, display=display, keyframes=keyframes, vae=vae_config)


def _exists(text: str) -> bool:
    try:
        return Path(text).expanduser().exists()
    except (OSError, RuntimeError):
        return False


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
