"""backend/frame_writer.py: atomic replace, Windows-style lock retries, disk full, ring, history."""

import errno
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.frame_writer import AtomicWriteError, FrameWriter, atomic_write_bytes


def frame(value: int, size=(32, 48)) -> np.ndarray:
    return np.full((size[0], size[1], 3), value, dtype=np.uint8)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


class LockedReplace:
    """os.replace that fails like Windows while a reader holds the target, `times` times."""

    def __init__(self, times: float):
        self.times, self.calls = times, 0

    def __call__(self, src: str, dst: str) -> None:
        self.calls += 1
        if self.calls <= self.times:
            raise PermissionError(13, "The process cannot access the file because it is being used", dst)
        os.replace(src, dst)


def test_atomic_write_leaves_a_complete_file_and_no_temp(tmp_path):
    target = tmp_path / "current_frame.png"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert leftovers(tmp_path) == []


def test_written_frame_is_a_complete_png_with_the_same_pixels(tmp_path):
    writer = FrameWriter(tmp_path)
    picture = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    ring = writer.write(picture, 0)
    for path in (ring, tmp_path / "current_frame.png"):
        with Image.open(path) as image:
            image.load()
            assert np.array_equal(np.asarray(image.convert("RGB")), picture)
    assert writer.last_timings.encode_ms >= 0 and writer.last_timings.nbytes == ring.stat().st_size


def test_permission_error_a_few_times_then_success_writes_the_file(tmp_path):
    target = tmp_path / "f.png"
    locked = LockedReplace(times=3)
    atomic_write_bytes(target, b"data", retries=5, delay=0.001, replace=locked)
    assert locked.calls == 4 and target.read_bytes() == b"data"
    assert leftovers(tmp_path) == []


def test_permission_error_forever_raises_a_clear_error_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "f.png"
    target.write_bytes(b"old frame")
    locked = LockedReplace(times=float("inf"))
    with pytest.raises(AtomicWriteError) as info:
        atomic_write_bytes(target, b"new frame", retries=4, delay=0.001, replace=locked)
    assert locked.calls == 4
    assert "locked by another program" in str(info.value) and str(target) in str(info.value)
    assert isinstance(info.value.__cause__, PermissionError)
    assert target.read_bytes() == b"old frame"
    assert leftovers(tmp_path) == []


def test_disk_full_while_writing_keeps_the_old_file_and_removes_the_temp(tmp_path):
    target = tmp_path / "f.png"
    target.write_bytes(b"old frame")

    def write_until_full(fd, data):
        if len(data) > 4:  # the first chunk lands on disk, then the volume is full
            return os.write(fd, data[:4])
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(AtomicWriteError, match="disk full"):
        atomic_write_bytes(target, b"a much longer new frame", write=write_until_full)
    assert target.read_bytes() == b"old frame"
    assert leftovers(tmp_path) == []


def test_frame_writer_reports_a_locked_current_frame_and_goes_on_with_the_next(tmp_path):
    reader_holds_current = True

    def replace(src, dst):
        if reader_holds_current and Path(dst).name == "current_frame.png":
            raise PermissionError(13, "Access is denied", dst)
        os.replace(src, dst)

    writer = FrameWriter(tmp_path, retries=2, delay=0.001, replace=replace)
    reader_holds_current = False
    writer.write(frame(10), 0)
    old = (tmp_path / "current_frame.png").read_bytes()
    reader_holds_current = True
    with pytest.raises(AtomicWriteError):
        writer.write(frame(20), 1)
    assert (tmp_path / "current_frame.png").read_bytes() == old
    reader_holds_current = False
    writer.write(frame(30), 2)
    with Image.open(tmp_path / "current_frame.png") as image:
        assert image.getpixel((0, 0)) == (30, 30, 30)
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "frames") == []


def test_output_folder_deleted_while_running_is_recreated(tmp_path):
    out = tmp_path / "out"
    writer = FrameWriter(out, history_keep=2)
    writer.write(frame(1), 0)
    shutil.rmtree(out)
    ring = writer.write(frame(2), 1)
    assert ring.is_file() and (out / "current_frame.png").is_file()
    assert (out / "history" / "frame_00000001.png").is_file()


