"""bench/latents.py's CPU peak-memory probe: reset per op, counts what the op adds."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def bench(repo_root):
    spec = importlib.util.spec_from_file_location("bench_latents", repo_root / "bench" / "latents.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not sys.platform.startswith("linux") or not Path("/proc/self/clear_refs").exists(),
                    reason="the CPU peak probe reads Linux's /proc VmHWM")
def test_cpu_peak_counts_an_ops_allocation_and_is_reset_between_ops(bench):
    def allocate():
        torch.ones(64 * 2**20 // 4).sum()  # 64 MiB of float32, touched

    _, _, first = bench.measured(allocate, reps=1, warmup=0, cuda=False)
    _, _, second = bench.measured(lambda: None, reps=1, warmup=0, cuda=False)
    assert 60 <= int(first) <= 200
    assert int(second) < 16  # the first op's high-water mark does not carry over


def test_cpu_peak_is_a_question_mark_where_libc_has_no_malloc_trim(bench, monkeypatch):
    monkeypatch.setattr(bench.ctypes, "CDLL", lambda name: object())  # musl: no malloc_trim
    assert bench.measured(lambda: None, reps=1, warmup=0, cuda=False)[2] == "?"
