"""What the demo does, without its UI: the served model, the request limits, the event handlers.

    from workbench.demo.detector import DetectorDemo, ModelSource
    app = DetectorDemo(ModelSource("latest"))
    picture, rows, download, json_path, status = app.detect_image("photo.jpg", 0.25, 0.5)

``DetectorDemo``'s methods take and return paths, arrays and strings, so they are tested (and
benchmarked) without a server; ``workbench.demo.gradio_app`` wires them into ``gr.Blocks`` and
turns a ``DemoError`` into the message box Gradio shows.

Boxes are in the pixel grid of the file as stored (no EXIF rotation: Gradio's own image
decoding would rotate, so the image arrives as a path and is decoded by ``load_image``, the
same way ``workbench predict`` and the annotation tools read it).

The model is looked up on every request (``ModelSource``): a new ``models/latest`` is picked
up without a restart, and with no trained model each event answers how to train one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from workbench.annotations import Detections, detections_to_json
from workbench.drawing import annotate, class_colour
from workbench.errors import ReadError, WorkbenchError
from workbench.fileio import load_image
from workbench.inference import video
from workbench.inference.onnx_export import export_onnx
from workbench.inference.onnx_predictor import OnnxPredictor, is_onnx_file
from workbench.inference.predict import load_predictor
from workbench.paths import SAMPLE_DATASET, models_dir
from workbench.training.registry import LATEST, resolve_run

if TYPE_CHECKING:
    from workbench.training.predictor import Predictor

log = logging.getLogger(__name__)

SAMPLE_IMAGES = SAMPLE_DATASET / "images"
TRAIN_HINT = (
    "Train one with `workbench train --data datasets/facemask-sample --wait` (or on the **Train** page of "
    "`workbench ui`). The demo picks up the new `models/latest` on the next request: no restart needed."
)


@dataclass(frozen=True)
class DemoLimits:
    """What one request may ask for.

    Attributes:
        max_file_size: largest upload, passed to ``launch(max_file_size=...)`` (Gradio refuses bigger files).
        max_side: longest image or video side, pixels.
        max_pixels: width x height of an image.
        max_video_seconds: longest video processed.
        concurrency: events of one kind running at once (the queue holds the rest).
        queue_size: requests waiting in the queue before new ones are turned away.
        stream_seconds: how long one webcam stream runs before the user restarts it.
    """

    max_file_size: str = "50mb"
    max_side: int = 4096
    max_pixels: int = 16_000_000
    max_video_seconds: float = 60.0
    concurrency: int = 2
    queue_size: int = 64
    stream_seconds: int = 120


class DemoError(WorkbenchError):
    """A request the demo turns down, with what to do about it; ``title`` heads the message box."""

    def __init__(self, message: str, *, title: str) -> None:
        super().__init__(message)
        self.title = title


class NoModel(WorkbenchError):
    """There is no trained model to serve (yet)."""


class ModelSource:
    """The predictor of ``run`` (``"latest"``, ``"latest:<dataset folder>"`` or a run name), reloaded when the run changes.

    ``get()`` resolves the run on every call (a symlink read and a few ``stat`` calls) and loads
    the model again only when the folder or its checkpoint changed, so a new ``models/latest``
    is served by the next request. A new model that fails to load is logged and the previous
    one kept (tried again on the next request). ``predict()`` runs one image at a time: the predictor's
    thresholds live in the model (``set_postprocess``), so two requests with different sliders
    must not interleave, and on a CPU one inference already uses every core.
    """

    def __init__(
        self, run: str = LATEST, *, device: str = "auto", loader: Callable[..., Predictor] = load_predictor
    ) -> None:
        self.run = run
        self.device = device
        self._loader = loader
        self._key: tuple | None = None
        self._predictor: Predictor | None = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    def _key_of(self, folder: Path) -> tuple:
        files = [folder / "model_best.pth", folder / "checkpoint.pth", folder / "model_card.json"]
        return (str(folder.resolve()), *(f.stat().st_mtime_ns if f.exists() else 0 for f in files))

    def get(self) -> Predictor:
        """The current predictor; raises ``NoModel`` (with how to train one) when there is none."""
        try:
            if is_onnx_file(self.run):  # an exported file: reloaded when it is written again
                folder = Path(self.run)
                key = (str(folder.resolve()), folder.stat().st_mtime_ns)
            else:
                folder = resolve_run(self.run)
                key = self._key_of(folder)
        except (WorkbenchError, OSError) as e:
            link = models_dir() / LATEST
            if self.run == LATEST and not link.exists():
                raise NoModel(f"No trained model yet ({link} does not exist).") from e
            raise NoModel(f"No model to serve: {e}") from e
        with self._load_lock:
            if key != self._key:
                try:
                    predictor = self._loader(folder, device=self.device)
                except Exception as e:  # a foreign or truncated checkpoint must not take the demo down
                    if self._predictor is not None:
                        log.warning("cannot load %s (%s); still serving %s", folder, e, self._predictor.run_dir.name)
                        return self._predictor
                    raise NoModel(f"The model {folder.name} cannot be loaded: {e}") from e
                if self._predictor is not None:
                    log.info("model changed: %s -> %s", self._predictor.run_dir.name, folder.name)
                self._predictor, self._key = predictor, key
            return self._predictor

    def predict(
        self, image: np.ndarray, *, score_threshold: float, iou_threshold: float
    ) -> tuple[Predictor, Detections]:
        predictor = self.get()
        with self._run_lock:
            return predictor, predictor.predict(image, score_threshold=score_threshold, iou_threshold=iou_threshold)


def json_text(record: dict[str, Any]) -> str:
    """``record`` as JSON with one detection a line: readable, and written by the C encoder
    (``indent=`` switches ``json`` to its pure-Python encoder, several times slower on hundreds
    of detections)."""
    head = {k: v for k, v in record.items() if k != "detections"}
    lines = [json.dumps(d) for d in record.get("detections", [])]
    body = json.dumps(head)[:-1]
    if not lines:
        return f'{body}, "detections": []}}\n'
    return f'{body}, "detections": [\n' + ",\n".join(f"  {line}" for line in lines) + "\n]}\n"


def detection_rows(det: Detections, classes: list[str]) -> list[list[Any]]:
    """One table row per detection: number, class, score, ``x1 y1 x2 y2`` pixels."""
    return [[i + 1, rec["class"], rec["score"], *rec["box"]] for i, rec in enumerate(detections_to_json(det, classes))]


class DetectorDemo:
    """The demo's event handlers, as plain methods (the Gradio app calls them, tests call them directly).

    A request the demo turns down raises ``DemoError``. Output files (annotated JPEG, JSON,
    video) go to a private temporary folder, one sub-folder per request, removed after
    ``keep_seconds``; Gradio copies what it serves into its own cache.
    """

    def __init__(
        self,
        source: ModelSource,
        *,
        limits: DemoLimits | None = None,
        out_dir: Path | None = None,
        keep_seconds: float = 900,
    ) -> None:
        self.source = source
        self.limits = limits or DemoLimits()
        self.out_dir = Path(out_dir or tempfile.mkdtemp(prefix="workbench-demo-"))
        self.keep_seconds = keep_seconds

    def _predictor(self) -> Predictor:
        try:
            return self.source.get()
        except NoModel as e:
            raise DemoError(f"{e} {TRAIN_HINT}", title="No trained model") from e

    def _predict(self, image: np.ndarray, score_threshold: float, iou_threshold: float) -> tuple[Predictor, Detections]:
        try:
            return self.source.predict(
                image, score_threshold=float(score_threshold), iou_threshold=float(iou_threshold)
            )
        except NoModel as e:
            raise DemoError(f"{e} {TRAIN_HINT}", title="No trained model") from e

    def _request_dir(self) -> Path:
        now = time.time()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for old in self.out_dir.iterdir():
            try:
                if now - old.stat().st_mtime > self.keep_seconds:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError:
                continue
        folder = self.out_dir / uuid.uuid4().hex[:12]
        folder.mkdir()
        return folder

    def _check_size(self, width: int, height: int, what: str) -> None:
        limits = self.limits
        if max(width, height) > limits.max_side or width * height > limits.max_pixels:
            raise DemoError(
                f"The {what} is {width}x{height} px; the demo takes at most {limits.max_side} px a side "
                f"and {limits.max_pixels / 1e6:.0f} megapixels. Resize it and try again.",
                title="Too large",
            )

    def _read_image(self, path: str) -> np.ndarray:
        try:
            with Image.open(path) as header:  # the header only: refuse huge images before decoding them
                self._check_size(header.width, header.height, "image")
            return load_image(Path(path), shown=Path(path).name)
        except ReadError as e:
            raise DemoError(str(e), title="Unreadable image") from e
        except (OSError, Image.DecompressionBombError) as e:
            message = f"{Path(path).name}: not an image this demo can read ({e})"
            raise DemoError(message, title="Unreadable image") from e

    def detect_image(
        self, image_path: str | None, score_threshold: float = 0.25, iou_threshold: float = 0.5
    ) -> tuple[str, list[list[Any]], str, str, str]:
        """``image_path`` -> (annotated JPEG path, table rows, the same path for the download, JSON path,
        status). The image is returned as a file so that Gradio serves it without encoding it again."""
        if not image_path:
            raise DemoError("Upload an image first (or pick one of the examples).", title="No image")
        self._predictor()  # the no-model answer before decoding anything
        image = self._read_image(image_path)
        start = time.perf_counter()
        predictor, det = self._predict(image, score_threshold, iou_threshold)
        elapsed = time.perf_counter() - start
        annotated = annotate(image, det, predictor.classes)
        folder = self._request_dir()
        stem = Path(image_path).stem or "image"
        picture = folder / f"{stem}_detections.jpg"
        # JPEG, not PNG: PNG costs tens of ms even at zlib level 1, a sizeable part of a CPU inference.
        Image.fromarray(annotated).save(picture, quality=92)
        record = {
            "image": Path(image_path).name,
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "model": predictor.run_dir.name,
            "classes": predictor.classes,
            "score_threshold": float(score_threshold),
            "iou_threshold": float(iou_threshold),
            "box_format": "x1, y1, x2, y2 pixels of the stored image (0-based, x2/y2 exclusive)",
            "detections": detections_to_json(det, predictor.classes),
        }
        json_path = folder / f"{stem}_detections.json"
        json_path.write_text(json_text(record), encoding="utf-8")
        status = (
            f"**{len(det)}** detection(s) in {image.shape[1]}x{image.shape[0]} px, "
            f"{elapsed * 1000:.0f} ms, model `{predictor.run_dir.name}`"
        )
        return str(picture), detection_rows(det, predictor.classes), str(picture), str(json_path), status

    def detect_frame(
        self, frame: np.ndarray | None, score_threshold: float = 0.25, iou_threshold: float = 0.5
    ) -> np.ndarray | None:
        """One webcam frame ``(H, W, 3)`` uint8 RGB -> the same frame annotated."""
        if frame is None:
            return None
        frame = np.asarray(frame)[:, :, :3].astype(np.uint8, copy=False)
        self._check_size(frame.shape[1], frame.shape[0], "frame")
        predictor, det = self._predict(frame, score_threshold, iou_threshold)
        return annotate(frame, det, predictor.classes)

    def detect_video(
        self,
        video_path: str | None,
        score_threshold: float = 0.25,
        iou_threshold: float = 0.5,
        frame_step: int = 1,
        on_frame: Callable[[int, int | None], None] | None = None,
    ) -> tuple[str, str]:
        """``video_path`` -> (annotated WebM path, status). Runs the model on every
        ``frame_step``-th frame; the frames between keep the last boxes (``video.annotate_video``).
        ``on_frame(done, total)`` is called with 0 first, then after each frame; ``total`` is the
        container's frame count, ``None`` when it does not say."""
        if not video_path:
            raise DemoError("Upload a video first.", title="No video")
        self._predictor()  # the no-model answer before decoding anything
        try:
            info = video.probe(video_path)
        except ReadError as e:
            raise DemoError(f"{Path(video_path).name}: {e.reason}", title="Unreadable video") from e
        self._check_size(info.width, info.height, "video")
        if info.seconds > self.limits.max_video_seconds:
            raise DemoError(
                f"The video lasts {info.seconds:.0f} s; the demo takes at most {self.limits.max_video_seconds:.0f} s. "
                "Cut it shorter and try again.",
                title="Too long",
            )
        total = info.frames or None
        report = on_frame or (lambda done, total: None)
        report(0, total)
        try:
            result = video.annotate_video(
                self._predict,
                video_path,
                self._request_dir() / f"{Path(video_path).stem or 'video'}_detections",
                score_threshold=score_threshold,
                iou_threshold=iou_threshold,
                frame_step=frame_step or 1,
                # containers that under-report their length
                max_frames=int(self.limits.max_video_seconds * info.fps) + 1,
                on_frame=lambda done, _total: report(done, total),
            )
        except ReadError as e:
            raise DemoError(f"{Path(video_path).name}: {e.reason}.", title="Unreadable video") from e
        done, elapsed = result.frames, result.seconds
        status = (
            f"**{done}** frame(s), model run on {result.predicted}, {result.detections} detection(s); "
            f"{elapsed:.1f} s ({elapsed / done * 1000:.0f} ms a frame), codec {result.fourcc}, "
            f"model `{result.predictor.run_dir.name}`"
        )
        return str(result.path), status

    def onnx_file(self) -> str:
        """The served model as an ``.onnx`` file to download (linked into a request folder): the file
        itself when the demo serves one; for a run, ``<run>/model.onnx`` (any image size), exported
        on the first request and when the weights are newer. A two-stage run is a ``DemoError``."""
        predictor = self._predictor()
        if isinstance(predictor, OnnxPredictor):
            source = predictor.path
        else:
            source = predictor.run_dir / "model.onnx"
            weights = [predictor.run_dir / name for name in ("model_best.pth", "checkpoint.pth")]
            newest = max((w.stat().st_mtime_ns for w in weights if w.exists()), default=0)
            if not source.exists() or source.stat().st_mtime_ns < newest:
                try:
                    export_onnx(predictor.run_dir, out=source, dynamic=True)
                except WorkbenchError as e:
                    raise DemoError(str(e), title="Cannot export") from e
        target = self._request_dir() / source.name
        try:
            os.link(source, target)  # the request folder is cleaned up; the model file stays
        except OSError:
            shutil.copy2(source, target)
        return str(target)

    def model_card(self) -> tuple[str, str, dict[str, Any]]:
        """(banner, model card as Markdown, model card as JSON); the no-model answer when there is none."""
        try:
            predictor = self.source.get()
        except NoModel as e:
            message = f"**{e}** {TRAIN_HINT}"
            return f"⚠️ {message}", message, {"model": None, "message": f"{e} {TRAIN_HINT}"}
        card = dict(predictor.card)
        card.setdefault("run", predictor.run_dir.name)
        card["classes"] = predictor.classes
        banner = (
            f"Serving **`{predictor.run_dir.name}`** ({card.get('model')}, {len(predictor.classes)} classes: "
            f"{', '.join(predictor.classes)}) on {getattr(predictor.device, 'type', predictor.device)}"
            + (" with onnxruntime." if isinstance(predictor, OnnxPredictor) else ".")
        )
        return banner, card_markdown(card), card


