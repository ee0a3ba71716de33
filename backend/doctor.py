"""`python backend/main.py --check`: is this machine ready to dream?

Checks, in order, each printed as one line: the config is valid; torch sees a CUDA GPU (else the
exact pytorch.org install line, because PyPI's Windows wheel is CPU-only and the SD VAE then
takes seconds per frame); ComfyUI answers at the configured URL (else where it was found: 8188 or
ComfyUI Desktop's 8000..9000); ComfyUI has the checkpoint, nodes, sampler and scheduler; the
VAE weights are found (naming the file: with vae.comfyui_dir, the checkpoint the workflow uses);
the dream's drift controls in force (a fixed seed without the anchor walk is warned about) and its
reference images; what in the ComfyUI setup makes long runs go bad (custom nodes in the workflows,
a crowded input/ folder). Exit code 0 when nothing failed, 1 otherwise (warnings do not fail).
"""

from __future__ import annotations

import logging
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from backend.config import Config


def _line(mark: str, text: str) -> None:
    stream = sys.stdout or sys.stderr
    if stream is not None:
        stream.write(f"[{mark}] {text}\n")
        stream.flush()


class Report:
    def __init__(self) -> None:
        self.failed = 0

    def ok(self, text: str) -> None:
        _line(" ok ", text)

    def warn(self, text: str) -> None:
        _line("warn", text)

    def fail(self, text: str) -> None:
        self.failed += 1
        _line("FAIL", text)


def check_torch(report: Report) -> None:
    import torch

    from backend.interpolation.vae_runtime import CUDA_INSTALL

    if torch.cuda.is_available():
        report.ok(f"torch {torch.__version__} sees CUDA: {torch.cuda.get_device_name(0)}")
        return
    nvidia = shutil.which("nvidia-smi") is not None
    if torch.version.cuda is not None:  # a CUDA build that finds no usable GPU: the driver, not torch
        message = (f"torch {torch.__version__} is a CUDA {torch.version.cuda} build but finds no usable GPU; "
                   "update the NVIDIA driver (nvidia-smi must list the GPU)")
    elif sys.platform in ("win32", "linux"):
        message = (f"torch {torch.__version__} cannot use CUDA (a CPU-only build); for an NVIDIA GPU run: "
                   f"{CUDA_INSTALL} (or the line pytorch.org gives for your CUDA version)")
    else:
        report.warn(f"torch {torch.__version__} has no CUDA here: the VAE runs on {_other_device(torch)}")
        return
    if nvidia:
        report.fail(message)
    else:
        report.warn(f"{message} (no NVIDIA GPU found: on a CPU, vae.kind auto takes a TAESD pair; keep a low fps)")


def _other_device(torch) -> str:
    mps = getattr(torch.backends, "mps", None)
    return "Apple MPS" if mps is not None and mps.is_available() else "the CPU (vae.kind auto takes a TAESD pair there)"


def check_comfyui(report: Report, config: Config) -> None:
    from backend.assembly import UserError, build_source, workflow_vae
    from backend.comfyui.client import ComfyClient, discover
    from backend.comfyui.errors import ComfyError

    url = config.comfyui.url
    client = ComfyClient(url, request_timeout=min(5.0, config.comfyui.request_timeout))
    try:
        version = client.version()
        report.ok(f"ComfyUI {version} answers at {url}")
    except ComfyError:
        spare = _first_answering(config.comfyui.urls[1:], config)
        if spare is not None:  # failover: the daemon starts on the spare, so check the workflows there
            report.warn(f"ComfyUI is not reachable at {url}; Reverie starts on the next server in comfyui.url")
            check_comfyui(report, replace(config, comfyui=replace(config.comfyui, url=spare)))
            return
        found = discover(url)
        if found is None:
            report.fail(f"ComfyUI is not reachable at {url} (nor on 127.0.0.1:8188 or 8000-9000): start it, "
                        f"or set comfyui.url")
            return
        # The daemon waits for the configured server rather than adopting another one, so the
        # workflow checks below cannot run: the user must start it or point comfyui.url elsewhere.
        report.fail(f"no ComfyUI at {url}, but one answers at {found}: Reverie keeps waiting for {url}; "
                    f"start it there, or set comfyui.url: {found} to use that one")
        return
    finally:
        client.close()
    try:
        source, found_client = build_source(config)  # runs the workflow preflight
        names = found_client.checkpoints() if found_client is not None else []
    except UserError as exc:
        report.fail(str(exc))
        return
    except ComfyError as exc:  # it went away between the checks
        report.fail(f"ComfyUI stopped answering during the check: {exc}")
        return
    used = workflow_vae(config)[0]
    wanted = used if config.comfyui.checkpoint else f"{used}, the workflow's own" if used else "none named"
    report.ok(f"ComfyUI accepts the workflows (checkpoint: {wanted}; {len(names)} on the server)")
    _report_ipadapter(report, source.generator.img2img)
    try:
        check_hygiene(report, source.generator, found_client.object_info())
    except ComfyError as exc:
        report.warn(f"could not read ComfyUI's node list for the long-run checks: {exc}")
    finally:
        source.close()
    for other in config.comfyui.urls[1:]:
        check_fallback(report, other, config)


