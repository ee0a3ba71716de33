"""output/quality.csv: one row per observed keyframe, bounded by size like the log file.

When the file reaches `max_bytes` it becomes quality.csv.1 (the older ones shift up to
quality.csv.<keep>, the oldest is deleted) and a fresh quality.csv with the header starts.
The file is opened per row, so a reader (a spreadsheet, `tail`) never finds it locked for long.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class QualityLog:
    def __init__(self, path: Path | str, columns: list[str], *, max_bytes: int = 5_000_000, keep: int = 3):
        self.path, self.columns = Path(path), list(columns)
        self.max_bytes, self.keep = max_bytes, keep
        self._failed = False        # a failing disk is logged once, not on every keyframe

    def write(self, row: dict) -> None:
        """Append `row` (missing columns empty, floats with 6 significant digits); never raises."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, self.columns, extrasaction="ignore", lineterminator="\n")
        writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
        try:
            self._rotate_if_full()
            fresh = not self.path.exists() or self.path.stat().st_size == 0
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8", newline="") as out:
                if fresh:
                    out.write(",".join(self.columns) + "\n")
                out.write(buffer.getvalue())
            self._failed = False
        except OSError as exc:
            if not self._failed:
                log.warning("could not write %s (%s); quality rows are skipped until it works again", self.path, exc)
            self._failed = True

    def _rotate_if_full(self) -> None:
        if not self.path.exists() or self.path.stat().st_size < self.max_bytes:
            return
        if self.keep <= 0:
            self.path.unlink()
            return
        for n in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
