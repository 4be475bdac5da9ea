"""The detectron2 engine: model-zoo configs trained on our datasets, into the same registry.

Used when ``import detectron2`` works (it is optional: ``check_available`` says so
clearly otherwise). ``--model`` is a model-zoo config such as
``COCO-Detection/faster_rcnn_R_50_C4_1x.yaml``.

* Datasets are registered in detectron2's ``DatasetCatalog`` from the internal model
  (``register``): boxes ``XYXY_ABS`` pixels, 0-based category ids (detectron2 has no
  background label), ignore regions as ``iscrowd=1`` (detectron2 leaves them out of training).
* The loop is flat, like ``loop.main`` and detectron2's own ``tools/plain_train_net.py``
  (no ``DefaultTrainer``): detectron2's loader and augmentation (shortest-edge resize, flip),
  its optimizer and warm-up multi-step schedule, and our per-iteration log, progress,
  TensorBoard, per-epoch pycocotools evaluation, checkpoint dict and model card.
* Weights, best first: the model-zoo COCO checkpoint, then the ImageNet backbone from the
  config, each only when already in iopath's cache or downloadable; else random.
* ``load_model`` wraps a trained model so that it takes and returns what torchvision's
  detection models do; ``predict.Predictor`` and the evaluation use it unchanged.

One process only (``--gpus`` > 1 is refused); AMP on CUDA.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.errors import WorkbenchError
from workbench.training import registry

log = logging.getLogger("workbench.training")

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


def is_available() -> bool:
    try:
        import detectron2  # noqa: F401
    except ImportError:
        return False
    return True


def check_available() -> None:
    """Raise a ``WorkbenchError`` saying how to get detectron2 when it cannot be imported."""
    try:
        import detectron2  # noqa: F401
    except ImportError as e:
        raise WorkbenchError(
            "the detectron2 engine needs detectron2, which is not installed: build it from source "
            "(pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'), "
            "or use the torchvision engine"
        ) from e


def zoo_name(model: str) -> str:
    """The model-zoo config path for ``model`` (a config path, or its short name)."""
    if model in ("default", ""):
        return DEFAULT_MODEL
    name = ZOO_ALIASES.get(model.removesuffix(".yaml"), model)
    return name if name.endswith(".yaml") else f"{name}.yaml"


# --------------------------------------------------------------------------- datasets


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


# --------------------------------------------------------------------------- config and weights


def _cached_url(url: str) -> str | None:
    """A local file for a detectron2/iopath URL when it is cached, or downloadable quickly; else ``None``."""
    from detectron2.utils.file_io import PathManager
    from iopath.common.file_io import get_cache_dir

    from workbench.training.models import is_online

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
    if weights in ("auto", "coco"):
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


# --------------------------------------------------------------------------- inference adapter


class D2Detector(nn.Module):
    """A detectron2 model behind torchvision's detection interface (eval only).

    ``forward(images)`` takes ``(3, H, W)`` float RGB tensors in ``[0, 1]`` and returns
    ``[{"boxes": (N, 4) x1 y1 x2 y2 pixels of the input, "scores": (N,), "labels": (N,) 1-based}]``.
    ``score_thresh``, ``nms_thresh`` and ``detections_per_img`` set the model's test-time settings.
    """

    def __init__(self, model: nn.Module, cfg) -> None:
        super().__init__()
        self.d2 = model
        self.min_size = int(cfg.INPUT.MIN_SIZE_TEST)
        self.max_size = int(cfg.INPUT.MAX_SIZE_TEST)
        self.bgr = cfg.INPUT.FORMAT == "BGR"

    def _heads(self) -> tuple[Any, str, str, str]:
        if hasattr(self.d2, "roi_heads"):
            return self.d2.roi_heads.box_predictor, "test_score_thresh", "test_nms_thresh", "test_topk_per_image"
        return self.d2, "test_score_thresh", "test_nms_thresh", "max_detections_per_image"

    @property
    def score_thresh(self) -> float:
        holder, attr, _, _ = self._heads()
        return getattr(holder, attr)

    @score_thresh.setter
    def score_thresh(self, value: float) -> None:
        holder, attr, _, _ = self._heads()
        setattr(holder, attr, value)

    @property
    def nms_thresh(self) -> float:
        holder, _, attr, _ = self._heads()
        return getattr(holder, attr)

    @nms_thresh.setter
    def nms_thresh(self, value: float) -> None:
        holder, _, attr, _ = self._heads()
        setattr(holder, attr, value)

    @property
    def detections_per_img(self) -> int:
        holder, _, _, attr = self._heads()
        return getattr(holder, attr)

    @detections_per_img.setter
    def detections_per_img(self, value: int) -> None:
        holder, _, _, attr = self._heads()
        setattr(holder, attr, value)

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        inputs = []
        for image in images:
            h, w = image.shape[-2:]
            scale = min(self.min_size / min(h, w), self.max_size / max(h, w))
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            x = image[[2, 1, 0]] if self.bgr else image
            x = nn.functional.interpolate(x[None] * 255.0, size=size, mode="bilinear", align_corners=False)[0]
            inputs.append({"image": x, "height": h, "width": w})
        outputs = self.d2(inputs)
        results = []
        for out in outputs:
            inst = out["instances"].to("cpu")
            results.append(
                {"boxes": inst.pred_boxes.tensor, "scores": inst.scores, "labels": inst.pred_classes.long() + 1}
            )
        return results


def load_model(folder: Path, config: dict[str, Any], device: torch.device) -> nn.Module:
    """The trained detectron2 model of run ``folder`` wrapped as a ``D2Detector`` (for ``load_predictor``)."""
    check_available()
    from detectron2.config import CfgNode
    from detectron2.modeling import build_model

    from workbench.training.models import load_matching
    from workbench.training.predictor import load_checkpoint

    file = folder / "model_best.pth" if (folder / "model_best.pth").is_file() else folder / "checkpoint.pth"
    checkpoint = load_checkpoint(file)
    cfg = CfgNode.load_cfg(checkpoint["d2_config"])
    cfg.MODEL.DEVICE = device.type
    cfg.MODEL.WEIGHTS = ""
    model = build_model(cfg)
    load_matching(model, checkpoint["model"])
    return D2Detector(model, cfg).eval()


# --------------------------------------------------------------------------- training


def main(config: dict[str, Any], folder: Path, *, should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Train run ``folder`` with detectron2 (created, or resumed from ``checkpoint.pth``); return the card."""
    check_available()
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import DatasetMapper, build_detection_train_loader
    from detectron2.modeling import build_model
    from detectron2.solver import build_lr_scheduler, build_optimizer
    from detectron2.utils.events import EventStorage
    from torch.utils.tensorboard import SummaryWriter

    from workbench.training.engines.torchvision import (
        Cancelled,
        IterationLog,
        Progress,
        TimeBudget,
        TrainConfig,
        prepare_run,
    )
    from workbench.training.models import load_matching
    from workbench.training.predictor import load_checkpoint
    from workbench.training.validate import evaluate

    cfg_run = TrainConfig.from_dict(config) if isinstance(config, dict) else config
    budget = TimeBudget(cfg_run.time)  # stops training in time; the LR keeps detectron2's step schedule
    if int(cfg_run.gpus or 1) > 1:
        raise WorkbenchError("the detectron2 engine here runs one process; use --gpus 1 (or the torchvision engine)")
    folder = Path(folder)
    cfg_run.model = zoo_name(cfg_run.model)
    cfg_run.imgsz = int(cfg_run.imgsz or 800)
    checkpoint_file = folder / "checkpoint.pth"
    checkpoint = load_checkpoint(checkpoint_file) if checkpoint_file.is_file() else None
    if checkpoint:
        saved = checkpoint["config"]
        cfg_run.classes = list(checkpoint["classes"])
        for name in ("model", "imgsz", "seed", "val_fraction", "weights"):
            setattr(cfg_run, name, saved[name])
    torch.manual_seed(cfg_run.seed)
    run = prepare_run(cfg_run, folder)
    dataset, class_map, train_records, val_records = run["dataset"], run["class_map"], run["train"], run["val"]
    registry.write_json(folder / "config.json", {**cfg_run.to_dict(), "run": folder.name})
    registry.write_json(folder / "split.json", {"how": run["how"], "train": [r.path for r in train_records],
                                                "val": [r.path for r in val_records]})  # fmt: skip

    cfg, weights = make_cfg(cfg_run, num_classes=len(cfg_run.classes), weights=cfg_run.weights)
    if checkpoint:
        weights = checkpoint["weights"]
    log.info("detectron2 %s; weights: %s from %s", cfg_run.model, weights["kind"], weights["source"])
    train_name = register(f"workbench_{folder.name}_train", dataset_dicts(dataset, train_records, class_map),
                          cfg_run.classes)  # fmt: skip
    cfg.DATASETS.TRAIN = (train_name,)
    cfg.DATASETS.TEST = ()
    iters_per_epoch = max(1, math.ceil(len(train_records) / cfg_run.batch))
    if cfg_run.max_iters:
        iters_per_epoch = min(iters_per_epoch, cfg_run.max_iters)
    total = iters_per_epoch * cfg_run.epochs
    cfg.SOLVER.BASE_LR = cfg_run.lr if cfg_run.lr is not None else 0.02 * cfg_run.batch / 16
    cfg.SOLVER.MAX_ITER = total
    steps = sorted({s for s in (int(total * 0.67), int(total * 0.89)) if 0 < s < total})
    while steps and total <= len(steps) + 1:  # fvcore wants more updates than schedule values
        steps.pop()
    cfg.SOLVER.STEPS = tuple(steps)
    cfg.SOLVER.WARMUP_ITERS = min(cfg_run.warmup_iters, iters_per_epoch)
    cfg.SEED = cfg_run.seed
    cfg.freeze()
    device = torch.device(cfg.MODEL.DEVICE)
    (folder / "d2_config.yaml").write_text(cfg.dump(), encoding="utf-8")

    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    start_epoch, best_ap, best_metrics = 0, -1.0, {}
    if checkpoint:
        load_matching(model, checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        start_epoch = int(checkpoint["epoch"]) + 1
        best_ap, best_metrics = float(checkpoint.get("best_ap", -1.0)), dict(checkpoint.get("best_metrics") or {})
        log.info("resumed from %s: continuing at epoch %d", checkpoint_file, start_epoch + 1)
    elif cfg.MODEL.WEIGHTS:
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)  # converts Caffe2 names, skips the COCO classifier
    from workbench.training.engines.torchvision import _truncate_logs

    _truncate_logs(folder, start_epoch)
    loader = build_detection_train_loader(cfg, mapper=DatasetMapper(cfg, is_train=True))
    use_amp = device.type == "cuda" and cfg_run.amp
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    writer = SummaryWriter(str(folder / "tensorboard"))
    iteration_log = IterationLog(folder / "losses.jsonl", writer)
    progress = Progress(
        folder, epochs=cfg_run.epochs, iters_per_epoch=iters_per_epoch, start_epoch=start_epoch, budget=budget
    )
    stop = should_stop or (lambda: False)
    epochs_done = start_epoch
    detector = D2Detector(model, cfg)
    if start_epoch < cfg_run.epochs:
        budget.probe(
            lambda recs: evaluate(detector, dataset, recs, class_map, device=device, batch=cfg_run.batch), val_records
        )
    data_iter = iter(loader)
    try:
        with EventStorage(start_epoch * iters_per_epoch) as storage:
            for epoch in range(start_epoch, cfg_run.epochs):
                model.train()
                for it in range(iters_per_epoch):
                    if stop():
                        raise Cancelled(f"cancelled at epoch {epoch + 1}, iteration {it}")
                    if budget.over():
                        log.info("time budget: training stops at epoch %d, iteration %d", epoch + 1, it)
                        break
                    step = epoch * iters_per_epoch + it
                    storage.iter = step
                    data = next(data_iter)
                    with torch.autocast(device_type=device.type, enabled=use_amp):
                        loss_dict = model(data)
                        loss = sum(loss_dict.values())
                    value = loss.item()
                    if not math.isfinite(value):
                        raise WorkbenchError(f"loss is {value} at epoch {epoch + 1}, iteration {it}")
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    progress.done += 1
                    lr = optimizer.param_groups[0]["lr"]
                    iteration_log(epoch=epoch, step=step, lr=lr, loss=value,
                                  parts={k: v.item() for k, v in loss_dict.items()})  # fmt: skip
                    progress.update(epoch=epoch, iteration=it + 1, phase="train", loss=round(value, 5), lr=lr)
                    if it % 20 == 0:
                        log.info("epoch %d/%d iter %d/%d loss %.4f lr %.5f", epoch + 1, cfg_run.epochs, it + 1,
                                 iters_per_epoch, value, lr)  # fmt: skip

                progress.update(epoch=epoch, iteration=iters_per_epoch, phase="val", force=True)
                t = time.monotonic()
                metrics = evaluate(detector, dataset, val_records, class_map, device=device, batch=cfg_run.batch,
                                   should_stop=stop)  # fmt: skip
                progress.eval_seconds += time.monotonic() - t
                budget.validated(time.monotonic() - t)
                if stop():
                    raise Cancelled(f"cancelled in the validation of epoch {epoch + 1}")
                metrics = {"epoch": epoch + 1, **{k: round(v, 5) for k, v in metrics.items()}}
                with open(folder / "metrics.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps(metrics) + "\n")
                for k, v in metrics.items():
                    if k != "epoch":
                        writer.add_scalar(f"val/{k}", v, epoch + 1)
                log.info("epoch %d/%d val AP %.4f AP50 %.4f", epoch + 1, cfg_run.epochs, metrics["AP"], metrics["AP50"])
                if metrics["AP"] > best_ap:
                    best_ap, best_metrics = metrics["AP"], metrics
                    _save({"model": model.state_dict(), "config": cfg_run.to_dict(), "epoch": epoch,
                           "classes": cfg_run.classes, "d2_config": cfg.dump()}, folder / "model_best.pth")  # fmt: skip
                _save(
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "config": cfg_run.to_dict(),
                        "d2_config": cfg.dump(),
                        "epoch": epoch,
                        "classes": cfg_run.classes,
                        "weights": weights,
                        "best_ap": best_ap,
                        "best_metrics": best_metrics,
                    },
                    checkpoint_file,
                )
                from workbench.training.engines.torchvision import save_plots

                save_plots(folder)
                epochs_done = epoch + 1
                if budget.over():
                    break
    finally:
        writer.close()
        iteration_log.close()

    card = registry.base_card(
        folder, cfg_run.to_dict(), run, engine="detectron2", weights=weights, device=str(device),
        epochs_done=epochs_done, best_metrics=best_metrics, seconds=round(budget.elapsed(), 1),
        **({"stopped_by_time": budget.hit} if budget.seconds else {}),
    )  # fmt: skip
    registry.write_model_card(folder, card)
    progress.update(epoch=cfg_run.epochs - 1, iteration=iters_per_epoch, phase="done", force=True,
                    **{k: v for k, v in best_metrics.items() if k != "epoch"})  # fmt: skip
    return card


def _save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
