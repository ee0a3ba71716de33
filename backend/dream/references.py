"""Reference images: the pictures a user wants the dream to keep returning to.

`load_references(entries, base)` turns config entries (image files or folders of them,
relative to `base`, the config file's folder) into RGB images, or raises ReferenceError naming
every bad entry at once (missing, unreadable, not an image, an empty folder).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class ReferenceError(ValueError):
    """Bad reference images: one sentence listing each and what to do."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("Bad reference images (fix or remove them in dream.references): " + "; ".join(problems) + ".")


def reference_paths(entries, base: Path | str = ".") -> tuple[list[Path], list[str]]:
    """Files named by `entries` (folders expanded, sorted by name) and a problem per bad entry."""
    paths, problems = [], []
    for entry in entries:
        path = Path(entry).expanduser()
        path = path if path.is_absolute() else Path(base) / path
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                problems.append(f"{entry}: the folder has no images ({', '.join(IMAGE_SUFFIXES)})")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            problems.append(f"{entry}: no such file or folder")
    return paths, problems


def validate_references(entries, base: Path | str = ".") -> list[str]:
    """Every problem with `entries`, checked by opening each image (empty list: all good)."""
    return _load(entries, base)[1]


def load_references(entries, base: Path | str = ".") -> list[Image.Image]:
    """RGB images of `entries`; ReferenceError listing every bad one."""
    images, problems = _load(entries, base)
    if problems:
        raise ReferenceError(problems)
    return images


def _load(entries, base) -> tuple[list[Image.Image], list[str]]:
    paths, problems = reference_paths(entries, base)
    images = []
    for path in paths:
        try:
            with Image.open(path) as im:
                im.load()
                images.append(im.convert("RGB"))
        except UnidentifiedImageError:
            problems.append(f"{path}: not an image Pillow can read")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            problems.append(f"{path}: unreadable ({exc})")
    return images, problems
