"""Shared test fixtures: paths to the repo and to the shared test weights."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_TAESD = REPO_ROOT.parent / "shared" / "models" / "taesd"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def taesd_dir() -> Path:
    """The real TAEF2 weights beside the repo; tests that need them skip when absent."""
    if not (SHARED_TAESD / "taef2_encoder.pth").is_file():
        pytest.skip(f"shared TAESD weights not found at {SHARED_TAESD} (they ship beside the repo in ../shared)")
    return SHARED_TAESD
