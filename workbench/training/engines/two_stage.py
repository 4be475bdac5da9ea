"""The two-stage engine (the ``face-then-classify`` recipe): fit the face model of ``faces`` to a
dataset, and load a trained one.

With ``detector_time`` (minutes, of the run's ``time``) the retinaface detector is fine-tuned on
the training boxes first (every class is a face; progress phase ``detector``), saved as
``<run>/detector.pth`` and used from then on; a resumed run that has it does not tune again.
Otherwise the face detector is not trained. The **box correction** is learned from the training labels:
detections matched to a ground-truth box (IoU >= 0.3) fit, per axis, ``gt_centre = det_centre
+ a * det_size + b`` and ``gt_size = c * det_size + d`` (least squares, in pixels). The
MobileNetV2 classifier trains on the ground-truth crops of the training split with flip,
rotation and colour augmentation; with ``background`` (the default) also on the detector's false
faces in the training images, as one more class, "not a face", whose share lowers a false face's
score (``facecrops.pipeline_detections``).

A run folder holds what every run holds (``config.json`` with ``engine: two-stage``,
``model_best.pth`` with the classifier and the box fit, ``metrics.jsonl`` with the pipeline's
COCO AP and the classifier's accuracy and loss per epoch, ``model_card.json``), so
``load_predictor`` returns a predictor with the same ``predict``/``predict_batch`` as a detector's.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2 as T
from torch import nn

from workbench.errors import WorkbenchError
from workbench.metrics import coco_ground_truth
from workbench.training import optional, registry
from workbench.training.budget import TimeBudget
from workbench.training.config import TrainConfig
from workbench.training.facecrops import IDENTITY_FIT
from workbench.training.faces import (
    DETECTOR_FILE,
    DETECTORS,
    TwoStagePredictor,
    build_classifier,
    crop_tensor,
    detector_stage,
    gamma_correct,
    pipeline_ap,
    train_faces,
    val_faces,
)
from workbench.training.models import load_matching
from workbench.training.predictor import Predictor, load_checkpoint, pick_device
from workbench.training.run import (
    Best,
    Cancelled,
    EpochEnd,
    IterationLog,
    Progress,
    end_epoch,
    lr_lambda,
    prepare_run,
    resume_checkpoint,
    setup_logging,
    truncate_logs,
)

log = logging.getLogger("workbench.training")

# what a resume keeps from the saved run
SAME_RUN = ("imgsz", "seed", "val_fraction", "weights", "detector", "upscale", "face_threshold", "gamma", "background")
DETECTOR_PACKAGES = {"retinaface": "retinaface", "mtcnn": "facenet_pytorch"}


def model_choices() -> dict[str, str]:
    return {}  # the model is the recipe's: a face detector + MobileNetV2


def check_options(config: TrainConfig) -> None:
    """Refuse an unknown face detector, or more than one process."""
    if config.detector not in DETECTORS:
        raise WorkbenchError(f"unknown face detector {config.detector!r}; choose one of {', '.join(DETECTORS)}")
    if int(config.gpus or 1) > 1:
        raise WorkbenchError("face-then-classify trains in one process; use --gpus 1")


def prepare(config: TrainConfig) -> str:
    """Check the face options and name the model ``<detector>+mobilenet_v2``."""
    check_options(config)
    optional.require(DETECTOR_PACKAGES[config.detector], user=f"the {config.detector} face detector")
    config.model = f"{config.detector}+mobilenet_v2"
    return f"{config.detector}-mobilenet_v2"


def load(folder: Path, config: dict[str, Any], card: dict[str, Any], device: torch.device) -> Predictor:
    """The predictor of two-stage run ``folder``: its best classifier and box correction."""
    state = load_checkpoint(registry.weights_file(folder))
    classes = list(state["classes"])
    classifier, _ = build_classifier(len(classes) + bool(state.get("background")), weights="none")
    load_matching(classifier, state["model"])
    return TwoStagePredictor(
        classifier, config=config, state=state, classes=classes, card=card, run_dir=folder, device=device
    )


def epoch_batches(samples: list, config: TrainConfig, *, epoch: int) -> Iterator[list]:
    """The training crops of one epoch in batches, in an order that depends on (seed, epoch) only
    (a resumed run sees the same order); at most ``max_iters`` batches."""
    order = np.random.default_rng([config.seed, epoch]).permutation(len(samples))
    count = -(-len(samples) // config.batch)
    for it in range(min(count, config.max_iters or count)):
        yield [samples[i] for i in order[it * config.batch : (it + 1) * config.batch]]


def train_one_epoch(
    model: nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    *,
    epoch: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    loss_fn: nn.Module,
    budget: TimeBudget,
    progress: Progress,
    iteration_log: IterationLog,
    stop: Callable[[], bool],
) -> tuple[int, int, float]:
    """Train the classifier on one epoch of ``(crops, labels)`` batches; ``(crops seen, correct,
    summed loss)``. Raises ``Cancelled`` when ``stop()``; the time budget ends the epoch early."""
    device = next(model.parameters()).device
    model.train()
    seen, correct, loss_sum = 0, 0, 0.0
    for it, (x, y) in enumerate(batches):
        if stop():
            raise Cancelled(f"cancelled at epoch {epoch + 1}, iteration {it}")
        if budget.over():
            log.info("time budget: training stops at epoch %d, iteration %d", epoch + 1, it)
            break
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
        lr = optimizer.param_groups[0]["lr"]
        iteration_log(epoch=epoch, step=epoch * progress.iters_per_epoch + it, lr=lr, loss=loss.item(), parts={})
        progress.step(epoch=epoch, iteration=it, loss=loss.item(), lr=lr)
    return seen, correct, loss_sum


def validate_epoch(
    model: nn.Module,
    faces: list,
    gt: dict[str, Any],
    *,
    loss_fn: nn.Module,
    val: tuple[torch.Tensor | None, torch.Tensor | None],
    train: tuple[int, int, float],
) -> dict[str, float]:
    """An epoch's metrics: the pipeline's COCO stats (``pipeline_ap``), the classifier's training
    loss and accuracy (``train``: what ``train_one_epoch`` returned), and its loss and accuracy on
    the validation crops ``val`` (``(crops, labels)``)."""
    device = next(model.parameters()).device
    row = pipeline_ap(model, faces, gt, device, classes=len(gt["categories"]))
    seen, correct, loss_sum = train
    if seen:
        row.update(train_loss=loss_sum / seen, train_accuracy=correct / seen)
    val_x, val_y = val
    if val_x is not None:
        with torch.inference_mode():
            logits = model(val_x.to(device))
        row["val_loss"] = float(loss_fn(logits, val_y.to(device)))
        row["val_accuracy"] = float((logits.argmax(1).cpu() == val_y).float().mean())
        log.info("crop accuracy %.4f on %d validation crops", row["val_accuracy"], len(val_y))
    return row


def save_classifier_plot(folder: Path) -> None:
    """``classifier.png``: the crop classifier's accuracy and loss per epoch, training and validation."""
    import matplotlib  # plots only: the engine trains without loading matplotlib's backends first

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


