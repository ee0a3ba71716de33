"""Build the daemon's pieces from a validated Config: keyframe source, VAE encoder, schedule, dream.

Every problem a user must fix (unreadable start image, ComfyUI rejecting the checkpoint or
workflow, missing VAE weights, empty folder) becomes a `UserError` with one clear sentence;
main turns it into exit code 2 without a traceback. Torch-heavy imports stay inside functions
so `--help` and config errors never pay for them.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError

from backend.config import Config
from backend.images import load_fitted
from backend.folder_source import FolderSource
from backend.frames import KeyframeSourceError
from backend.keyframes import ComfyUISource, SeedPolicy

log = logging.getLogger(__name__)


class UserError(Exception):
    """A problem in the user's setup, told in one sentence (no traceback)."""


def schedule_settings(config: Config) -> Any:
    """Config -> hybrid_generator.ScheduleSettings (imports torch)."""
    from backend.interpolation.hybrid_generator import ScheduleSettings

    hybrid = config.generation.hybrid
    return ScheduleSettings(
        resolution=tuple(config.generation.resolution), mode=config.generation.mode,
        interpolation_frames=hybrid.interpolation_frames, use_vae_interpolation=hybrid.use_vae_interpolation,
        interpolation_method=hybrid.interpolation_method, easing=hybrid.easing,
        show_raw_keyframes=config.display.show_raw_keyframes, fps=config.display.fps,
        max_batch=config.vae.max_batch)


def needs_vae(config: Config) -> bool:
    return config.generation.mode == "hybrid" and config.generation.hybrid.use_vae_interpolation


def build_encoder(config: Config) -> Any:
    """The LatentEncoder the config asks for, or None when no frame needs a VAE."""
    if not needs_vae(config):
        return None
    from backend.interpolation.latent_encoder import LatentEncoder, VaeNotFoundError

    vae = config.vae
    checkpoint, vae_file = workflow_vae(config)
    try:
        return LatentEncoder.load(kind=vae.kind, source=vae.source, family=vae.family, device=vae.device,
                                  dtype=vae.dtype, comfyui_dir=vae.comfyui_dir, max_batch=vae.max_batch,
                                  checkpoint=checkpoint, vae_file=vae_file, models_dir=vae.models_dir)
    except VaeNotFoundError as exc:
        raise UserError(str(exc)) from None
    except (ValueError, OSError, RuntimeError) as exc:
        raise UserError(f"The VAE could not be loaded ({exc}); check the vae section of the config.") from None


def workflow_vae(config: Config) -> tuple[str | None, str | None]:
    """(checkpoint, VAELoader file) that ComfyUI decodes the keyframes with, as ComfyUI names them:
    the configured comfyui.checkpoint, else the img2img workflow's own ckpt_name. (None, None) when
    ComfyUI makes no keyframes, so any VAE fits (a folder source encodes and decodes with the same one)."""
    if config.keyframes.source != "comfyui":
        return None, None
    from backend.comfyui.workflow import WorkflowError, load_workflow

    try:
        workflow = load_workflow(config.comfyui.workflow, config.comfyui.node_ids or None)
    except (WorkflowError, OSError):  # build_source reports it with the fix
        return config.comfyui.checkpoint, None
    vae_names = [node["inputs"].get("vae_name") for node in workflow.graph.values() if node["class_type"] == "VAELoader"]
    vae_file = next((name for name in vae_names if isinstance(name, str) and name), None)
    return config.comfyui.checkpoint or workflow.checkpoint(), vae_file


def load_start_image(path: Path | None, resolution: tuple[int, int]) -> Image.Image | None:
    if path is None:
        return None
    try:
        return load_fitted(path, resolution)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise UserError(f"The start image {path} cannot be read ({exc}); fix keyframes.start_image.") from None


def seed_policy(config: Config) -> SeedPolicy:
    return SeedPolicy(config.keyframes.seed.policy, config.keyframes.seed.value)


def build_dream(config: Config) -> Any:
    """The Dream (backend.dream) that measures every keyframe into output/quality.csv and, for the
    ComfyUI source, steers the img2img loop. A folder source is measured only: its keyframes are
    the user's pictures, not a loop that drifts. Bad reference images are a UserError naming each."""
    from backend.dream.dream import Dream
    from backend.dream.references import ReferenceError, load_references
    from backend.dream.settings import seed_warning

    comfy = config.keyframes.source == "comfyui"
    warning = seed_warning(config.dream, config.keyframes.seed.policy) if comfy else ""
    if warning:
        log.warning("%s", warning)
    references = None
    if comfy and config.dream.references:
        try:
            references = load_references(config.dream.references)  # entries are absolute (config.py)
        except ReferenceError as exc:
            raise UserError(str(exc)) from None
    return Dream(config.dream, quality_path=config.display.output_dir / "quality.csv", references=references,
                 steering=comfy)


def build_client(config: Config) -> Any:
    """A ComfyClient for one comfyui.url; a FailoverClient over the list when there are several."""
    comfy = config.comfyui
    kwargs = dict(request_timeout=comfy.request_timeout, job_timeout=comfy.job_timeout)
    if len(comfy.urls) > 1:
        try:
            from backend.comfyui.failover import FailoverClient
        except ImportError:  # not built yet: the first server alone, said once
            log.warning("comfyui.url lists %d servers but this Reverie has no failover; using %s only",
                        len(comfy.urls), comfy.url)
        else:
            return FailoverClient(list(comfy.urls), **kwargs)
    from backend.comfyui.client import ComfyClient

    return ComfyClient(comfy.url, **kwargs)


