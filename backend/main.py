"""Reverie daemon entry point (placeholder until the daemon lands)."""

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script (`python backend/main.py`): make the repo root importable so the
    # `backend.` absolute imports below resolve exactly as they do under `python -m backend.main`.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend import __version__  # noqa: E402


def main(argv=None) -> int:
    print(f"Reverie {__version__}: usage: python backend/main.py [--max-frames N] [--config PATH]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