def augmentation(config: TrainConfig) -> T.Transform:
    """The crop augmentation of the classifier's training: flip, rotation, brightness and contrast."""
    flip = [T.RandomHorizontalFlip()] if config.hflip else []
    jitter = T.ColorJitter(brightness=config.color, contrast=config.color)
    return T.Compose([*flip, T.RandomRotation(config.rotation), jitter])


def optimiser(
    model: nn.Module, config: TrainConfig, *, iters_per_epoch: int, budget: TimeBudget
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Adam over the trainable parameters, with the warm-up and cosine decay every engine uses (``run.lr_lambda``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    warmup, total_iters = min(config.warmup_iters, iters_per_epoch), iters_per_epoch * config.epochs
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(warmup, total_iters, budget))


def resume(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    *,
    checkpoint: dict[str, Any] | None,
    folder: Path,
) -> int:
    """Load a resumed run's classifier, optimiser and schedule (the schedule's function is kept: it
    follows this run's budget); returns the epoch to start at."""
    if not checkpoint:
        return 0
    lambdas = scheduler.lr_lambdas
    load_matching(model, checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    scheduler.lr_lambdas = lambdas
    start_epoch = int(checkpoint["epoch"]) + 1
    log.info("resumed from %s: continuing at epoch %d", folder / "checkpoint.pth", start_epoch + 1)
    return start_epoch


def balanced_loss(labels: list[int], num_classes: int) -> nn.CrossEntropyLoss:
    """Cross-entropy weighted by inverse class frequency of the training crops: the rare class counts as much."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weight = torch.tensor(counts.sum() / np.maximum(counts, 1) / num_classes, dtype=torch.float32)
    return nn.CrossEntropyLoss(weight=weight)


def write_card(
    folder: Path, config: TrainConfig, run: dict[str, Any], *, best: Best, budget: TimeBudget, **fields: Any
) -> dict[str, Any]:
    """``model_card.json`` and ``MODEL_CARD.md`` of a two-stage run (``fields``: weights, device,
    epochs_done, box_fit, detector_start: how the fine-tuned detector started, ``None`` when not tuned)."""
    start = fields.pop("detector_start", None)
    fields["detector_weights"] = start or f"{config.detector}, as it ships (not fine-tuned)"
    fitted = (fields.get("box_fit") or {}).get("pairs", 0) > 0
    note = (
        f"face detector {config.detector} (x{config.upscale:g}, score >= {config.face_threshold:g}), "
        f"{start or 'not trained'} ({DETECTOR_FILE if start else 'as it ships'}); "
        + ("a box correction learned from the training labels" if fitted else "its boxes used as they are")
        + "; best_metrics are COCO AP of the whole pipeline, the crop classifier's accuracy is in metrics.jsonl "
        "and classifier.png"
    )
    if budget.seconds:
        fields["stopped_by_time"] = budget.hit
    fields.update(device=str(fields["device"]), seconds=round(budget.elapsed(), 1), note=note)
    card = registry.base_card(folder, config.to_dict(), run, engine="two-stage", best_metrics=best.metrics, **fields)
    registry.write_model_card(folder, card)
    return card


def main(config: Any, folder: Path, *, should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Train two-stage run ``folder`` (created, or resumed from its ``checkpoint.pth``); return its model card.

    ``config`` is a ``TrainConfig`` (or its dict) with ``engine="two-stage"``: ``detector``,
    ``upscale``, ``face_threshold`` and ``gamma`` configure the faces; ``imgsz`` is the
    classifier's square crop size, ``batch``/``epochs``/``lr`` (Adam, default 1e-3, cosine
    decay)/``hflip``/``rotation``/``color`` its training, ``time`` the budget. The box correction
    is fitted on the training images first; each epoch then trains the classifier on the
    ground-truth crops and validates the crops (accuracy, loss) and the whole pipeline (COCO AP
    on the validation images) through ``run.end_epoch``. Raises ``Cancelled`` when
    ``should_stop()`` turns true.
    """
    config = TrainConfig.from_dict(config) if isinstance(config, dict) else config
    budget = TimeBudget(config.time)
    folder, stop = Path(folder), should_stop or (lambda: False)
    folder.mkdir(parents=True, exist_ok=True)
    setup_logging(0)
    check_options(config)
    checkpoint = resume_checkpoint(folder, config, same=SAME_RUN)
    config.engine, config.model = "two-stage", f"{config.detector}+mobilenet_v2"
    config.imgsz = int(config.imgsz or 128)
    config.lr = config.lr if config.lr is not None else 1e-3
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    run = prepare_run(config, folder)
    dataset, class_map, train, val = run["dataset"], run["class_map"], run["train"], run["val"]
    classes = config.classes
    log.info("two-stage run %s: %d train, %d val images; classes %s", folder.name, len(train), len(val), classes)
    progress = Progress(folder, epochs=config.epochs, iters_per_epoch=1, start_epoch=0, budget=budget)
    detect, tuned = detector_stage(config, folder, run, device=device, budget=budget, progress=progress, stop=stop)

    def faces_done(n: int) -> None:
        progress.update(epoch=0, iteration=0, phase="faces", images_done=n, images=len(train) + len(val))

    # stage 1: the box correction, from detections matched to the training labels (only for a
    # detector as it ships: a fine-tuned one learned the labels' box shape, and a correction on top
    # of it lowered the validation AP); the crops to train on
    background = len(classes) if config.background else None  # the label of "not a face"
    fit = not checkpoint and not tuned
    samples, box_fit = train_faces(
        detect, dataset, train, class_map, fit=fit, background=background, progress=faces_done, stop=stop
    )
    if not any(c != background for _, c in samples):
        raise WorkbenchError(f"{config.data}: no labelled boxes in the training split")
    false_faces = sum(c == background for _, c in samples)
    if background is not None:
        log.info("background class: %d false faces of the detector in the training images", false_faces)
    box_fit = checkpoint["box_fit"] if checkpoint else box_fit or IDENTITY_FIT
    log.info("box correction from %d matched faces: %s", box_fit["pairs"], json.dumps(box_fit))
    faces, val_samples = val_faces(
        detect,
        box_fit,
        dataset,
        val,
        class_map,
        imgsz=config.imgsz,
        gamma=config.gamma,
        stop=stop,
        progress=lambda n: faces_done(len(train) + n),
    )
    gt = coco_ground_truth(dataset, val, class_map)

    def tensors(batch: list[tuple[np.ndarray, int]], augment: Callable | None) -> tuple[torch.Tensor, torch.Tensor]:
        x = [crop_tensor(gamma_correct(p) if config.gamma else p, config.imgsz, augment) for p, _ in batch]
        return torch.stack(x), torch.tensor([c for _, c in batch])

    # stage 2: the classifier on ground-truth crops
    augment = augmentation(config)
    outputs = len(classes) + (background is not None)
    # a resume loads every weight from the checkpoint: the start is the one its card names
    model, weights = build_classifier(outputs, weights="none" if checkpoint else config.weights)
    weights = checkpoint["weights"] if checkpoint else weights
    model.to(device)
    log.info("classifier weights: %s from %s", weights["kind"], weights["source"])
    iters_per_epoch = -(-len(samples) // config.batch)
    progress.iters_per_epoch = min(iters_per_epoch, config.max_iters or iters_per_epoch)
    optimizer, scheduler = optimiser(model, config, iters_per_epoch=progress.iters_per_epoch, budget=budget)
    loss_fn = balanced_loss([c for _, c in samples], outputs).to(device)
    val_x, val_y = tensors(val_samples, None) if val_samples else (None, None)
    start_epoch = resume(model, optimizer, scheduler, checkpoint=checkpoint, folder=folder)
    truncate_logs(folder, start_epoch)
    progress.start_epoch, progress.t0 = start_epoch, time.monotonic()
    iteration_log = IterationLog(folder / "losses.jsonl", None)
    ending = EpochEnd(folder, progress, budget, stop, Best.of(checkpoint), plots=save_classifier_plot)
    epochs_done = start_epoch
    try:
        for epoch in range(start_epoch, config.epochs):
            batches = (tensors(part, augment) for part in epoch_batches(samples, config, epoch=epoch))
            seen = train_one_epoch(
                model,
                batches,
                epoch=epoch,
                optimizer=optimizer,
                scheduler=scheduler,
                loss_fn=loss_fn,
                budget=budget,
                progress=progress,
                iteration_log=iteration_log,
                stop=stop,
            )
            validate = partial(validate_epoch, model, faces, gt, loss_fn=loss_fn, val=(val_x, val_y), train=seen)
            saved = {"model": model.state_dict(), "classes": classes, "config": config.to_dict(), "epoch": epoch}
            saved.update(box_fit=box_fit, background=background is not None)
            state = {**saved, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
            state["weights"] = weights
            end_epoch(ending, epoch=epoch, validate=validate, checkpoint=state, best_weights=saved)
            epochs_done = epoch + 1
            if budget.over():
                break
    finally:
        iteration_log.close()
    card = write_card(
        folder,
        config,
        run,
        weights=weights,
        device=device,
        epochs_done=epochs_done,
        best=ending.best,
        box_fit=box_fit,
        background_crops=false_faces if background is not None else None,
        budget=budget,
        detector_start=tuned.get("start"),
    )
    progress.done_with(ending.best.metrics, epochs_done=epochs_done)
    return card
