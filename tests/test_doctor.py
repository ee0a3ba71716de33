"""backend/doctor.py's torch line: the advice fits the torch that is installed."""

from __future__ import annotations

import pytest
import torch

from backend.doctor import Report, check_torch


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("shutil.which", lambda name: "C:/Windows/System32/nvidia-smi.exe")


def test_a_cpu_only_torch_on_a_machine_with_an_nvidia_gpu_fails_with_the_reinstall_line(no_gpu, monkeypatch, capsys):
    monkeypatch.setattr(torch.version, "cuda", None)
    report = Report()
    check_torch(report)
    out = capsys.readouterr().out
    assert report.failed == 1 and "CPU-only build" in out
    # A plain `pip install torch` does nothing while a CPU torch is installed: it must force the reinstall.
    assert "pip install --force-reinstall torch --index-url https://download.pytorch.org/whl/cu" in out


def test_a_cuda_torch_that_finds_no_gpu_points_at_the_driver_not_at_a_reinstall(no_gpu, monkeypatch, capsys):
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    report = Report()
    check_torch(report)
    out = capsys.readouterr().out
    assert report.failed == 1 and "NVIDIA driver" in out and "--index-url" not in out
