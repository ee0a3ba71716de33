"""Fixtures: the skin installed by rainmeter/install.py into a temporary Skins folder, and the
daemon-core writers pointed at its output folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from backend.frame_writer import FrameWriter
from backend.status import StatusWriter, new_status
from rainmeter.install import install, set_ini_values
from tests.rainmeter.rm_ini import Skin, load_skin
from tests.rainmeter.rm_sim import SkinSim

REPO = Path(__file__).resolve().parents[2]
SIZE = 32  # test frames are SIZE x SIZE, and so is the installed skin's picture


@dataclass
class Installed:
    skins_dir: Path
    skin_dir: Path
    output: Path

    def load(self) -> Skin:
        return load_skin(self.skin_dir / "Reverie.ini", self.skins_dir)

    def sim(self) -> SkinSim:
        return SkinSim(self.load())


@dataclass
class Daemon:
    """The daemon's output side, driven directly: real FrameWriter + StatusWriter."""

    frames: FrameWriter
    status: StatusWriter
    rng: np.random.Generator

    def show(self, index: int, *, fps: float = 10.0, state: str = "live", prompt: str = "a quiet lake") -> np.ndarray:
        frame = self.rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        ring = self.frames.write(frame, index)
        self.status.write(new_status(state=state, frame=index, frame_file=ring, fps=fps, target_fps=fps,
                                     prompt=prompt, keyframes=index // 4, comfyui="connected"))
        return frame


@pytest.fixture
def installed(tmp_path: Path) -> Installed:
    skins = tmp_path / "Skins"
    skins.mkdir()
    output = tmp_path / "output"
    skin_dir = install(skins, config=REPO / "config.yaml", output_dir=output, python=Path("/usr/bin/python3"))
    set_ini_values(skin_dir / "@Resources" / "Variables.inc", "Variables", {"W": str(SIZE), "H": str(SIZE)})
    return Installed(skins, skin_dir, output)


@pytest.fixture
def daemon(installed: Installed) -> Daemon:
    return Daemon(FrameWriter(installed.output, ring_size=3), StatusWriter(installed.output),
                  np.random.default_rng(7))
