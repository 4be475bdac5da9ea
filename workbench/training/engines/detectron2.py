"""The detectron2 engine: model-zoo configs trained on our datasets, into the same registry.

Used when ``import detectron2`` works (it is optional: ``ENGINES["detectron2"].check()`` says
so clearly otherwise; detectron2 itself is imported inside the functions that use it).
``--model`` is a model-zoo config such as ``COCO-Detection/faster_rcnn_R_50_C4_1x.yaml``.

* Datasets are registered in detectron2's ``DatasetCatalog`` from the internal model
  (``register``): boxes ``XYXY_ABS`` pixels, 0-based category ids (detectron2 has no
  background label), ignore regions as ``iscrowd=1`` (detectron2 leaves them out of training).
* The loop is flat, like the torchvision engine's ``main`` and detectron2's own
  ``tools/plain_train_net.py`` (no ``DefaultTrainer``): detectron2's loader and augmentation
  (shortest-edge resize, flip), its optimizer and warm-up multi-step schedule, and the shared
  per-iteration log, progress, TensorBoard and epoch end (``run.end_epoch``: pycocotools
  evaluation, checkpoint dict) and model card.
* Weights, best first: the model-zoo COCO checkpoint, then the ImageNet backbone from the
  config, each only when already in iopath's cache or downloadable; else random.
* ``load`` wraps a trained model so that it takes and returns what torchvision's detection
  models do (``D2Detector``); ``Predictor`` and the evaluation use it unchanged.

One process only (``--gpus`` > 1 is refused); AMP on CUDA.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from workbench.errors import WorkbenchError
from workbench.training import optional, registry
from workbench.training.budget import TimeBudget
from workbench.training.config import TrainConfig
from workbench.training.engines.d2_detector import D2Detector
from workbench.training.models import load_matching
from workbench.training.predictor import Predictor, load_checkpoint
from workbench.training.run import (
    Best,
    Cancelled,
    EpochEnd,
    IterationLog,
    Progress,
    end_epoch,
    prepare_run,
    resume_checkpoint,
    truncate_logs,
)
from workbench.training.validate import evaluate
from workbench.training.weights import WEIGHT_KINDS, is_online, resolve_weights

log = logging.getLogger("workbench.training")

SAME_RUN = ("model", "imgsz", "seed", "val_fraction", "weights")  # what a resume keeps from the saved run

ZOO_CONFIGS = [
    "COCO-Detection/faster_rcnn_R_50_C4_1x.yaml",
    "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml",
    "COCO-Detection/retinanet_R_50_FPN_3x.yaml",
]
ZOO_ALIASES = {
    "faster_rcnn_R_50_C4_1x": ZOO_CONFIGS[0],
    "faster_rcnn_R_50_FPN_3x": ZOO_CONFIGS[1],
    "retinanet_R_50_FPN_3x": ZOO_CONFIGS[2],
}
DEFAULT_MODEL = ZOO_CONFIGS[0]  # the classic face-mask recipe


def zoo_name(model: str) -> str:
    """The model-zoo config path for ``model`` (a config path, or its short name)."""
    if model in ("default", ""):
        return DEFAULT_MODEL
    name = ZOO_ALIASES.get(model.removesuffix(".yaml"), model)
    return name if name.endswith(".yaml") else f"{name}.yaml"


def dataset_dicts(dataset, records, class_map) -> list[dict[str, Any]]:
    """detectron2's standard dataset dicts for ``records`` (``image_id`` = index in ``records``)."""
    from detectron2.structures import BoxMode

    dicts = []
    for i, r in enumerate(records):
        boxes, labels, ignore, _ = class_map.targets(dataset, r)
        annotations = [
            {"bbox": [float(v) for v in b], "bbox_mode": BoxMode.XYXY_ABS, "category_id": int(lab) - 1, "iscrowd": 0}
            for b, lab in zip(boxes, labels, strict=True)
        ]
        annotations += [
            {"bbox": [float(v) for v in b], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0, "iscrowd": 1}
            for b in ignore
        ]
        dicts.append(
            {
                "file_name": str(Path(dataset.root) / r.path),
                "image_id": i,
                "height": int(r.height),
                "width": int(r.width),
                "annotations": annotations,
            }
        )
    return dicts


