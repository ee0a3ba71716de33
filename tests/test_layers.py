"""The dependency arrows of the README's module map, checked.

Three checks, each saying what the others cannot:
- import-linter's contracts in pyproject.toml (the same run as `lint-imports` in .ci/run): who may
  import whom, following every import, also those inside functions;
- a fresh interpreter importing each light module: torch and diffusers really stay unloaded, which
  is what keeps `--help` and config errors instant (a lazy import inside a function is fine here);
- spherical_lerp's own import statements: torch and the standard library, nothing else.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffusers")

# Modules that must import without loading torch or diffusers; every module inside the packages
# is included, so new ones are checked as they appear.
LIGHT_MODULES = ("backend.main", "backend.config", "backend.config_checks", "backend.status", "backend.frame_writer",
                 "backend.control", "backend.frames", "backend.keyframes", "backend.folder_source")
LIGHT_PACKAGES = ("backend.comfyui", "backend.dream", "backend.desktop")

# Run in a fresh interpreter: imports the given modules in order and prints, as JSON, the first
# one after which a heavy package is loaded, and the modules that need a package this platform
# lacks (a Windows-only module on Linux).
_PROBE = """
import importlib, json, sys
heavy, names = sys.argv[1].split(","), sys.argv[2:]
culprit, unavailable = None, []
for name in names:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and not exc.name.startswith("backend") and exc.name.split(".")[0] not in heavy:
            unavailable.append(name + " (needs " + exc.name + ")")
            continue
        raise
    loaded = [h for h in heavy if h in sys.modules]
    if loaded:
        culprit = name + " loads " + ", ".join(loaded)
        break
print(json.dumps({"culprit": culprit, "unavailable": unavailable}))
"""


def modules_in(package: str) -> list[str]:
    """`package` and every module below it, found on disk (nothing is imported); [] if absent."""
    folder = ROOT.joinpath(*package.split("."))
    if not (folder / "__init__.py").is_file():
        return []
    found = []
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def first_heavy_import(names: list[str]) -> dict:
    """Import `names` in a fresh interpreter; say which one first loaded torch or diffusers."""
    done = subprocess.run([sys.executable, "-c", _PROBE, ",".join(HEAVY), *names], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def outside_imports(path: Path) -> set[str]:
    """Top-level names of everything `path` imports that is neither standard library nor __future__."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("." if node.level else node.module.split(".")[0])
    return {name for name in names if name not in sys.stdlib_module_names and name != "__future__"}


def test_the_import_contracts_in_pyproject_are_kept():
    # In a child process: import-linter configures logging as it runs, which in this process
    # would switch off the loggers that later tests read through caplog.
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}, no_logo=True, no_cache=True))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_fresh_import_of_the_cli_config_output_and_comfyui_modules_loads_no_torch():
    names = list(LIGHT_MODULES) + [m for package in LIGHT_PACKAGES for m in modules_in(package)]
    assert "backend.comfyui.client" in names  # the package walk found the files
    result = first_heavy_import(names)
    assert result["culprit"] is None, (f"{result['culprit']} at import time (import it inside the function that "
                                       f"needs it); not importable on this platform: {result['unavailable']}")


def test_the_fresh_import_check_names_the_module_that_loads_torch():
    result = first_heavy_import(["backend.frames", "backend.interpolation.spherical_lerp", "backend.config"])
    assert result["culprit"] == "backend.interpolation.spherical_lerp loads torch"


def test_spherical_lerp_imports_only_torch_and_the_standard_library():
    assert outside_imports(ROOT / "backend" / "interpolation" / "spherical_lerp.py") == {"torch"}


def test_the_import_scan_sees_third_party_project_and_relative_imports(tmp_path):
    module = tmp_path / "module.py"
    module.write_text("from __future__ import annotations\nimport math, os.path\nimport numpy as np\n"
                      "def f():\n    from backend.frames import Frame\n    from . import sibling\n", encoding="utf-8")
    assert outside_imports(module) == {"numpy", "backend", "."}
