"""Mutation testing of the modules whose bugs no test caught (issue 11): slerp/easing, the frame
schedule, config and assembly. Prints killed / survived / timeout per module and every survivor.

Usage: python bench/mutation.py [--tree PATH] [--modules slerp,schedule,config,assembly]
                                [--sample N] [--seed 0] [--children 1] [--out FILE.md]

Runs mutmut 3 (`pip install mutmut`; not a CI dependency) on a scratch copy of --tree (default:
this checkout), one module at a time, with only that module's own test files, so a "before" run on
an old commit and an "after" run on today's tree follow the same procedure. --sample N tests a
seeded random sample of N mutants per module (all of them when there are fewer).
Run it niced: `nice -n 19 python bench/mutation.py ...`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module -> (files to mutate, test files that own them)
TARGETS = {
    "slerp": (["backend/interpolation/spherical_lerp.py"], ["tests/interpolation/test_spherical_lerp.py"]),
    # The schedule was one file until the pacing/segment/latent-cache split; a tree that lacks a
    # file or test listed here (an older commit) is run with the ones it has (see `present`).
    "schedule": (["backend/interpolation/hybrid_generator.py", "backend/interpolation/segment.py",
                  "backend/interpolation/latent_cache.py", "backend/pacing.py"],
                 ["tests/interpolation/test_hybrid_generator.py", "tests/interpolation/test_segment.py",
                  "tests/interpolation/test_latent_cache.py", "tests/test_pacing.py",
                  "tests/test_pacing_mutants.py", "tests/test_daemon.py"]),
    # config_schema.py (the declarations' helpers) was split out of config.py after the BEFORE run.
    "config": (["backend/config.py", "backend/config_checks.py", "backend/config_schema.py"], ["tests/test_config.py", "tests/test_config_schema.py"]),
    "assembly": (["backend/assembly.py"], ["tests/test_assembly.py"]),
}
COPIED = ["backend", "tests", "pyproject.toml", "config.yaml"]
# mutmut's exit-code meaning (mutmut/stats.py), folded into the three columns of the table.
KILLED, SURVIVED, TIMEOUT, NO_TESTS = "killed", "survived", "timeout", "no tests"
NO_NAME = "__no_such_mutant__"  # a filter that matches nothing: mutmut generates and maps, then stops


def mutmut_config(files: list[str], tests: list[str]) -> str:
    quoted = lambda items: "[" + ", ".join(json.dumps(i) for i in items) + "]"  # noqa: E731
    return ("\n[tool.mutmut]\n"
            'source_paths = ["backend"]\n'
            f"only_mutate = {quoted(files)}\n"
            f"pytest_add_cli_args_test_selection = {quoted(tests)}\n"
            'pytest_add_cli_args = ["-p", "no:cacheprovider", "-x", "-q"]\n'
            'also_copy = ["config.yaml"]\n'
            "use_git_change_detection = false\n"
            # A mutant that hangs a wait is cut off at ~10x its tests' clean time (mutmut's default is 30x).
            "timeout_multiplier = 5.0\n")


def prepare(tree: Path, work: Path, files: list[str], tests: list[str]) -> None:
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "mutants")
    for name in COPIED:
        source = tree / name
        if source.is_dir():
            shutil.copytree(source, work / name, ignore=skip)
        elif source.is_file():
            shutil.copy2(source, work / name)
    # ../shared next to the tree, as in a checkout (the TAESD weights some fixtures look for)
    shared = tree.parent / "shared"
    if shared.is_dir() and not (work.parent / "shared").exists():
        (work.parent / "shared").symlink_to(shared)
    pyproject = work / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    text = re.sub(r"\n\[tool\.mutmut\][^\[]*", "\n", text)  # ours replaces any the tree carries
    pyproject.write_text(text + mutmut_config(files, tests), encoding="utf-8")


def mutmut(work: Path, args: list[str], log) -> int:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    exe = shutil.which("mutmut") or "mutmut"
    done = subprocess.run([exe, *args], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    return done.returncode


def results(work: Path, files: list[str]) -> dict[str, int]:
    codes = {}
    for name in files:
        meta = work / "mutants" / (name + ".meta")
        if meta.is_file():
            codes.update(json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"])
    return codes


def status_of(code: int | None) -> str:
    from mutmut.stats import status_by_exit_code  # mutmut is only needed when this bench runs

    status = status_by_exit_code.get(code, "not run") if code is not None else "not run"
    return {"killed": KILLED, "survived": SURVIVED, "timeout": TIMEOUT}.get(status, status)


def function_of(name: str) -> str:
    """`pkg.mod.xǁClassǁmethod__mutmut_3` -> `Class.method`; `pkg.mod.x_func__mutmut_1` -> `func`."""
    mangled = name.rsplit("__mutmut_", 1)[0].rsplit(".", 1)[-1]
    return mangled.removeprefix("x_").removeprefix("x\u01c1").replace("\u01c1", ".")


def describe(work: Path, name: str, files: list[str]) -> str:
    """`file:line  old -> new` for one mutant, from the mutated copy of its function."""
    shown = subprocess.run([shutil.which("mutmut") or "mutmut", "show", name], cwd=work, capture_output=True,
                           text=True, check=False).stdout
    removed = [line[1:] for line in shown.splitlines() if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in shown.splitlines() if line.startswith("+") and not line.startswith("+++")]
    if not removed:
        return f"{name}: {' / '.join(a.strip() for a in added) or '(no diff)'}"
    # The diff shows the function on its own, so find the changed line in the file, after the def.
    where, method = "?", function_of(name).rsplit(".", 1)[-1]
    for path in files:
        lines = [line.strip() for line in (work / path).read_text(encoding="utf-8").splitlines()]
        start = next((i for i, line in enumerate(lines) if re.match(rf"(async )?def {re.escape(method)}\(", line)), 0)
        hits = [i + 1 for i, line in enumerate(lines) if line == removed[0].strip() and i >= start]
        if hits:
            where = f"{path}:{hits[0]}"
            break
    change = "; ".join(f"{r.strip()}  ->  {a.strip()}" for r, a in zip(removed, added))
    if len(added) != len(removed):
        change = " / ".join(r.strip() for r in removed) + "  ->  " + " / ".join(a.strip() for a in added)
    return f"{where}  {change}  [{function_of(name)} #{name.rsplit('_', 1)[-1]}]"


def present(tree: Path, module: str) -> tuple[list[str], list[str]]:
    """The module's files and test files that exist in `tree`."""
    files, tests = TARGETS[module]
    return [f for f in files if (tree / f).is_file()], [t for t in tests if (tree / t).is_file()]


