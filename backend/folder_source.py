"""A folder of images as a keyframe source: each image in turn, morphed into the next.

No torch here: the source only reads files.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from backend.frames import Keyframe, KeyframeSourceError
from backend.images import fit_cover

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class FolderSource:
    """Cycles the images of a folder in name order, fitted (cover-crop) to `resolution`.

    Unreadable files are skipped with a warning; the folder is listed again at every wrap, so
    images added while running join the cycle. No images at the start -> KeyframeSourceError.
    Later (the folder deleted or unmounted, every image briefly unreadable) the last image is
    held, `last_error` says why, and the folder is tried again with backoff (0.5 s doubling to
    `max_backoff`) until images return.
    """

    state = "not_used"
    prompt = ""

    def __init__(self, folder: Path, resolution: tuple[int, int], *, max_backoff: float = 10.0) -> None:
        self.folder, self.resolution = Path(folder), tuple(resolution)
        self.max_backoff = max_backoff
        self.last_error = ""
        try:
            self._files = self._list()
        except OSError as exc:
            raise KeyframeSourceError(f"Cannot read the image folder {self.folder}: {exc}.") from None
        if not self._files:
            raise KeyframeSourceError(
                f"No images found in {self.folder} (looked for {', '.join(IMAGE_SUFFIXES)}).")
        self._next = 0
        self._held: Image.Image | None = None     # the last image delivered, held through an outage
        self._backoff = 0.5
        self._closed = threading.Event()

    def _list(self) -> list[Path]:
        """Image files in name order; OSError when the folder cannot be listed."""
        files = [p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        return sorted(files, key=lambda p: p.name.lower())

    def next_keyframe(self, previous: Image.Image | None) -> Keyframe | None:
        """The next readable image; mid-run, the held one after a backoff wait when there is none
        (None once `close()` was called)."""
        keyframe, error = self._read_next()
        if keyframe is not None:
            if self._backoff > 0.5:
                log.info("images in %s can be read again", self.folder)
            self._held, self._backoff = keyframe.image, 0.5
            self.last_error = error       # "" unless a file was skipped on the way: earlier errors are over
            return keyframe
        if self._held is None:
            raise KeyframeSourceError(f"None of the images in {self.folder} could be read.")
        if self._backoff == 0.5:
            log.warning("%s; holding the last image and trying again", error)
        self.last_error = error
        if self._closed.wait(self._backoff):
            return None
        self._backoff = min(self.max_backoff, self._backoff * 2)
        return Keyframe(self._held, generated=False, origin="held")

    def _read_next(self) -> tuple[Keyframe | None, str]:
        """(the next readable image of the cycle or None, what went wrong on the way or "")."""
        error, quiet = "", self._backoff > 0.5     # during an outage, skipped files are not logged again
        for _ in range(len(self._files) + 1):
            if self._next >= len(self._files):
                try:
                    listed = self._list()
                except OSError as exc:
                    return None, f"cannot read the image folder {self.folder}: {exc}"
                if not listed:
                    return None, f"no images in {self.folder}"
                self._files, self._next = listed, 0
            path = self._files[self._next]
            self._next += 1
            try:
                with Image.open(path) as image:
                    fitted = fit_cover(image, self.resolution)
            except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
                (log.debug if quiet else log.warning)("skipping unreadable image %s: %s", path.name, exc)
                error = f"unreadable image {path.name}"
                continue
            return Keyframe(fitted, generated=False, origin=path.name), error
        return None, error or f"no readable images in {self.folder}"

    def next_prompt(self) -> None:
        """Folders have no prompts: nothing to do."""

    def new_keyframe(self) -> None:
        """Skip the next image of the cycle."""
        self._next += 1

    def close(self) -> None:
        """End a backoff wait at once."""
        self._closed.set()
