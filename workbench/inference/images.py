"""Prediction over images, folders and videos: what ``workbench predict`` runs, and the batched
prediction over a dataset's records that evaluation and suggestions build on.

    from workbench.inference.images import predict_inputs
    result = predict_inputs(["photo.jpg", "folder/", "clip.mp4"], model="latest", out_dir="out")
    result.images[0]["detections"]      # [{"box": [x1, y1, x2, y2], "score", "class_id", "class"}]
    result.videos[0]["video"]           # out/clip_detections.webm

With ``out_dir``, each image is written there annotated as ``<name>.jpg`` (a folder's images as
``<sub>__<name>.jpg``), with ``coco_results.json`` (COCO results: image id = the image's index,
category = class id + 1, ``bbox`` ``[x, y, w, h]`` pixels) and ``coco_images.json`` (the image
and category ids those refer to); each video as ``<stem>_detections.webm`` with
``<stem>_detections.jsonl`` beside it (``inference.video.annotate_video``). Boxes are pixels
``x1, y1, x2, y2`` of the image as given.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from workbench.annotations import Detections, ImageRecord, detections_to_json
from workbench.drawing import draw_boxes
from workbench.errors import WorkbenchError
from workbench.fileio import IMAGE_EXTENSIONS, atomic_write, is_image, iter_files, load_image, relpath
from workbench.inference.video import annotate_video, is_video
from workbench.metrics import coco_results

if TYPE_CHECKING:
    from workbench.training.predictor import Predictor

# on_progress(stage, done, total): a stage is "predict" for the images, a video's file name for its frames
Progress = Callable[[str, int, "int | None"], None]


def predict_records(
    predictor: Any,
    root: Path,
    records: list[ImageRecord],
    *,
    score_threshold: float = 0.001,
    max_detections: int = 100,
    batch: int = 4,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[Detections]:
    """Run ``predictor`` (a ``training.predictor.Predictor``) on each record's image under ``root``,
    in order, ``batch`` images at a time; one ``Detections`` per record. The defaults keep the whole
    precision-recall curve (score >= 0.001, COCO's 100 detections per image)."""
    out: list[Detections] = []
    for start in range(0, len(records), batch):
        chunk = records[start : start + batch]
        images = [load_image(Path(root) / r.path, r.path) for r in chunk]
        out += predictor.predict_batch(
            images, score_threshold=score_threshold, iou_threshold=0.5, max_detections=max_detections
        )
        if on_progress:
            on_progress(len(out), len(records))
    return out


def image_files(inputs: list[str | Path]) -> list[tuple[Path, str]]:
    """``(path, shown name)`` of every image given: files as they are, folders searched recursively
    (shown by their path inside the folder)."""
    found: list[tuple[Path, str]] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            files = sorted(iter_files(path, tuple(IMAGE_EXTENSIONS)))
            if not files:
                raise WorkbenchError(f"{path}: no image in this folder")
            found += [(f, relpath(f, path)) for f in files]
        elif path.is_file():
            if not is_image(path):
                raise WorkbenchError(f"{path}: not an image file")
            found.append((path, path.name))
        else:
            raise WorkbenchError(f"{path}: no such file or folder")
    return found


@dataclass
class Prediction:
    """What ``predict_inputs`` found and wrote.

    Attributes:
        model: the run's name. classes: its class list.
        images: per image ``{"path", "width", "height", "detections": detections_to_json(...)}``.
        videos: per video ``{"path", "video", "detections_path", "codec", "frames",
            "predicted_frames", "detections", "seconds"}``; empty when no video was given.
        out_dir: where the annotated files went, or ``None``.
    """

    model: str
    classes: list[str]
    images: list[dict[str, Any]] = field(default_factory=list)
    videos: list[dict[str, Any]] = field(default_factory=list)
    out_dir: Path | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``workbench predict --json`` object (``videos`` only when videos were given)."""
        summary = {"model": self.model, "classes": self.classes, "images": self.images}
        return {**summary, "videos": self.videos} if self.videos else summary


def predict_inputs(
    inputs: list[str | Path],
    *,
    model: str | Path = "latest",
    device: str = "auto",
    score_threshold: float = 0.25,
    iou_threshold: float = 0.5,
    out_dir: str | Path | None = None,
    video_step: int = 1,
    on_progress: Progress | None = None,
) -> Prediction:
    """Run run ``model`` on image files, folders of images and video files (see the module
    docstring for what goes into ``out_dir``). A video needs ``out_dir``; the model runs on every
    ``video_step``-th frame. The inputs are checked before the model is loaded."""
    videos = [Path(p) for p in inputs if Path(p).is_file() and is_video(p)]
    if videos and not out_dir:
        raise WorkbenchError(f"{videos[0]}: a video needs --out DIR (the annotated video and its detections go there)")
    if video_step < 1:
        raise WorkbenchError(f"--video-step {video_step}: the model runs on every N-th frame, N >= 1")
    files = image_files([p for p in inputs if Path(p) not in videos])
    from workbench.inference.predict import load_predictor  # torch: only once there is something to predict

    predictor = load_predictor(model, device=device)
    out = Path(out_dir) if out_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    result = Prediction(model=predictor.run_dir.name, classes=list(predictor.classes), out_dir=out)
    thresholds = {"score_threshold": score_threshold, "iou_threshold": iou_threshold}
    result.images = _predict_images(predictor, files, out_dir=out, thresholds=thresholds, on_progress=on_progress)
    used: set[str] = set()  # two clip.mp4 of different folders: clip_detections, clip-2_detections
    for path in videos:
        progress = (lambda done, total, name=path.name: on_progress(name, done, total)) if on_progress else None
        stem = Path(_unique_name(path.name, used)).stem + "_detections"
        video = annotate_video(
            predictor,
            path,
            out / stem,
            frame_step=video_step,
            detections_path=out / f"{stem}.jsonl",
            on_frame=progress,
            **thresholds,
        )
        result.videos.append(
            {
                "path": str(path),
                "video": str(video.path),
                "detections_path": str(video.detections_path),
                "codec": video.fourcc,
                "frames": video.frames,
                "predicted_frames": video.predicted,
                "detections": video.detections,
                "seconds": round(video.seconds, 3),
            }
        )
    return result


def _predict_images(
    predictor: Predictor,
    files: list[tuple[Path, str]],
    *,
    out_dir: Path | None,
    thresholds: dict[str, float],
    on_progress: Progress | None,
) -> list[dict[str, Any]]:
    """Predict on each image; with ``out_dir`` write it annotated plus the two COCO files."""
    results: list[dict[str, Any]] = []
    coco_images: list[dict[str, Any]] = []
    detections: list[Detections] = []
    used: set[str] = set()
    for n, (path, shown) in enumerate(files):
        image = load_image(path, str(path))
        det = predictor.predict(image, **thresholds)
        height, width = image.shape[:2]
        results.append(
            {
                "path": str(path),
                "width": width,
                "height": height,
                "detections": detections_to_json(det, predictor.classes),
            }
        )
        if out_dir:
            name = _unique_name(shown.replace("/", "__"), used)
            drawn = draw_boxes(Image.fromarray(image), det.boxes, det.class_ids, predictor.classes)
            drawn.save(out_dir / (Path(name).stem + ".jpg"), quality=90)
            coco_images.append({"id": n, "file_name": str(path), "width": width, "height": height})
            detections.append(det)
        if on_progress:
            on_progress("predict", n + 1, len(files))
    if out_dir and files:
        categories = [{"id": i + 1, "name": name} for i, name in enumerate(predictor.classes)]
        atomic_write(out_dir / "coco_results.json", json.dumps(coco_results(detections)))
        # the image ids and category ids the results refer to (a COCO file without annotations)
        atomic_write(out_dir / "coco_images.json", json.dumps({"images": coco_images, "categories": categories}))
    return results


def _unique_name(name: str, used: set[str]) -> str:
    """``name``, or ``<stem>-2<suffix>``, ``-3``, ... when its stem was used already; records it."""
    stem, n = Path(name).stem, 1
    candidate = stem
    while candidate in used:
        n += 1
        candidate = f"{stem}-{n}"
    used.add(candidate)
    return candidate + Path(name).suffix


__all__ = ["Prediction", "image_files", "predict_inputs", "predict_records"]