def test_ring_rotates_through_ring_size_files(tmp_path):
    writer = FrameWriter(tmp_path, ring_size=3)
    paths = [writer.write(frame(i), i) for i in range(7)]
    assert [p.name for p in paths] == ["frame_0.png", "frame_1.png", "frame_2.png"] * 2 + ["frame_0.png"]
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["frame_0.png", "frame_1.png", "frame_2.png"]
    with Image.open(tmp_path / "frames" / "frame_1.png") as image:
        assert image.getpixel((0, 0)) == (4, 4, 4)  # index 4 overwrote slot 1


def test_history_keeps_only_the_newest_frames(tmp_path):
    writer = FrameWriter(tmp_path, history_keep=3)
    for i in range(10):
        writer.write(frame(i), i)
    names = sorted(p.name for p in (tmp_path / "history").iterdir())
    assert names == ["frame_00000007.png", "frame_00000008.png", "frame_00000009.png"]


def test_history_limit_counts_frames_left_by_a_previous_run(tmp_path):
    first = FrameWriter(tmp_path, history_keep=5)
    for i in range(5):
        first.write(frame(i), i)
    second = FrameWriter(tmp_path, history_keep=2)
    second.write(frame(99), 100)
    names = sorted(p.name for p in (tmp_path / "history").iterdir())
    assert names == ["frame_00000004.png", "frame_00000100.png"]


def test_history_off_by_default_writes_no_history_folder(tmp_path):
    FrameWriter(tmp_path).write(frame(5), 0)
    assert not (tmp_path / "history").exists()


def test_png_compression_level_changes_the_encoding_not_the_pixels(tmp_path):
    picture = np.tile(np.arange(64, dtype=np.uint8), (64, 1))[..., None].repeat(3, axis=2)
    writer = FrameWriter(tmp_path, png_compression=0)
    raw = writer.encode(picture)
    writer.configure(png_compression=9)
    small = writer.encode(picture)
    assert len(small) < len(raw)
    assert writer.png_compression == 9


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32),
                                 np.zeros((8, 8, 4), np.uint8), "not an image"])
def test_malformed_frames_are_rejected_before_anything_is_written(tmp_path, bad):
    writer = FrameWriter(tmp_path)
    with pytest.raises((ValueError, TypeError)):
        writer.write(bad, 0)
    assert not (tmp_path / "current_frame.png").exists()


def test_pil_images_of_other_modes_are_accepted(tmp_path):
    writer = FrameWriter(tmp_path)
    writer.write(Image.new("P", (16, 8)), 0)
    writer.write(Image.new("RGBA", (16, 8), (1, 2, 3, 255)), 1)
    with Image.open(tmp_path / "current_frame.png") as image:
        assert image.size == (16, 8)


