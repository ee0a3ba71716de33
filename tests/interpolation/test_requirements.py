"""requirements.txt covers every third-party package the interpolation modules import, within a range."""

from __future__ import annotations

import ast
import re
import sys

DISTRIBUTIONS = {"PIL": "pillow", "yaml": "pyyaml"}  # import name -> the name pip installs


def requirements(repo_root) -> dict[str, str]:
    lines = (repo_root / "requirements.txt").read_text().splitlines()
    specs = (line.split("#")[0].strip() for line in lines)
    return {re.split(r"[<>=!~ ]", spec)[0].lower().replace("_", "-"): spec for spec in specs if spec}


def imported_packages(folder) -> set[str]:
    names = set()
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("backend", "__future__")}


def test_every_package_the_interpolation_modules_import_is_a_requirement(repo_root):
    listed = requirements(repo_root)
    packages = imported_packages(repo_root / "backend" / "interpolation")
    assert {"torch", "diffusers", "huggingface_hub"} <= packages
    missing = {DISTRIBUTIONS.get(p, p).lower().replace("_", "-") for p in packages} - set(listed)
    assert not missing, f"imported but not in requirements.txt: {sorted(missing)}"


def test_torch_diffusers_and_huggingface_hub_have_an_upper_bound(repo_root):
    listed = requirements(repo_root)
    for name in ("torch", "diffusers", "huggingface-hub"):
        assert "<" in listed[name], f"{listed[name]}: a major release may break the API we rely on"
