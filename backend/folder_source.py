"""A folder of images as a keyframe source: each image in turn, morphed into the next.

No torch here: the source only reads files.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from backend.frames import Keyframe, KeyframeSourceError
from backend.images import MAX_PIXELS, load_fitted

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
CACHE_BYTES = 256 * 1024 * 1024  # fitted pictures kept between cycles, at most this much RGB


class FittedCache:
    """Fitted pictures (or why a file could not be used) by path, valid while the file's mtime and
    size stay the same; least recently used first out, at most `max_entries`. A folder cycles
    every few minutes, and decoding a big photo again each time costs far more than keeping it."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max(2, max_entries)
        self._entries: OrderedDict[Path, tuple[tuple[int, int], Image.Image | str]] = OrderedDict()

    def get(self, path: Path, stamp: tuple[int, int]) -> Image.Image | str | None:
        entry = self._entries.get(path)
        if entry is None or entry[0] != stamp:
            return None
        self._entries.move_to_end(path)
        return entry[1]

    def put(self, path: Path, stamp: tuple[int, int], value: Image.Image | str) -> None:
        self._entries[path] = (stamp, value)
        self._entries.move_to_end(path)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


class FolderSource:
    """Cycles the images of a folder in name order, fitted (cover-crop) to `resolution`.

    Unreadable files, and pictures over `max_pixels` decoded pixels, are skipped with a warning
    (once per version of the file); the folder is listed again at every wrap, so images added
    while running join the cycle. `start_image` (already fitted), when given, is K_0. No images at the start -> KeyframeSourceError.
    Later (the folder deleted or unmounted, every image briefly unreadable) the last image is
    held, `last_error` says why, and the folder is tried again with backoff (0.5 s doubling to
    `max_backoff`) until images return.
    """

    state = "not_used"
    prompt = ""

    def __init__(self, folder: Path, resolution: tuple[int, int], *, max_backoff: float = 10.0,
                 start_image: Image.Image | None = None, max_pixels: int = MAX_PIXELS) -> None:
        self.folder, self.resolution = Path(folder), tuple(resolution)
        self.max_backoff, self.max_pixels = max_backoff, max_pixels
        self._start = start_image
        self._cache = FittedCache(CACHE_BYTES // (3 * self.resolution[0] * self.resolution[1]))
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
        if self._start is not None:
            self._held, self._start = self._start, None
            return Keyframe(self._held, generated=False, origin="start_image")
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
            fitted = self._fitted(path, quiet)
            if isinstance(fitted, str):
                error = fitted
                continue
            return Keyframe(fitted, generated=False, origin=path.name), error
        return None, error or f"no readable images in {self.folder}"

    def _fitted(self, path: Path, quiet: bool) -> Image.Image | str:
        """The picture fitted to the resolution (cached per file version), or why it is skipped."""
        try:
            st = os.stat(path)
        except OSError as exc:
            return f"unreadable image {path.name}: {exc.strerror or exc}"
        stamp = (st.st_mtime_ns, st.st_size)
        cached = self._cache.get(path, stamp)
        if cached is not None:
            return cached
        try:
            fitted: Image.Image | str = load_fitted(path, self.resolution, self.max_pixels)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
            (log.debug if quiet else log.warning)("skipping image %s: %s", path.name, exc)
            fitted = f"skipped image {path.name}: {exc}"
        self._cache.put(path, stamp, fitted)
        return fitted

    def next_prompt(self) -> None:
        """Folders have no prompts: nothing to do."""

    def new_keyframe(self) -> None:
        """Skip the next image of the cycle."""
        self._next += 1

    def close(self) -> None:
        """End a backoff wait at once."""
        self._closed.set()