def test_concurrent_writers_of_one_file_use_unique_temp_names(tmp_path):
    import threading
    target = tmp_path / "status.json"
    payloads = [bytes([i]) * 5000 for i in range(4)]

    def hammer(data):
        for _ in range(50):
            atomic_write_bytes(target, data)

    threads = [threading.Thread(target=hammer, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert target.read_bytes() in payloads
    assert leftovers(tmp_path) == []


def test_a_history_file_held_by_a_viewer_is_deleted_once_it_is_released(tmp_path, monkeypatch):
    writer = FrameWriter(tmp_path, history_keep=2)
    held = tmp_path / "history" / "frame_00000000.png"
    real_unlink = Path.unlink

    def unlink(self, missing_ok=False):
        if self == held and held_by_viewer:
            raise PermissionError(13, "The process cannot access the file", str(self))
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    held_by_viewer = True
    for i in range(4):
        writer.write(frame(i), i)
    names = sorted(p.name for p in (tmp_path / "history").iterdir())
    assert names == ["frame_00000000.png", "frame_00000002.png", "frame_00000003.png"]
    held_by_viewer = False
    writer.write(frame(4), 4)
    names = sorted(p.name for p in (tmp_path / "history").iterdir())
    assert names == ["frame_00000003.png", "frame_00000004.png"]


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_keyframe_keeps_the_keyframe_as_a_complete_png(tmp_path):
    writer = FrameWriter(tmp_path, history_keep=5)
    writer.write_keyframe(Image.new("RGB", (24, 16), (9, 8, 7)), 3)
    with Image.open(tmp_path / "keyframes" / "keyframe_000003.png") as image:
        assert image.size == (24, 16) and image.getpixel((0, 0)) == (9, 8, 7)
    assert leftovers(tmp_path / "keyframes") == []


def test_write_keyframe_does_nothing_with_history_off(tmp_path):
    FrameWriter(tmp_path).write_keyframe(Image.new("RGB", (8, 8)), 0)
    assert not (tmp_path / "keyframes").exists()


def test_keyframe_history_keeps_only_the_newest_keyframes(tmp_path):
    writer = FrameWriter(tmp_path, history_keep=2)
    for segment in range(6):
        writer.write_keyframe(Image.new("RGB", (8, 8), (segment, 0, 0)), segment)
    assert names(tmp_path / "keyframes") == ["keyframe_000004.png", "keyframe_000005.png"]


def test_a_keyframe_that_cannot_be_written_raises_and_keeps_the_old_one(tmp_path):
    writer = FrameWriter(tmp_path, history_keep=3, retries=2, delay=0.001, replace=LockedReplace(float("inf")))
    (tmp_path / "keyframes").mkdir()
    (tmp_path / "keyframes" / "keyframe_000001.png").write_bytes(b"old")
    with pytest.raises(AtomicWriteError):
        writer.write_keyframe(Image.new("RGB", (8, 8)), 1)
    assert (tmp_path / "keyframes" / "keyframe_000001.png").read_bytes() == b"old"
    assert leftovers(tmp_path / "keyframes") == []


def test_lowering_history_keep_live_prunes_frames_and_keyframes_at_once(tmp_path):
    writer = FrameWriter(tmp_path, history_keep=100)
    for i in range(30):
        writer.write(frame(i), i)
        writer.write_keyframe(Image.new("RGB", (8, 8)), i)
    assert len(names(tmp_path / "history")) == 30 and len(names(tmp_path / "keyframes")) == 30
    writer.configure(history_keep=10)  # no write in between: the new limit holds already
    assert names(tmp_path / "history") == [f"frame_{i:08d}.png" for i in range(20, 30)]
    assert names(tmp_path / "keyframes") == [f"keyframe_{i:06d}.png" for i in range(20, 30)]


def test_a_new_run_with_a_lower_limit_prunes_a_previous_runs_keyframes_at_start(tmp_path):
    first = FrameWriter(tmp_path, history_keep=6)
    for segment in range(6):
        first.write_keyframe(Image.new("RGB", (8, 8)), segment)
    FrameWriter(tmp_path, history_keep=2)
    assert names(tmp_path / "keyframes") == ["keyframe_000004.png", "keyframe_000005.png"]


def test_turning_history_off_writes_no_more_and_deletes_nothing(tmp_path):
    writer = FrameWriter(tmp_path, history_keep=3)
    for i in range(3):
        writer.write(frame(i), i)
        writer.write_keyframe(Image.new("RGB", (8, 8)), i)
    writer.configure(history_keep=0)
    writer.write(frame(3), 3)
    writer.write_keyframe(Image.new("RGB", (8, 8)), 3)
    assert len(names(tmp_path / "history")) == 3 and len(names(tmp_path / "keyframes")) == 3


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits; on Windows the mode only sets read-only")
@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_output_files_get_the_permissions_the_umask_gives(tmp_path, umask, expected):
    from backend.status import StatusWriter, new_status

    previous = os.umask(umask)
    try:
        writer = FrameWriter(tmp_path / "out", history_keep=2)
        writer.write(frame(1), 0)
        writer.write_keyframe(Image.new("RGB", (8, 8)), 0)
        StatusWriter(tmp_path / "out").write(new_status())
    finally:
        os.umask(previous)
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert {p.relative_to(tmp_path / "out").as_posix() for p in files} == {
        "current_frame.png", "frames/frame_0.png", "history/frame_00000000.png", "keyframes/keyframe_000000.png",
        "status.json", "status.txt", "status.js"}
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: oct(expected) for p in files}


def test_a_binary_payload_is_written_byte_for_byte(tmp_path):
    data = bytes(range(256)) * 4 + b"\r\n\n\r\x1a"  # no newline translation, no stop at ^Z (Windows text mode)
    atomic_write_bytes(tmp_path / "f.bin", data)
    assert (tmp_path / "f.bin").read_bytes() == data