def _report_ipadapter(report: Report, img2img) -> None:
    """Say that an IP-Adapter workflow's needs were checked (a missing one already failed above)."""
    from backend.comfyui import ipadapter

    if ipadapter.uses_ipadapter(img2img.class_types()):
        presets = ", ".join(ipadapter.presets(img2img.graph)) or "the workflow's own loader"
        report.ok(f"the IP-Adapter nodes and the model files for {presets} are on the server")


def _first_answering(urls, config: Config) -> str | None:
    from backend.comfyui.client import ComfyClient
    from backend.comfyui.errors import ComfyError

    for url in urls:
        client = ComfyClient(url, request_timeout=min(5.0, config.comfyui.request_timeout))
        try:
            client.version()
            return url
        except ComfyError:
            continue
        finally:
            client.close()
    return None


def check_hygiene(report: Report, generator, object_info: dict) -> None:
    """Custom nodes in the keyframe workflows and a crowded input/ folder (backend.desktop.comfy_hygiene)."""
    from backend.desktop.comfy_hygiene import hygiene_notes

    class_types = [node["class_type"] for workflow in (generator.img2img, generator.txt2img)
                   for node in workflow.graph.values()]
    for note in hygiene_notes(class_types, object_info):
        report.warn(note)


def check_fallback(report: Report, url: str, config: Config) -> None:
    """A server after the first in comfyui.url: down is only a warning (it is the spare)."""
    from backend.comfyui.client import ComfyClient
    from backend.comfyui.errors import ComfyError

    client = ComfyClient(url, request_timeout=min(5.0, config.comfyui.request_timeout))
    try:
        report.ok(f"spare ComfyUI {client.version()} answers at {url}")
    except ComfyError:
        report.warn(f"the spare ComfyUI at {url} is not reachable now; Reverie moves to it only when it answers")
    finally:
        client.close()


def check_dream(report: Report, config: Config) -> None:
    """The drift controls in force, the fixed-seed warning, and the reference images."""
    from backend.dream.references import validate_references
    from backend.dream.settings import seed_warning

    if config.keyframes.source != "comfyui":
        report.ok("dream: the folder's keyframes are measured into quality.csv (no img2img loop to steer)")
        return
    report.ok(f"dream: {config.dream.summary()}")
    warning = seed_warning(config.dream, config.keyframes.seed.policy)
    if warning:
        report.warn(warning)
    if config.dream.references:
        problems = validate_references(config.dream.references)
        if problems:
            report.fail("Bad reference images (fix or remove them in dream.references): " + "; ".join(problems))
        else:
            report.ok(f"dream.references: {len(config.dream.references)} entr"
                      f"{'y' if len(config.dream.references) == 1 else 'ies'} readable")


def check_vae(report: Report, config: Config) -> None:
    from backend.assembly import UserError, build_encoder, needs_vae

    if not needs_vae(config):
        report.ok("no VAE needed (crossfade or img2img mode)")
        return
    try:
        encoder = build_encoder(config)
    except UserError as exc:
        report.fail(str(exc).splitlines()[0])
        for line in str(exc).splitlines()[1:]:
            _line("    ", line)
        return
    report.ok(f"VAE {encoder.kind} ({encoder.family}) from {encoder.source} on {encoder.device}")
    memory = encoder.memory()
    if memory:
        report.ok(f"GPU memory: the VAE's weights take {memory['vae_weights_mib']:.0f} MiB, "
                  f"{memory['gpu_free_mib']:.0f} MiB of the GPU are free now")


def run_checks(config: Config, config_path: Path) -> int:
    logger = logging.getLogger("backend")
    level = logger.level
    logger.setLevel(logging.ERROR)  # the report says it all, once
    try:
        return _run_checks(config, config_path)
    finally:
        logger.setLevel(level)


def _run_checks(config: Config, config_path: Path) -> int:
    from backend.config_checks import writable_problems

    report = Report()
    report.ok(f"config {Path(config_path).absolute()} is valid")
    for problem in writable_problems(config.display.output_dir, config.logging.file, create=False):
        report.fail(problem)
    check_dream(report, config)
    check_torch(report)
    if config.keyframes.source == "comfyui":
        check_comfyui(report, config)
    else:
        from backend.assembly import UserError, build_source
        try:
            build_source(config)
            report.ok(f"image folder {config.keyframes.folder} has images")
        except UserError as exc:
            report.fail(str(exc))
    check_vae(report, config)
    _line("    ", "ready to dream" if not report.failed else f"{report.failed} problem(s) to fix")
    return 1 if report.failed else 0
