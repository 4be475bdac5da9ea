"""Read and write video files with OpenCV (``opencv-python-headless``), frames as RGB arrays.

Frames are ``(H, W, 3)`` uint8 RGB, like every image in the workbench (OpenCV's own order is
BGR; the conversion happens here and nowhere else).

Codecs: the pip OpenCV wheels ship FFmpeg without an H.264 *encoder* (``avc1``/``H264``
writers fail to open), so an MP4 they write is MPEG-4 Part 2 (``mp4v``), which browsers do
not play. VP8 in WebM is written fine and plays in every current browser, so annotated
videos for the demo are ``.webm`` files (``BROWSER_CODEC``). Reading goes through the same
FFmpeg, which decodes H.264, VP8/9, MPEG-4 and MJPEG.

``annotate_video`` runs a detector over a video and writes it annotated: the demo's video tab
and ``workbench predict`` on a video file both go through it.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from workbench.annotations import detections_to_json
from workbench.drawing import annotate
from workbench.errors import ReadError, WorkbenchError, WriteError

if TYPE_CHECKING:
    from workbench.annotations import Detections
    from workbench.training.predictor import Predictor

# (container suffix, fourcc): what the demo writes, best first.
BROWSER_CODEC = (".webm", "VP80")
FALLBACK_CODEC = (".mp4", "mp4v")
# What `workbench predict` treats as a video (anything FFmpeg reads would do; these are the usual ones).
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


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


# predict(frame, score_threshold=..., iou_threshold=...) -> (the predictor that ran, its detections)
FramePredict = Callable[..., "tuple[Predictor, Detections]"]


@dataclass(frozen=True)
class AnnotatedVideo:
    """What ``annotate_video`` wrote.

    Attributes:
        path: the annotated video (its suffix is the codec's container).
        detections_path: the JSON Lines file of the detections, or ``None`` when none was asked for.
        frames: frames written; ``predicted``: frames the model ran on (the others keep the last boxes).
        detections: detections summed over the frames the model ran on.
        seconds: wall time of decoding, predicting, drawing and encoding.
        fourcc: the codec written (``VP80`` unless only the fallback could be opened).
        predictor: the predictor that made the last boxes (``ModelSource`` may swap models mid-video).
    """

    path: Path
    detections_path: Path | None
    frames: int
    predicted: int
    detections: int
    seconds: float
    fourcc: str
    predictor: Predictor


def _with_container(path: Path, suffix: str) -> Path:
    """``path`` with its video suffix replaced by ``suffix``; any other name gets ``suffix`` added
    (``Path.with_suffix`` would cut ``my.clip_detections`` down to ``my.webm``)."""
    return path.with_suffix(suffix) if is_video(path) else path.with_name(path.name + suffix)


def annotate_video(
    predictor: Predictor | FramePredict,
    src: str | Path,
    dst: str | Path,
    *,
    score_threshold: float = 0.25,
    iou_threshold: float = 0.5,
    frame_step: int = 1,
    max_frames: int | None = None,
    detections_path: str | Path | None = None,
    on_frame: Callable[[int, int | None], None] | None = None,
    codecs: tuple[tuple[str, str], ...] = (BROWSER_CODEC, FALLBACK_CODEC),
) -> AnnotatedVideo:
    """Detect objects in the video ``src`` and write it with the boxes drawn (``drawing.annotate``) to ``dst``.

    Args:
        predictor: a ``Predictor``, or a function ``predict(frame, score_threshold=, iou_threshold=)
            -> (predictor, detections)`` like ``ModelSource.predict`` (boxes are drawn with the
            classes of the predictor that made them).
        dst: the annotated video; its video suffix (or none) becomes the codec's container.
        frame_step: the model runs on every ``frame_step``-th frame (0, n, 2n, ...); the frames
            between keep the last boxes.
        max_frames: stop after this many frames (``None``: the whole video). Decoding also stops
            at a frame whose size differs from the first (a stream that changes size mid-way).
        detections_path: when given, a JSON Lines file with one line per frame written:
            ``{"frame": i, "time": seconds, "from_frame": the frame the boxes come from,
            "detections": detections_to_json(...)}``.
        on_frame: called as ``on_frame(done, total)`` after each frame; ``total`` is the container's
            frame count (capped by ``max_frames``), ``None`` when it does not say.

    Both files are written to temporary names in their folders and renamed when the video is done,
    so a failure leaves no half-written file (nor a previous one damaged). Raises ``ReadError``
    when ``src`` cannot be opened or no frame of it decodes.
    """
    src, dst = Path(src), Path(dst)
    predict = predictor if callable(predictor) else _predict_with(predictor)
    info = probe(src)
    step = max(1, int(frame_step))
    total = info.frames or None
    if total and max_frames is not None:
        total = min(total, max_frames)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    partial = dst.parent / f".{dst.name}.{tag}.part"  # VideoWriter replaces ".part" with the container
    jsonl = Path(detections_path) if detections_path is not None else None
    jsonl_partial = jsonl.parent / f".{jsonl.name}.{tag}.part" if jsonl else None
    if jsonl:
        jsonl.parent.mkdir(parents=True, exist_ok=True)
    done = predicted = detections_total = 0
    det, model, from_frame = None, None, 0
    start = time.perf_counter()
    writer = None
    try:
        with (
            VideoWriter(partial, fps=info.fps, size=(info.width, info.height), codecs=codecs) as writer,
            _detections_log(jsonl_partial) as log,
        ):
            for index, frame in enumerate(read_frames(src)):
                if max_frames is not None and index >= max_frames:
                    break
                if frame.shape[1::-1] != (info.width, info.height):  # a stream that changes size mid-way
                    break
                if index % step == 0:
                    model, det = predict(frame, score_threshold=score_threshold, iou_threshold=iou_threshold)
                    from_frame = index
                    predicted += 1
                    detections_total += len(det)
                writer.write(annotate(frame, det, model.classes))
                if log is not None:
                    log(index, index / info.fps, from_frame, det, model.classes)
                done += 1
                if on_frame:
                    on_frame(done, total)
        if not done:
            raise ReadError(str(src), "no frame could be decoded")
        path = _with_container(dst, writer.path.suffix)
        os.replace(writer.path, path)
        if jsonl:
            os.replace(jsonl_partial, jsonl)
    except BaseException:
        for leftover in (writer.path if writer else None, jsonl_partial):
            if leftover is not None:
                leftover.unlink(missing_ok=True)
        raise
    return AnnotatedVideo(
        path=path,
        detections_path=jsonl,
        frames=done,
        predicted=predicted,
        detections=detections_total,
        seconds=time.perf_counter() - start,
        fourcc=writer.fourcc,
        predictor=model,
    )


def _predict_with(predictor: Predictor) -> FramePredict:
    def predict(frame: np.ndarray, **thresholds: float) -> tuple[Predictor, Detections]:
        return predictor, predictor.predict(frame, **thresholds)

    return predict


@contextmanager
def _detections_log(path: Path | None) -> Iterator[Callable[..., None] | None]:
    """Yield ``log(index, seconds, from_frame, det, classes)`` appending one JSON line to ``path``
    (``None``: yield ``None``, write nothing)."""
    if path is None:
        yield None
        return
    try:
        file = open(path, "w", encoding="utf-8")  # closed by the with below
    except OSError as e:
        raise WriteError(f"{path}: cannot write: {e}") from e

    def log(index: int, seconds: float, from_frame: int, det: Detections, classes: list[str]) -> None:
        record = {"frame": index, "time": round(seconds, 4), "from_frame": from_frame}
        file.write(json.dumps({**record, "detections": detections_to_json(det, classes)}) + "\n")

    with file:
        yield log
