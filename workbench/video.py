"""Read and write video files with OpenCV (``opencv-python-headless``), frames as RGB arrays.

Frames are ``(H, W, 3)`` uint8 RGB, like every image in the workbench (OpenCV's own order is
BGR; the conversion happens here and nowhere else).

Codecs: the pip OpenCV wheels ship FFmpeg without an H.264 *encoder* (``avc1``/``H264``
writers fail to open), so an MP4 they write is MPEG-4 Part 2 (``mp4v``), which browsers do
not play. VP8 in WebM is written fine and plays in every current browser, so annotated
videos for the demo are ``.webm`` files (``BROWSER_CODEC``). Reading goes through the same
FFmpeg, which decodes H.264, VP8/9, MPEG-4 and MJPEG.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from workbench.errors import ReadError, WorkbenchError

# (container suffix, fourcc): what the demo writes, best first.
BROWSER_CODEC = (".webm", "VP80")
FALLBACK_CODEC = (".mp4", "mp4v")


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video: ``frames`` is an estimate (0 when unknown)."""

    width: int
    height: int
    fps: float
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.fps if self.fps > 0 else 0.0


def _open(path: Path) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise ReadError(str(path), "cannot open the video (unknown container or codec)")
    return capture


def probe(path: str | Path) -> VideoInfo:
    """Size, frame rate and frame count of a video without decoding it."""
    capture = _open(Path(path))
    try:
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        return VideoInfo(
            width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            fps=fps if 0 < fps < 1000 else 25.0,  # some containers report 0 or nonsense
            frames=max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT))),
        )
    finally:
        capture.release()


def read_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Every frame of a video in order, as ``(H, W, 3)`` uint8 RGB."""
    capture = _open(Path(path))
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


class VideoWriter:
    """Write RGB frames to ``path`` (its suffix is replaced by the codec's container).

    Tries ``codecs`` in order and keeps the first one OpenCV can open; ``path`` is the
    file actually written. Use as a context manager.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        fps: float,
        size: tuple[int, int],
        codecs: tuple[tuple[str, str], ...] = (BROWSER_CODEC, FALLBACK_CODEC),
    ) -> None:
        self.size = (int(size[0]), int(size[1]))  # (width, height)
        self._writer = None
        for suffix, fourcc in codecs:
            target = Path(path).with_suffix(suffix)
            writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*fourcc), float(fps), self.size)
            if writer.isOpened():
                self._writer, self.path, self.fourcc = writer, target, fourcc
                break
            writer.release()
        if self._writer is None:
            raise WorkbenchError(f"{path}: no video codec available (tried {', '.join(c for _, c in codecs)})")

    def write(self, frame: np.ndarray) -> None:
        """Append one ``(H, W, 3)`` uint8 RGB frame of the writer's size."""
        if frame.shape[1::-1] != self.size:
            raise WorkbenchError(f"frame is {frame.shape[1]}x{frame.shape[0]}, video is {self.size[0]}x{self.size[1]}")
        self._writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_video(path: str | Path, frames: list[np.ndarray], *, fps: float = 5.0, **kwargs) -> Path:
    """Write equally sized RGB ``frames`` to a video; returns the file written."""
    if not frames:
        raise WorkbenchError(f"{path}: no frames to write")
    height, width = frames[0].shape[:2]
    with VideoWriter(path, fps=fps, size=(width, height), **kwargs) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.path