def run_module(module: str, tree: Path, scratch: Path, args, log) -> dict:
    files, tests = present(tree, module)
    if not files or not tests:
        raise SystemExit(f"{tree} has none of {module}'s files or none of its test files")
    work = scratch / module / "repo"
    work.mkdir(parents=True)
    prepare(tree, work, files, tests)
    started = time.monotonic()
    children = ["--max-children", str(args.children)]
    # Pass 1 generates every mutant and maps tests to functions, then stops at the empty filter.
    mutmut(work, ["run", *children, NO_NAME], log)
    names = sorted(results(work, files))
    if not names:
        raise SystemExit(f"mutmut made no mutants for {module}; see {log.name}")
    chosen = names if not args.sample or args.sample >= len(names) else sorted(
        random.Random(args.seed).sample(names, args.sample))
    (work / "chosen.json").write_text(json.dumps(chosen), encoding="utf-8")
    mutmut(work, ["run", *children, *chosen], log)
    return summarize(module, work, time.monotonic() - started)


def summarize(module: str, work: Path, seconds: float) -> dict:
    """The verdicts of the mutants chosen for `module` in its scratch copy `work`."""
    files, tests = present(work, module)
    codes = results(work, files)
    names = sorted(codes)
    saved = work / "chosen.json"
    chosen = json.loads(saved.read_text(encoding="utf-8")) if saved.is_file() else names
    statuses = {name: status_of(codes.get(name)) for name in chosen}
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    survivors = [describe(work, name, files) for name, status in sorted(statuses.items()) if status == SURVIVED]
    # Mutants in functions that the module's tests never call: listed per function, not one by one.
    uncovered: dict[str, int] = {}
    for name, status in statuses.items():
        if status == NO_TESTS:
            uncovered[function_of(name)] = uncovered.get(function_of(name), 0) + 1
    return {"module": module, "generated": len(names), "tested": len(chosen), "counts": counts,
            "survivors": survivors, "uncovered": uncovered, "seconds": seconds, "tests": tests}


