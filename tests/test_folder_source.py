"""FolderSource: the start image as K_0, big pictures read cheaply, fitted pictures cached per file."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from PIL import Image

from backend.assembly import UserError, build_source
from backend.config import ConfigError, parse_config
from backend.folder_source import FittedCache, FolderSource
from backend.images import ImageTooLarge, load_fitted


def touch_later(path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def noise(size, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_the_start_image_is_the_first_keyframe_of_a_folder(tmp_path):
    Image.new("RGB", (64, 64), "red").save(tmp_path / "a.png")
    start = Image.new("RGB", (64, 64), "green")
    source = FolderSource(tmp_path, (64, 64), start_image=start)
    first, second = source.next_keyframe(None), source.next_keyframe(None)
    assert first.origin == "start_image" and first.image.getpixel((0, 0)) == (0, 128, 0)
    assert second.origin == "a.png"


def folder_config(tmp_path, **keyframes):
    (tmp_path / "imgs").mkdir(exist_ok=True)
    Image.new("RGB", (64, 64), "red").save(tmp_path / "imgs" / "a.png")
    return parse_config({"keyframes": {"source": "folder", "folder": "imgs", **keyframes},
                         "generation": {"resolution": [64, 64]}}, base_dir=tmp_path)


def test_build_source_makes_the_start_image_k0_in_folder_mode(tmp_path):
    Image.new("RGB", (100, 80), "blue").save(tmp_path / "start.png")
    source, client = build_source(folder_config(tmp_path, start_image="start.png"))
    keyframe = source.next_keyframe(None)
    assert client is None and keyframe.origin == "start_image" and keyframe.image.size == (64, 64)


def test_a_corrupt_start_image_in_folder_mode_is_a_user_error(tmp_path):
    (tmp_path / "start.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(UserError, match="start image .* cannot be read"):
        build_source(folder_config(tmp_path, start_image="start.png"))


def test_a_folder_given_as_the_start_image_is_reported_as_a_folder(tmp_path):
    (tmp_path / "pictures").mkdir()
    with pytest.raises(ConfigError) as info:
        parse_config({"keyframes": {"start_image": "pictures"}}, base_dir=tmp_path)
    assert info.value.problems == [f"keyframes.start_image: is a folder, not a file: {tmp_path / 'pictures'}"]


def test_a_big_jpeg_is_decoded_at_a_reduced_scale_before_the_pixel_cap_applies(tmp_path):
    noise((2400, 1600)).save(tmp_path / "big.jpg", quality=80)
    noise((2400, 1600)).save(tmp_path / "big.png")
    # 3.84 megapixels on disk; a JPEG decodes at 1/8 scale for a 64x64 window, a PNG cannot.
    fitted = load_fitted(tmp_path / "big.jpg", (64, 64), max_pixels=1_000_000)
    assert fitted.size == (64, 64) and fitted.mode == "RGB"
    with pytest.raises(ImageTooLarge, match="2400x1600 pixels is over the 1 megapixel limit; save a smaller copy"):
        load_fitted(tmp_path / "big.png", (64, 64), max_pixels=1_000_000)


def test_a_reduced_decode_gives_the_same_picture_as_a_full_resize(tmp_path):
    from backend.images import fit_cover

    photo = Image.radial_gradient("L").resize((1024, 768)).convert("RGB")
    photo.save(tmp_path / "p.png")
    reduced = np.asarray(load_fitted(tmp_path / "p.png", (128, 96))).astype(int)
    full = np.asarray(fit_cover(photo, (128, 96))).astype(int)
    assert np.abs(reduced - full).mean() < 2


def test_a_picture_over_the_pixel_cap_is_skipped_once_with_a_clear_message(tmp_path, caplog):
    Image.new("RGB", (64, 64), "red").save(tmp_path / "a.png")
    noise((1200, 1000)).save(tmp_path / "b_huge.png")
    source = FolderSource(tmp_path, (64, 64), max_pixels=1_000_000)
    with caplog.at_level(logging.WARNING):
        origins = [source.next_keyframe(None).origin for _ in range(4)]
    assert origins == ["a.png"] * 4
    assert "b_huge.png" in source.last_error and "over the 1 megapixel limit" in source.last_error
    skips = [r for r in caplog.records if "b_huge.png" in r.getMessage()]
    assert len(skips) == 1  # decided once per version of the file, not on every cycle


def test_fitted_pictures_are_reused_until_the_file_changes(tmp_path):
    Image.new("RGB", (64, 64), "red").save(tmp_path / "a.png")
    Image.new("RGB", (64, 64), "blue").save(tmp_path / "b.png")
    source = FolderSource(tmp_path, (64, 64))
    first = [source.next_keyframe(None).image for _ in range(2)]
    again = [source.next_keyframe(None).image for _ in range(2)]
    assert again[0] is first[0] and again[1] is first[1]  # not decoded again
    Image.new("RGB", (64, 64), "yellow").save(tmp_path / "a.png")
    touch_later(tmp_path / "a.png")
    changed = source.next_keyframe(None)
    assert changed.origin == "a.png" and changed.image.getpixel((0, 0)) == (255, 255, 0)


def test_the_fitted_cache_is_bounded_least_recently_used_first_out():
    cache = FittedCache(max_entries=2)
    a, b, c = (Image.new("RGB", (8, 8)) for _ in range(3))
    cache.put("a", (1, 1), a)
    cache.put("b", (1, 1), b)
    assert cache.get("a", (1, 1)) is a  # a is now the most recent
    cache.put("c", (1, 1), c)
    assert cache.get("b", (1, 1)) is None and cache.get("a", (1, 1)) is a and cache.get("c", (1, 1)) is c
    assert cache.get("a", (2, 1)) is None  # another mtime: stale