def build_source(config: Config, dream: Any = None) -> tuple[Any, Any]:
    """(keyframe source, ComfyClient or None). Checks the workflow against ComfyUI when it is up.
    `dream`: the Dream whose hooks the ComfyUI source calls (a folder source has none to call)."""
    keyframes, resolution = config.keyframes, tuple(config.generation.resolution)
    start_image = load_start_image(keyframes.start_image, resolution)  # K_0 for either source
    if keyframes.source == "folder":
        try:
            return FolderSource(keyframes.folder, resolution, start_image=start_image), None
        except KeyframeSourceError as exc:
            raise UserError(str(exc)) from None
    from backend.comfyui.client import discover
    from backend.comfyui.discovery import LIKELY_PORTS
    from backend.comfyui.keyframe import KeyframeGenerator
    from backend.comfyui.workflow import WorkflowError, load_workflow
    from backend.desktop.instance_lock import instance_tag

    comfy = config.comfyui
    try:
        img2img = load_workflow(comfy.workflow, comfy.node_ids or None)
        txt2img = load_workflow(comfy.txt2img_workflow, comfy.node_ids or None)
    except (WorkflowError, OSError) as exc:
        raise UserError(f"The ComfyUI workflow cannot be used: {exc}") from None
    if "image" not in img2img.roles:
        # every keyframe after the first is img2img of the one before: without a LoadImage node the
        # first of them would fail, so say it now
        raise UserError(f"The img2img workflow {comfy.workflow} has no LoadImage node to receive the previous "
                        f"keyframe; add one or set comfyui.node_ids.image.")
    for url in comfy.urls:
        warn_if_unencrypted(url)
    client = build_client(config)
    # Two daemons (two output folders) sharing one ComfyUI must not overwrite each other's uploads.
    generator = KeyframeGenerator(
        client, img2img=img2img, txt2img=txt2img, checkpoint=comfy.checkpoint, steps=keyframes.steps,
        cfg=keyframes.cfg, sampler=keyframes.sampler, scheduler=keyframes.scheduler,
        width=resolution[0], height=resolution[1], upload_tag=instance_tag(config.display.output_dir))
    ready = _preflight(client, generator)
    if not ready and len(comfy.urls) == 1:
        # Only a hint: adopting whatever answers on 8188/8000-8010 would send every prompt to
        # another server for good when the configured ComfyUI is merely slow to start at login.
        # Only the likely ports: this runs at every start, and at login ComfyUI is usually not up yet.
        found = discover(comfy.url, ports=LIKELY_PORTS)
        if found and found.rstrip("/") != comfy.url.rstrip("/"):
            log.warning("no ComfyUI at %s yet, but one answers at %s; Reverie keeps waiting for %s "
                        "(set comfyui.url: %s to use the other one)", comfy.url, found, comfy.url, found)
    if not ready:
        log.warning("ComfyUI is not reachable at %s; waiting for it (the picture stays up)", " or ".join(comfy.urls))
    return _comfy_source(config, client, generator, start_image, ready, dream), client


def warn_if_unencrypted(url: str) -> None:
    """Log once per start when prompts and images would travel as plain http to another machine."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "http" or _is_loopback(parts.hostname or ""):
        return
    log.warning("comfyui.url %s is plain http to another machine: prompts and images cross the network "
                "unencrypted and ComfyUI has no authentication (anyone on that network can use the "
                "server); prefer ComfyUI on this machine or an https/SSH tunnel", url)


def _is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 (and ::ffff:127.x.y.z), localhost."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _preflight(client: Any, generator: Any) -> bool:
    """True when ComfyUI accepted the workflow, False when it is not reachable (checked later)."""
    from backend.comfyui.errors import ComfyError, ComfyUnavailable, WorkflowRejected

    try:
        generator.preflight()
        return True
    except ComfyUnavailable:
        return False
    except WorkflowRejected as exc:
        client.close()
        raise UserError(_one_sentence(exc)) from None
    except ComfyError as exc:   # an answer we did not expect (older server): not a reason to refuse to start
        log.warning("could not check the workflow against ComfyUI at %s (%s); it is checked again before the "
                    "first keyframe", getattr(client, "current_url", None) or client.url, exc)
        return False


def _comfy_source(config: Config, client: Any, generator: Any, start_image: Any, preflight_done: bool,
                  dream: Any = None):
    keyframes = config.keyframes
    return ComfyUISource(generator, prompts=keyframes.prompts, prompt_period=keyframes.prompt_period,
                         seed=seed_policy(config), denoise=config.generation.hybrid.keyframe_denoise,
                         start_image=start_image, preflight_done=preflight_done, client=client, dream=dream)


def _one_sentence(exc: Exception) -> str:
    summary = getattr(exc, "summary", None) or str(exc).splitlines()[0]
    lines = getattr(exc, "lines", None) or []
    return summary.rstrip(".: ") + (": " + "; ".join(lines) if lines else "") + "."