def card_markdown(card: dict[str, Any]) -> str:
    """The model card for people: classes (in their colours), metrics, training data, weights."""
    weights = card.get("weights") or {}
    best = card.get("best_metrics") or {}
    classes = card.get("classes") or []
    swatches = " ".join(
        f'<span style="background:{class_colour(i)};color:white;padding:1px 6px;border-radius:3px">{name}</span>'
        for i, name in enumerate(classes)
    )
    lines = [
        f"### `{card.get('run')}`",
        "",
        f"- **Model**: {card.get('engine') or 'torchvision'} / `{card.get('model')}`",
        f"- **Classes** ({len(classes)}): {swatches}",
        f"- **Weights used**: {weights.get('kind', '?')} ({weights.get('source', '?')})"
        + (f", `{weights.get('weights')}`" if weights.get("weights") else ""),
        f"- **Training data**: `{card.get('dataset', '?')}` ({card.get('dataset_format', '?')}), "
        f"{card.get('train_images', '?')} train / {card.get('val_images', '?')} val images, "
        f"annotations sha256 `{str(card.get('dataset_hash', '?'))[:16]}`",
        f"- **Training**: {card.get('epochs_done', '?')} of {card.get('epochs', '?')} epochs, "
        f"{card.get('imgsz', '?')} px, batch {card.get('batch', '?')}, on {card.get('device', '?')}; "
        f"finished {card.get('finished_at') or 'no (an unfinished run)'}",
    ]
    if best:
        lines += ["", "| metric (best epoch, COCO) | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in best.items()]
    else:
        lines += ["", "_No validation metrics in the card._"]
    return "\n".join(lines)


def sample_examples(limit: int = 6) -> list[list[str]]:
    """Example inputs from the bundled sample dataset (empty when it is missing)."""
    if not SAMPLE_IMAGES.is_dir():
        return []
    files = sorted(p for p in SAMPLE_IMAGES.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    return [[str(p)] for p in files[:limit]]
