"""An H.264 MP4 writer fed one frame at a time (PyAV), shared by renders and the live recorder.

Frames are encoded as they arrive, so memory stays at one frame whatever the length. Output:
H.264, yuv420p (what every player decodes), crf 18 by default, ``+faststart`` (the index at
the front, so a browser plays it before it has downloaded). yuv420p needs even sizes: an odd
width or height loses its last column or row. close() drains the encoder first: H.264 holds
frames back for B-frame reordering, and a writer that only closes the container loses them.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

INSTALL_HINT = "PyAV is not installed: run  pip install av  (it bundles FFmpeg)"


class VideoError(RuntimeError):
    """The video cannot be written (PyAV missing, codec missing, file not writable); one sentence."""


def _av():
    try:
        import av
    except ImportError:
        raise VideoError(INSTALL_HINT) from None
    return av


def check_codec(codec: str = "libx264") -> None:
    """Raise VideoError unless PyAV is installed and can encode `codec`."""
    av = _av()
    try:
        av.codec.Codec(codec, "w")
    except Exception:
        raise VideoError(f"this PyAV build cannot encode {codec!r}: install a PyAV wheel with it "
                         f"(pip install --force-reinstall av) or choose another codec") from None


def even(size: int) -> int:
    return size - size % 2


class VideoWriter:
    """``write(pixels)`` with uint8 ``[H, W, 3]`` RGB frames of one size; ``close()`` to finish."""

    def __init__(self, path: Path, fps: float, *, crf: int = 18, codec: str = "libx264",
                 preset: str = "medium", container_format: str = "mp4"):
        av = _av()
        check_codec(codec)
        self.path = Path(path)
        self.fps = fps
        self.frames = 0
        self._settings = {"crf": str(crf), "preset": preset} if codec == "libx264" else {}
        self._codec = codec
        try:
            # FFmpeg opens the file only when the first packet arrives: find out now instead
            self.path.open("wb").close()
            # the format is named, not guessed from the suffix: the recorder writes "*.mp4.part"
            self._container = av.open(str(self.path), mode="w", format=container_format,
                                      options={"movflags": "+faststart"})
        except OSError as exc:
            raise VideoError(f"cannot write the video {self.path}: {exc.strerror or exc}") from None
        self._stream = None

    def _open_stream(self, width: int, height: int) -> None:
        rate = Fraction(self.fps).limit_denominator(1001)
        stream = self._container.add_stream(self._codec, rate=rate, options=self._settings)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        self._stream = stream

    def write(self, pixels: np.ndarray) -> None:
        """Encode one uint8 ``[H, W, 3]`` RGB frame (the first one fixes the size)."""
        av = _av()
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError(f"a frame is uint8 [H, W, 3], got {pixels.dtype} {pixels.shape}")
        height, width = even(pixels.shape[0]), even(pixels.shape[1])
        if height < 2 or width < 2:
            raise ValueError(f"a frame of {pixels.shape[1]}x{pixels.shape[0]} is too small to encode")
        if self._stream is None:
            self._open_stream(width, height)
        elif (width, height) != (self._stream.width, self._stream.height):
            raise ValueError(f"frame {self.frames} is {width}x{height}, the video is "
                             f"{self._stream.width}x{self._stream.height}")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels[:height, :width]), format="rgb24")
        frame.pts = self.frames
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Drain the encoder and finish the file (playable from here on). Safe to call twice."""
        if self._container is None:
            return
        try:
            if self._stream is not None:
                for packet in self._stream.encode(None):
                    self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_frames(path: Path) -> list[np.ndarray]:
    """Decode every frame of a video as uint8 ``[H, W, 3]`` RGB (for tests and checks)."""
    av = _av()
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
