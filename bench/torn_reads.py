"""Torn reads, measured: a separate reader process polls the output files while FrameWriter and
StatusWriter write at a steady cadence, and counts every read that is not a complete, correct file.

    python bench/torn_reads.py [--seconds 30] [--fps 25] [--size 192] [--out DIR] [--naive]

--naive is the control run: current_frame.png is also rewritten in place (open "wb"), which the
reader must catch as partial reads, proving that a zero in the normal run means something.

Each frame is a deterministic noise picture made from its index (index stored in pixel (0, 0)),
so the reader checks not only that the PNG decodes but that every pixel is the frame it claims.
The reader reads, as the skin and the page do: current_frame.png; status.txt (then the ring file
it names, as the Rainmeter skin does); status.json; status.js. Prints a table per file.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from backend.frame_writer import AtomicWriteError, FrameWriter  # noqa: E402
from backend.status import RAINMETER_REGEXP, STATUS_KEYS, StatusWriter, new_status  # noqa: E402

PNG_START, PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"
COLUMNS = ("reads", "reads/s", "open_errors", "partial", "decode_failures", "wrong_content")
TXT = re.compile(RAINMETER_REGEXP[len("(?siU)"):].replace("(.*)", "(.*?)"), re.S | re.I)


def picture(index: int, size: int) -> np.ndarray:
    """uint8 [size, size, 3] noise, a pure function of index; pixel (0, 0) holds the index."""
    pixels = np.random.default_rng(index).integers(0, 256, (size, size, 3), dtype=np.uint8)
    pixels[0, 0] = (index >> 16) & 255, (index >> 8) & 255, index & 255
    return pixels


def check_png(data: bytes, size: int, counts: dict) -> None:
    if not (data.startswith(PNG_START) and data.endswith(PNG_END)):
        counts["partial"] += 1
        return
    try:
        with Image.open(io.BytesIO(data)) as image:
            pixels = np.asarray(image.convert("RGB"))
    except Exception:  # noqa: BLE001 - any decoder complaint is what we count
        counts["decode_failures"] += 1
        return
    r, g, b = (int(v) for v in pixels[0, 0])
    if pixels.shape != (size, size, 3) or not np.array_equal(pixels, picture((r << 16) | (g << 8) | b, size)):
        counts["wrong_content"] += 1


def check_text(name: str, data: bytes, counts: dict) -> str | None:
    """Validate a status file; returns the ring file named by status.txt."""
    try:
        text = data.decode("utf-8")
        if name == "status.json":
            assert set(STATUS_KEYS) <= set(json.loads(text))
        elif name == "status.js":
            assert text.startswith("window.REVERIE_STATUS = ") and text.endswith(";\n")
            assert set(STATUS_KEYS) <= set(json.loads(text[len("window.REVERIE_STATUS = "):-2]))
        else:
            match = TXT.match(text)
            assert match is not None
            return dict(zip(STATUS_KEYS, match.groups()))["frame_file"]
    except (AssertionError, ValueError):
        counts["partial" if data and not data.endswith(b"\n") else "decode_failures"] += 1
    return None


def reader(out: Path, seconds: float, size: int) -> dict:
    names = ("current_frame.png", "status.txt", "ring file named by status.txt", "status.json", "status.js")
    counts = {n: dict.fromkeys(COLUMNS, 0) for n in names}
    while not (out / "status.txt").exists():
        time.sleep(0.01)
    ring: str | None = None
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        for name in names:
            if name.startswith("ring"):
                if not ring:
                    continue
                path = out / ring
            else:
                path = out / name
            counts[name]["reads"] += 1
            try:
                data = path.read_bytes()
            except OSError:
                counts[name]["open_errors"] += 1
                ring = None
                continue
            if name.endswith(".png") or name.startswith("ring"):
                check_png(data, size, counts[name])
            else:
                found = check_text(name, data, counts[name])
                if name == "status.txt":
                    ring = found
    elapsed = time.monotonic() - start
    for row in counts.values():
        row["reads/s"] = round(row["reads"] / elapsed, 1)
    return counts


def writer(out: Path, seconds: float, fps: float, size: int, naive: bool = False) -> dict:
    frames, statuses = FrameWriter(out, png_compression=1), StatusWriter(out)
    encode, write, errors, index = [], [], 0, 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        try:
            ring = frames.write(picture(index, size), index)
            if naive:  # control run: rewrite current_frame.png in place, as a non-atomic writer would
                (out / "current_frame.png").write_bytes(ring.read_bytes())
            statuses.write(new_status(state="live", frame=index, frame_kind="inbetween", frame_file=ring,
                                      prompt='torn "read" test\n</script>', fps=fps, target_fps=fps))
            encode.append(frames.last_timings.encode_ms)
            write.append(frames.last_timings.write_ms)
        except AtomicWriteError:
            errors += 1
        index += 1
        time.sleep(max(0.0, start + index / fps - time.monotonic()))  # paced by the clock, no drift
    elapsed = time.monotonic() - start
    return {"frames": index, "fps": index / elapsed, "write_errors": errors,
            "encode_ms_p50": float(np.percentile(encode, 50)), "write_ms_p50": float(np.percentile(write, 50)),
            "write_ms_p95": float(np.percentile(write, 95)), "bytes": frames.last_timings.nbytes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--naive", action="store_true",
                        help="control: also rewrite current_frame.png in place, to show the reader catches tears")
    parser.add_argument("--reader", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reader:
        print(json.dumps(reader(args.out, args.seconds, args.size)))
        return 0
    out = args.out or Path(tempfile.mkdtemp(prefix="reverie-torn-"))
    proc = subprocess.Popen([sys.executable, __file__, "--reader", "--out", str(out), "--seconds",
                             str(args.seconds), "--size", str(args.size)], stdout=subprocess.PIPE, text=True)
    wrote = writer(out, args.seconds + 1.0, args.fps, args.size, args.naive)  # outlast the reader a little
    counts = json.loads(proc.communicate()[0])
    print(f"writer: {wrote['frames']} frames of {args.size}x{args.size} ({wrote['bytes']} bytes) at "
          f"{wrote['fps']:.1f} fps (target {args.fps:g}), write errors {wrote['write_errors']}, "
          f"encode p50 {wrote['encode_ms_p50']:.1f} ms, write p50 {wrote['write_ms_p50']:.2f} ms "
          f"p95 {wrote['write_ms_p95']:.2f} ms; reader: {args.seconds:g} s in a separate process\n")
    print("| file | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for name, row in counts.items():
        print(f"| {name} | " + " | ".join(str(row[c]) for c in COLUMNS) + " |")
    bad = sum(row[c] for row in counts.values() for c in COLUMNS[2:])
    print(f"\ntorn or failed reads: {bad}")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