def register(name: str, dicts: list[dict[str, Any]], classes: list[str]) -> str:
    """Register ``dicts`` as dataset ``name`` (replacing an earlier one) with its class names."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=list(classes))
    return name


def _cached_url(url: str) -> str | None:
    """A local file for a detectron2/iopath URL when it is cached, or downloadable quickly; else ``None``."""
    from detectron2.utils.file_io import PathManager
    from iopath.common.file_io import get_cache_dir

    if url.startswith("detectron2://"):
        url = "https://dl.fbaipublicfiles.com/detectron2/" + url[len("detectron2://") :]
    local = Path(get_cache_dir()) / url.split("://", 1)[-1].split("/", 1)[-1]
    if local.is_file():
        return str(local)
    if is_online("dl.fbaipublicfiles.com"):
        try:
            return PathManager.get_local_path(url)
        except Exception as e:
            log.warning("could not download %s: %s", url, e)
    return None


def make_cfg(config, *, num_classes: int, weights: str = "auto"):
    """A detectron2 ``CfgNode`` for the run; returns ``(cfg, weights_info)``."""
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

    name = zoo_name(config.model)
    cfg = get_cfg()
    try:
        cfg.merge_from_file(model_zoo.get_config_file(name))
    except RuntimeError as e:
        raise WorkbenchError(f"unknown detectron2 model-zoo config {name!r}: {e}") from e
    imagenet_url = cfg.MODEL.WEIGHTS
    info: dict[str, Any] = {"kind": "none", "source": "random initialisation", "file": None, "weights": None}
    if weights not in WEIGHT_KINDS:  # --weights PATH: a detectron2 checkpoint (.pth or .pkl), loaded by name
        info = resolve_weights(None, weights)
    elif weights in ("auto", "coco"):
        url = model_zoo.get_checkpoint_url(name)
        file = _cached_url(url)
        if file:
            info = {"kind": "coco", "source": "model zoo", "file": file, "weights": url}
        elif weights == "coco":
            raise WorkbenchError(f"{name}: COCO weights unavailable (not in iopath's cache, offline)")
    if info["kind"] == "none" and weights in ("auto", "imagenet") and imagenet_url:
        file = _cached_url(imagenet_url)
        if file:
            info = {"kind": "imagenet", "source": "model zoo", "file": file, "weights": imagenet_url}
        elif weights == "imagenet":
            raise WorkbenchError(f"{name}: ImageNet backbone unavailable (not in iopath's cache, offline)")
    cfg.MODEL.WEIGHTS = info["file"] or ""
    if info["kind"] == "none":
        # FrozenBN is an identity without pretrained statistics: activations of a random ResNet
        # then grow layer after layer (a loss in the hundreds). Group norm trains at any batch size.
        cfg.MODEL.RESNETS.NORM = "GN"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    cfg.MODEL.RETINANET.NUM_CLASSES = num_classes
    imgsz = int(config.imgsz)
    cfg.INPUT.MIN_SIZE_TRAIN = tuple(int(imgsz * s) // 32 * 32 for s in (0.6, 0.7, 0.8))
    cfg.INPUT.MAX_SIZE_TRAIN = imgsz
    cfg.INPUT.MIN_SIZE_TEST = int(imgsz * 0.75) // 32 * 32
    cfg.INPUT.MAX_SIZE_TEST = imgsz
    cfg.DATALOADER.NUM_WORKERS = int(config.workers)
    cfg.SOLVER.IMS_PER_BATCH = int(config.batch)
    cfg.MODEL.DEVICE = "cuda" if config.device in ("cuda", "auto") and torch.cuda.is_available() else "cpu"
    return cfg, info


def model_choices() -> dict[str, str]:
    return {name: "detectron2 model-zoo config" for name in ZOO_CONFIGS}


def prepare(config: TrainConfig) -> str:
    """The model-zoo config path into ``config.model``; the run is named after its file name."""
    config.model = zoo_name(config.model)
    return Path(config.model).stem


def load(folder: Path, config: dict[str, Any], card: dict[str, Any], device: torch.device) -> Predictor:
    """The predictor of detectron2 run ``folder``: its trained model wrapped as a ``D2Detector``."""
    from detectron2.config import CfgNode  # optional package: only when a detectron2 run is loaded
    from detectron2.modeling import build_model

    checkpoint = load_checkpoint(registry.weights_file(folder))
    cfg = CfgNode.load_cfg(checkpoint["d2_config"])
    cfg.MODEL.DEVICE = device.type
    cfg.MODEL.WEIGHTS = ""
    model = build_model(cfg)
    load_matching(model, checkpoint["model"])
    detector = D2Detector(model, cfg).eval()
    return Predictor(detector, classes=config["classes"], card=card, run_dir=folder, device=device)


def set_schedule(cfg: Any, config: TrainConfig, *, iters_per_epoch: int) -> None:
    """detectron2's solver for the run: base LR (``0.02 * batch / 16`` unless given), the
    iterations, steps at 67% and 89% of them, the warm-up, the seed."""
    total = iters_per_epoch * config.epochs
    cfg.SOLVER.BASE_LR = config.lr if config.lr is not None else 0.02 * config.batch / 16
    cfg.SOLVER.MAX_ITER = total
    steps = sorted({s for s in (int(total * 0.67), int(total * 0.89)) if 0 < s < total})
    while steps and total <= len(steps) + 1:  # fvcore wants more updates than schedule values
        steps.pop()
    cfg.SOLVER.STEPS = tuple(steps)
    cfg.SOLVER.WARMUP_ITERS = min(config.warmup_iters, iters_per_epoch)
    cfg.SEED = config.seed


def train_step(model: nn.Module, data: list[dict], *, optimizer: Any, scheduler: Any, scaler: Any, device: Any):
    """One optimisation step on a detectron2 batch; ``(loss, its parts)`` as floats. Raises
    ``FloatingPointError`` on a non-finite loss (the step is not applied)."""
    with torch.autocast(device_type=device.type, enabled=scaler.is_enabled()):
        loss_dict = model(data)
        loss = sum(loss_dict.values())
    value = loss.item()
    if not math.isfinite(value):
        raise FloatingPointError(f"loss is {value}")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return value, {k: v.item() for k, v in loss_dict.items()}


def train_one_epoch(
    model: nn.Module,
    data: Iterator[list[dict]],
    *,
    epoch: int,
    iters_per_epoch: int,
    storage: Any,
    optimizer: Any,
    scheduler: Any,
    scaler: Any,
    device: torch.device,
    budget: TimeBudget,
    progress: Progress,
    iteration_log: IterationLog,
    stop: Callable[[], bool],
) -> None:
    """One epoch of ``iters_per_epoch`` training steps on ``data``, logged per iteration; ends early
    when the time budget is spent, raises ``Cancelled`` when ``stop()`` turns true."""
    model.train()
    for it in range(iters_per_epoch):
        if stop():
            raise Cancelled(f"cancelled at epoch {epoch + 1}, iteration {it}")
        if budget.over():
            log.info("time budget: training stops at epoch %d, iteration %d", epoch + 1, it)
            return
        storage.iter = index = epoch * iters_per_epoch + it
        try:
            value, parts = train_step(
                model, next(data), optimizer=optimizer, scheduler=scheduler, scaler=scaler, device=device
            )
        except FloatingPointError as e:
            raise WorkbenchError(f"{e} at epoch {epoch + 1}, iteration {it}") from e
        lr = optimizer.param_groups[0]["lr"]
        iteration_log(epoch=epoch, step=index, lr=lr, loss=value, parts=parts)
        progress.step(epoch=epoch, iteration=it, loss=value, lr=lr)


def write_card(
    folder: Path, config: TrainConfig, run: dict[str, Any], *, best: Best, budget: TimeBudget, **fields: Any
) -> dict[str, Any]:
    """``model_card.json`` and ``MODEL_CARD.md`` of a detectron2 run (``fields``: weights, device, epochs_done)."""
    if budget.seconds:
        fields["stopped_by_time"] = budget.hit
    fields.update(device=str(fields["device"]), seconds=round(budget.elapsed(), 1))
    card = registry.base_card(folder, config.to_dict(), run, engine="detectron2", best_metrics=best.metrics, **fields)
    registry.write_model_card(folder, card)
    return card


def main(
    config: TrainConfig | dict[str, Any], folder: Path, *, should_stop: Callable[[], bool] | None = None
) -> dict[str, Any]:
    """Train run ``folder`` with detectron2 (created, or resumed from ``checkpoint.pth``); return the card."""
    optional.require("detectron2", user="the detectron2 engine")
    # detectron2 is an optional package: imported once it is known to be there
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import DatasetMapper, build_detection_train_loader
    from detectron2.modeling import build_model
    from detectron2.solver import build_lr_scheduler, build_optimizer
    from detectron2.utils.events import EventStorage

    cfg_run = TrainConfig.from_dict(config) if isinstance(config, dict) else config
    budget = TimeBudget(cfg_run.time)  # stops training in time; the LR keeps detectron2's step schedule
    if int(cfg_run.gpus or 1) > 1:
        raise WorkbenchError("the detectron2 engine here runs one process; use --gpus 1 (or the torchvision engine)")
    folder, stop = Path(folder), should_stop or (lambda: False)
    cfg_run.model = zoo_name(cfg_run.model)
    cfg_run.imgsz = int(cfg_run.imgsz or 800)
    checkpoint = resume_checkpoint(folder, cfg_run, same=SAME_RUN)
    torch.manual_seed(cfg_run.seed)
    run = prepare_run(cfg_run, folder)
    dataset, class_map, val_records = run["dataset"], run["class_map"], run["val"]

    cfg, weights = make_cfg(cfg_run, num_classes=len(cfg_run.classes), weights=cfg_run.weights)
    weights = checkpoint["weights"] if checkpoint else weights
    log.info("detectron2 %s; weights: %s from %s", cfg_run.model, weights["kind"], weights["source"])
    dicts = dataset_dicts(dataset, run["train"], class_map)
    cfg.DATASETS.TRAIN = (register(f"workbench_{folder.name}_train", dicts, cfg_run.classes),)
    cfg.DATASETS.TEST = ()
    iters_per_epoch = max(1, math.ceil(len(run["train"]) / cfg_run.batch))
    iters_per_epoch = min(iters_per_epoch, cfg_run.max_iters or iters_per_epoch)
    set_schedule(cfg, cfg_run, iters_per_epoch=iters_per_epoch)
    cfg.freeze()
    device = torch.device(cfg.MODEL.DEVICE)
    (folder / "d2_config.yaml").write_text(cfg.dump(), encoding="utf-8")

    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    start_epoch = int(checkpoint["epoch"]) + 1 if checkpoint else 0
    if checkpoint:
        load_matching(model, checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        log.info("resumed from %s: continuing at epoch %d", folder / "checkpoint.pth", start_epoch + 1)
    elif cfg.MODEL.WEIGHTS:
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)  # converts Caffe2 names, skips the COCO classifier
    truncate_logs(folder, start_epoch)
    loader = build_detection_train_loader(cfg, mapper=DatasetMapper(cfg, is_train=True))
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and cfg_run.amp)
    writer = SummaryWriter(str(folder / "tensorboard"))
    iteration_log = IterationLog(folder / "losses.jsonl", writer)
    progress = Progress(
        folder, epochs=cfg_run.epochs, iters_per_epoch=iters_per_epoch, start_epoch=start_epoch, budget=budget
    )
    ending = EpochEnd(folder, progress, budget, stop, Best.of(checkpoint), writer)
    detector = D2Detector(model, cfg)

    def validate(records: list) -> dict[str, float]:
        return evaluate(detector, dataset, records, class_map, device=device, batch=cfg_run.batch, should_stop=stop)

    if start_epoch < cfg_run.epochs:
        budget.probe(validate, val_records)
    data_iter = iter(loader)
    epochs_done = start_epoch
    try:
        with EventStorage(start_epoch * iters_per_epoch) as storage:
            for epoch in range(start_epoch, cfg_run.epochs):
                train_one_epoch(
                    model,
                    data_iter,
                    epoch=epoch,
                    iters_per_epoch=iters_per_epoch,
                    storage=storage,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    scaler=scaler,
                    device=device,
                    budget=budget,
                    progress=progress,
                    iteration_log=iteration_log,
                    stop=stop,
                )
                saved = {"model": model.state_dict(), "config": cfg_run.to_dict(), "epoch": epoch}
                saved.update(classes=cfg_run.classes, d2_config=cfg.dump())
                state = {**saved, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
                state["weights"] = weights
                end_epoch(
                    ending, epoch=epoch, validate=lambda: validate(val_records), checkpoint=state, best_weights=saved
                )
                epochs_done = epoch + 1
                if budget.over():
                    break
    finally:
        writer.close()
        iteration_log.close()

    card = write_card(
        folder, cfg_run, run, weights=weights, device=device, epochs_done=epochs_done, best=ending.best, budget=budget
    )
    progress.done_with(ending.best.metrics, epochs_done=cfg_run.epochs)
    return card