def table(rows: list[dict], label: str) -> str:
    out = [f"| module ({label}) | mutants | tested | killed | survived | timeout | no tests | other | "
           "survived % of judged | minutes |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        c = row["counts"]
        other = sum(v for k, v in c.items() if k not in (KILLED, SURVIVED, TIMEOUT, NO_TESTS))
        judged = c.get(KILLED, 0) + c.get(SURVIVED, 0) + c.get(TIMEOUT, 0)
        share = f"{100 * c.get(SURVIVED, 0) / judged:.1f}" if judged else "-"
        minutes = f"{row['seconds'] / 60:.1f}" if row["seconds"] else "-"
        out.append(f"| {row['module']} | {row['generated']} | {row['tested']} | {c.get(KILLED, 0)} | "
                   f"{c.get(SURVIVED, 0)} | {c.get(TIMEOUT, 0)} | {c.get(NO_TESTS, 0)} | {other} | {share} | "
                   f"{minutes} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout to test (default: this one)")
    parser.add_argument("--modules", default=",".join(TARGETS), help="comma list of " + ",".join(TARGETS))
    parser.add_argument("--sample", type=int, default=0, help="test a seeded random sample of N mutants per module")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--children", type=int, default=1, help="mutants tested at once")
    parser.add_argument("--label", default="", help="column label, e.g. the commit")
    parser.add_argument("--out", type=Path, help="also write the table and survivors to this markdown file")
    parser.add_argument("--keep", type=Path, help="scratch folder to keep (default: a temp dir, removed)")
    parser.add_argument("--collect", action="store_true",
                        help="run nothing: report the modules already run in the --keep folder")
    args = parser.parse_args()
    if args.collect and not args.keep:
        parser.error("--collect needs --keep FOLDER")
    modules = [m for m in args.modules.split(",") if m]
    unknown = [m for m in modules if m not in TARGETS]
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    if shutil.which("mutmut") is None:
        parser.error("mutmut is not installed: pip install mutmut")
    tree = args.tree.resolve()
    label = args.label or tree.name
    scratch = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="reverie-mutation-"))
    scratch.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for module in modules:
            if args.collect:
                if (scratch / module / "repo" / "mutants").is_dir():
                    rows.append(summarize(module, scratch / module / "repo", 0.0))
                continue
            with open(scratch / f"{module}.log", "w", encoding="utf-8") as log:
                print(f"{module}: running (log {log.name})", file=sys.stderr, flush=True)
                rows.append(run_module(module, tree, scratch, args, log))
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    sampled = f", seeded sample of {args.sample} per module (seed {args.seed})" if args.sample else ", all mutants"
    report = [f"mutmut on {tree}{sampled}", "", table(rows, label), ""]
    for row in rows:
        report += [f"### {row['module']}: {len(row['survivors'])} surviving", ""]
        report += [f"- {line}" for line in row["survivors"]] or ["- none"]
        report.append("")
        if row["uncovered"]:
            report += [f"Not reached by {', '.join(row['tests'])} (mutants per function): " +
                       ", ".join(f"{f} {n}" for f, n in sorted(row["uncovered"].items())), ""]
    text = "\n".join(report)
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
