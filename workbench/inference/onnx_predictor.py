"""Serve an exported ``.onnx`` file with onnxruntime: ``OnnxPredictor``, the ``Predictor`` of a file.

    from workbench.inference.predict import load_predictor
    predictor = load_predictor("models/my-run/model.onnx")   # or OnnxPredictor(path)
    det = predictor.predict(image)                            # the same Detections as torch's

The file alone is enough: the class names, the input contract, the thresholds the graph was
traced with and the run it came from are in its metadata (``onnx_export.metadata``). The torch
predictor's attributes are here too (``classes``, ``card``, ``run_dir``, ``device``), so
``predict``, ``eval``, the demo and ``suggest`` take a ``.onnx`` path where they take a run.

``run_dir`` is the folder of the run it came from when that folder is still there (evaluations
read its split and are saved into it, as for the run itself), else a folder named after the run
next to the file. This module needs no torch.

A two-stage file (``engine: two-stage``) holds the face detector's graph and the crop classifier's
(``onnx_export``); the predictor runs the detector, the numpy steps of ``training.facecrops`` with
the run's settings (``info["pipeline"]``), then the classifier, as ``faces.TwoStagePredictor`` does.
Each run feeds the other half a placeholder (a 32 x 32 image, no crops): onnxruntime runs every
node of a graph whatever outputs are asked for, and this keeps the unused half's cost small.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

from workbench.annotations import Detections
from workbench.errors import WorkbenchError
from workbench.training import optional
from workbench.training.facecrops import corrected_crops, pipeline_detections, retinaface_faces

log = logging.getLogger(__name__)

METADATA_KEY = "workbench"  # onnx_export.METADATA_KEY: that module loads torch, this one must not
SUFFIX = ".onnx"
PLACEHOLDER_IMAGE = np.zeros((1, 3, 32, 32), dtype=np.float32)  # the detector's input while classifying


def is_onnx_file(model: str | Path) -> bool:
    """True when ``model`` names an ONNX file rather than a run (by its suffix)."""
    return str(model).lower().endswith(SUFFIX)


def providers_for(device: str) -> list[str]:
    """onnxruntime's execution providers for ``device``: the CPU for ``auto`` and ``cpu``, CUDA (then
    the CPU for the operators CUDA lacks) for ``cuda[:N]`` when this onnxruntime has it."""
    if device in ("auto", "cpu"):
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise WorkbenchError(
                f"device {device!r} requested but this onnxruntime has no CUDA provider (install onnxruntime-gpu)"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise WorkbenchError(f"unknown device {device!r}; use auto, cpu or cuda[:N]")


def read_metadata(session: ort.InferenceSession, path: Path) -> dict[str, Any]:
    """The workbench's metadata of an ONNX file; a file exported elsewhere is a clear error."""
    text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if not text:
        raise WorkbenchError(f"{path}: not exported by `workbench export` (no {METADATA_KEY!r} metadata)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise WorkbenchError(f"{path}: unreadable {METADATA_KEY!r} metadata: {e}") from e


def letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """``image`` scaled (bilinear, aspect kept) to fit ``(height, width)`` and padded with black at
    the bottom and right; returns the padded image and the scale applied."""
    h, w = image.shape[:2]
    scale = min(size[0] / h, size[1] / w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = image if (new_h, new_w) == (h, w) else np.asarray(Image.fromarray(image).resize((new_w, new_h)))
    out = np.zeros((size[0], size[1], 3), dtype=np.uint8)
    out[:new_h, :new_w] = resized
    return out, scale


def rgb_array(image: np.ndarray) -> np.ndarray:
    """A contiguous ``(H, W, 3)`` uint8 copy of an RGB, RGBA or grey image (``predictor.image_tensor``'s rules)."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise WorkbenchError(f"expected an (H, W, 3) RGB image, got shape {array.shape}")
    if array.dtype != np.uint8:
        raise WorkbenchError(f"expected a uint8 image, got {array.dtype}")
    return np.ascontiguousarray(array[:, :, :3])


class OnnxPredictor:
    """An exported model ready to run on onnxruntime, with ``Predictor``'s interface.

    Attributes:
        path: the ``.onnx`` file.
        info: its metadata (``onnx_export.metadata``).
        classes, card, run_dir: as ``Predictor``'s (see the module docstring for ``run_dir``).
        device: ``"cpu"`` or ``"cuda"``: where onnxruntime runs it.
    """

    def __init__(self, path: str | Path, *, device: str = "auto") -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise WorkbenchError(f"no ONNX model {str(path)!r}: {self.path} is not a file")
        try:
            self.session = ort.InferenceSession(str(self.path), providers=providers_for(device))
        except WorkbenchError:
            raise
        except Exception as e:  # onnxruntime raises its own types for a truncated or foreign file
            raise WorkbenchError(f"{self.path}: cannot load the ONNX model: {e}") from e
        self.info = read_metadata(self.session, self.path)
        self.classes = list(self.info["classes"])
        self.card = dict(self.info.get("card") or {}, onnx=str(self.path))
        origin = Path(self.info.get("run_dir") or "")
        self.run_dir = origin if origin.name and origin.is_dir() else self.path.parent / self.info["run"]
        self.device = "cuda" if "CUDAExecutionProvider" in self.session.get_providers() else "cpu"
        size = (self.info.get("input") or {}).get("size")
        self.size = tuple(size) if size else None
        self._warned: set[str] = set()
        self.pipeline = self.info.get("pipeline") if self.info.get("engine") == "two-stage" else None
        if self.pipeline is not None:  # its pre- and post-processing around the detector graph
            optional.require("retinaface", user=f"{self.path.name} (a two-stage export)")

    def __repr__(self) -> str:
        return f"OnnxPredictor({self.path.name!r}, run={self.info['run']!r}, classes={self.classes})"

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s: %s", self.path.name, message)

    def _run(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rgb, scale = rgb_array(image), 1.0
        if self.size is not None and rgb.shape[:2] != self.size:
            rgb, scale = letterbox(rgb, self.size)
        boxes, scores, labels = self.session.run(None, {"image": rgb})
        if scale != 1.0:
            h, w = image.shape[:2]
            boxes = boxes / scale
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        return boxes, scores, labels

    def predict_batch(
        self,
        images: Sequence[np.ndarray],
        score_threshold: float = 0.25,
        iou_threshold: float = 0.5,
        max_detections: int = 300,
    ) -> list[Detections]:
        """Detect objects in each ``(H, W, 3)`` uint8 RGB image, one graph run per image.

        The graph's NMS IoU and its lowest score were fixed at export; other values are used
        as far as they can be (a higher score, fewer detections) and a warning says so. A
        two-stage file ignores ``iou_threshold``, as its torch predictor does.
        """
        if self.pipeline is not None:
            return [self._faces(image, score_threshold, max_detections) for image in images]
        floor, iou = float(self.info["score_threshold"]), float(self.info["iou_threshold"])
        if abs(iou_threshold - iou) > 1e-9:
            self._warn_once("iou", f"NMS IoU is fixed at {iou:g} in the exported graph; {iou_threshold:g} ignored")
        if score_threshold < floor:
            self._warn_once("score", f"exported with scores >= {floor:g}; lower ones are not in the graph's output")
        if max_detections > int(self.info["max_detections"]):
            self._warn_once("max", f"exported with at most {self.info['max_detections']} detections per image")
        results = []
        for image in images:
            boxes, scores, labels = self._run(image)
            keep = np.flatnonzero(scores >= score_threshold)
            order = keep[np.argsort(-scores[keep], kind="stable")][:max_detections]
            results.append(
                Detections(
                    boxes=boxes[order].astype(np.float64),
                    scores=scores[order].astype(np.float64),
                    class_ids=labels[order].astype(np.int64),
                )
            )
        return results

    def _faces(self, image: np.ndarray, score_threshold: float, max_detections: int) -> Detections:
        """One image through the two-stage pipeline (``faces.TwoStagePredictor.predict_batch``'s steps)."""
        p = self.pipeline
        size = int(p["imgsz"])
        no_crops = np.zeros((0, size, size, 3), dtype=np.uint8)
        rgb = rgb_array(image)

        def detector(x: np.ndarray) -> list[np.ndarray]:
            return self.session.run(p["detector_outputs"], {p["detector_input"]: x, "crops": no_crops})

        boxes, face_scores = retinaface_faces(rgb, detector, upscale=p["upscale"], threshold=p["face_threshold"])
        if not len(boxes):
            return Detections()
        boxes, pixels = corrected_crops(rgb, boxes, p["box_fit"], imgsz=size, gamma=bool(p["gamma"]))
        probs = self.session.run(["probs"], {p["detector_input"]: PLACEHOLDER_IMAGE, "crops": pixels})[0]
        return pipeline_detections(
            boxes,
            face_scores,
            probs,
            classes=len(self.classes),
            score_threshold=score_threshold,
            max_detections=max_detections,
        )

    def predict(
        self, image: np.ndarray, score_threshold: float = 0.25, iou_threshold: float = 0.5, max_detections: int = 300
    ) -> Detections:
        """Detect objects in one ``(H, W, 3)`` uint8 RGB image."""
        return self.predict_batch(
            [image], score_threshold=score_threshold, iou_threshold=iou_threshold, max_detections=max_detections
        )[0]
