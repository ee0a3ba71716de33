r"""Build dist/Reverie.rmskin, the package a Rainmeter user double-clicks.

    python rainmeter/build_rmskin.py [--out dist/Reverie.rmskin]

Format (Rainmeter's Library/DialogInstall.cpp, ReadPackage/ReadOptions/InstallPackage): a ZIP
with RMSKIN.ini at its root and the skin under Skins/Reverie/, followed by a 16-byte footer
struct { int64 zip_size; uint8 flags; char key[7] = "RMSKIN\0" } (little-endian). Rainmeter
refuses a plain ZIP renamed to .rmskin, and a footer whose size is not the file's length minus 16.

The package cannot know where the project lives: after installing it, run
``python rainmeter/install.py --paths-only`` once. VariableFiles makes a later package upgrade
keep those paths and the control counters.
"""

from __future__ import annotations

import argparse
import io
import struct
import sys
import zipfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend import __version__  # noqa: E402

SKIN = Path(__file__).resolve().parent / "Reverie"
FOOTER = struct.Struct("<qB7s")
KEY = b"RMSKIN\x00"
# ZIP entries get a fixed date so that two builds of the same files are byte-identical.
FIXED_DATE = (2024, 1, 1, 0, 0, 0)


def rmskin_ini(version: str) -> str:
    return "\r\n".join([
        "[rmskin]",
        "Name=Reverie",
        "Author=Reverie project",
        f"Version={version}",
        "LoadType=Skin",
        r"Load=Reverie\Reverie.ini",
        r"VariableFiles=Reverie\@Resources\Variables.inc|Reverie\@Resources\Control.ini",
        "MinimumRainmeter=4.5.0",
        "MinimumWindows=10.0",
        "",
    ])


def build(out: Path, skin: Path = SKIN, version: str = __version__) -> Path:
    """Write the .rmskin to `out` (folders created) and return it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo("RMSKIN.ini", FIXED_DATE), rmskin_ini(version).encode("ascii"),
                         zipfile.ZIP_DEFLATED)
        for path in sorted(p for p in skin.rglob("*") if p.is_file() and not p.name.startswith(".")):
            name = "Skins/Reverie/" + path.relative_to(skin).as_posix()
            archive.writestr(zipfile.ZipInfo(name, FIXED_DATE), path.read_bytes(), zipfile.ZIP_DEFLATED)
    data = buffer.getvalue()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data + FOOTER.pack(len(data), 0, KEY))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the Reverie .rmskin package.")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "dist" / "Reverie.rmskin")
    args = parser.parse_args(argv)
    path = build(args.out)
    print(f"wrote {path} ({path.stat().st_size} bytes); after installing it run: python rainmeter/install.py --paths-only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
