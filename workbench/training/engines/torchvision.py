"""The torchvision training loop: a flat ``main(config, run_folder)`` after torchvision's
``references/detection/train.py``.

One call trains one run folder (see ``registry``) from its ``config.json`` and, when the
folder holds ``checkpoint.pth``, continues from the epoch after the saved one. Each epoch
ends with COCO AP on the validation split and a checkpoint dict (model, optimizer,
scheduler, scaler, config, epoch, classes, best AP).

Runs single-process, or as one rank of ``torchrun`` (DDP; gloo on the CPU, NCCL on
CUDA): the environment variables ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` decide. Only rank 0
evaluates and writes files. Mixed precision (``torch.autocast`` + ``GradScaler``) on CUDA.

``should_stop`` is polled every iteration (cancel); when it says stop, ``Cancelled`` is
raised after the ranks agree, leaving the last epoch's checkpoint to resume from.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from workbench.errors import WorkbenchError
from workbench.fileio import atomic_write
from workbench.training import registry

log = logging.getLogger("workbench.training")


class Cancelled(Exception):
    """The run was asked to stop (``workbench cancel``)."""


@dataclass
class TrainConfig:
    """Everything that defines a run; frozen into ``config.json`` (with ``classes``) at the start.

    ``imgsz`` is the longest image side in pixels (``None``: the model's default). ``batch`` is
    per process. ``lr`` ``None`` means ``0.02 * total batch / 8`` (SGD, momentum 0.9).
    ``max_iters`` caps the iterations per epoch and ``max_val_images`` the validation images
    (tiny runs, tests). ``gpus`` > 1 runs that many DDP processes through torchrun.
    ``freeze_backbone`` leaves the backbone network untrained; ``recipe`` names the preset
    (``workbench train --recipe``) that filled in the rest. ``time`` caps the run's wall time in
    minutes, validation included (``TimeBudget``); ``epochs`` stays the upper bound.
    """

    data: str
    format: str | None = None
    engine: str = "torchvision"
    model: str = "default"
    weights: str = "auto"
    epochs: int = 12
    imgsz: int | None = None
    batch: int = 4
    device: str = "auto"
    gpus: int = 1
    workers: int = 2
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 200
    clip_grad: float = 0.0  # max gradient norm; 0 = off (on the CPU clipping costs ~2x an SGD step)
    amp: bool = True
    val_fraction: float = 0.2
    seed: int = 0
    max_iters: int | None = None
    max_val_images: int | None = None
    hflip: bool = True
    scale: tuple[float, float] = (0.75, 1.25)
    color: float = 0.2
    rotation: float = 0.0
    freeze_backbone: bool = False  # train the FPN and heads only (``models.freeze_backbone``)
    time: float | None = None  # minutes for the whole run (training + validation); None: epochs decide
    # engine "two-stage" (the face-then-classify recipe, ``two_stage.main``) only:
    detector: str = "retinaface"  # the face detector that ships its weights: retinaface or mtcnn
    upscale: float = 2.0  # the image is enlarged this much before face detection (small faces)
    face_threshold: float = 0.3  # the face detector's own score cut
    gamma: bool = False  # brighten dark face crops before classification
    recipe: str | None = None  # the preset it came from (``workbench.training.recipes``), for the record
    classes: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise WorkbenchError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        config = cls(**data)
        config.scale = tuple(config.scale)  # JSON gives a list
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_model(device: str = "auto") -> str:
    """The recommended model: ResNet-50 Faster R-CNN on CUDA; on the CPU MobileNetV3 Faster
    R-CNN when its COCO weights are at hand, else the MobileNetV2 one (ImageNet weights offline)."""
    from workbench.training.models import MODELS, find_weights

    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return "fasterrcnn_resnet50_fpn_v2"
    if find_weights(MODELS["fasterrcnn_mobilenet"].coco):
        return "fasterrcnn_mobilenet"
    return "fasterrcnn_mobilenet_v2"


# --------------------------------------------------------------------------- distributed


def init_distributed(device: torch.device) -> tuple[int, int]:
    """``(rank, world_size)``; joins the torchrun process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def _agree(values: tuple[float, ...], world: int) -> tuple[float, ...]:
    """The largest of each value over the ranks (one tiny all-reduce per iteration): a flag true
    on any rank becomes true on all of them."""
    if world <= 1:
        return values
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(t.tolist())


# --------------------------------------------------------------------------- small helpers


def setup_logging(folder: Path | None, rank: int) -> None:
    """Log to stderr (a job's stderr is its ``train.log``); other ranks log warnings only."""
    root = logging.getLogger("workbench")
    if not any(getattr(h, "_workbench", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"%(asctime)s [rank {rank}] %(levelname)s %(message)s", "%H:%M:%S"))
        handler._workbench = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)


WARMUP_SHARE = 0.05  # under a time budget, the warm-up ends by this share of the training time at the latest


def lr_lambda(warmup: int, total: int, budget: TimeBudget | None = None) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` iterations, then cosine decay to 5% at ``total``; under a
    time ``budget``, the warm-up ends by ``WARMUP_SHARE`` of it and the decay at its end, when
    those come first (a slow model may train fewer iterations in the budget than ``warmup``)."""
    timed = budget is not None and bool(budget.seconds)

    def f(it: int) -> float:
        warm = it / max(1, warmup)
        if timed:
            warm = max(warm, budget.fraction() / WARMUP_SHARE)
        if warm < 1:
            return 0.001 + 0.999 * warm
        progress = max(0.0, min(1.0, (it - warmup) / max(1, total - warmup)))
        if timed:
            progress = max(progress, (budget.fraction() - WARMUP_SHARE) / (1 - WARMUP_SHARE))
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    return f


class TimeBudget:
    """``--time MINUTES``: the run ends, validated and saved, within that wall time (after
    Ultralytics' ``time``).

    Training stops early enough to leave room for the validation that follows: 1.2x as long as
    the last one took; before the first, 1.3x what ``probe`` timed (else 5% of the budget). The
    epoch it stops in is cut short and validated as usual. The learning rate decays over the
    budget (``lr_lambda``), so the run has cooled down when the clock stops it. Counted from the
    start of this process: a resumed run gets the budget again. ``minutes`` ``None`` or 0: no
    limit.
    """

    REPROBE_AT = (0.25, 0.5, 0.75, 0.9)  # shares of the training time at which to probe again

    def __init__(self, minutes: float | None) -> None:
        self.seconds = float(minutes) * 60 if minutes else None
        self.t0 = time.monotonic()
        self.eval_seconds: float | None = None
        self.hit = False
        self.agreed: float | None = None  # under DDP: the ranks' common fraction, so that they share one LR
        self._probe: tuple[Callable[[list], object], list, int] | None = None  # set while probing
        self._done = 0.0  # the training-time share of the last probe

    @property
    def probed(self) -> bool:
        """``eval_seconds`` is a probe's estimate, not a measured validation."""
        return self._probe is not None

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def reserve(self) -> float:
        """Seconds kept back for the validation and checkpoint after the last training step."""
        if self.seconds is None:
            return 0.0
        if self.eval_seconds is None:
            return 0.05 * self.seconds
        if self.probed:  # an estimate (noisy on a busy machine): at least half the budget still trains
            return min(1.3 * self.eval_seconds + 5, 0.5 * self.seconds)
        return 1.2 * self.eval_seconds + 5

    def fraction(self, *, own: bool = False) -> float:
        """How much of the training time is used, 0..1 (the ranks' ``agreed`` one unless ``own``)."""
        if self.seconds is None:
            return 0.0
        if self.agreed is not None and not own:
            return self.agreed
        return min(1.0, self.elapsed() / max(1.0, self.seconds - self.reserve()))

    def over(self) -> bool:
        """True once training must stop to finish in time (remembered in ``hit``). Until a
        validation is measured, the probe is repeated at the ``REPROBE_AT`` shares of the time."""
        if self.probed and any(self._done < at <= self.fraction(own=True) for at in self.REPROBE_AT):
            self._measure(*self._probe, warm_up=False)
        if self.seconds is not None and self.elapsed() >= self.seconds - self.reserve():
            self.hit = True
        return self.hit

    def left(self) -> float | None:
        return None if self.seconds is None else max(0.0, self.seconds - self.elapsed())

    def validated(self, seconds: float) -> None:
        """A validation took ``seconds``: keep as much (x1.2) back for the next one."""
        self.eval_seconds, self._probe = seconds, None

    def probe(self, validate: Callable[[list], object], records: list, *, images: int = 2) -> None:
        """Time ``validate`` on a few of the validation ``records`` (after one warm-up image) and
        expect the first whole validation to take as long per image, so that a slow model's first
        validation fits in the budget too. A model's validation cost changes as it trains (the
        R50-C4 stand-in: 1.5 s per image fresh, 4.9 s after 79 iterations, when the whole
        validation took 4.9 s per image), so ``over`` probes again as the time passes. Costs
        ``images + 1`` predictions, then ``images`` each later probe; nothing without a budget or
        once a validation ran."""
        if self.seconds is None or self.eval_seconds is not None or not records:
            return
        self._probe = (validate, records, images)
        self._measure(validate, records, images, warm_up=True)

    def _measure(self, validate: Callable[[list], object], records: list, images: int, *, warm_up: bool) -> None:
        if warm_up:
            validate(records[:1])
        timed = records[1 : 1 + images] or records[:1]
        t = time.monotonic()
        validate(timed)
        self.eval_seconds = (time.monotonic() - t) / len(timed) * len(records)
        self._done = self.fraction(own=True)
        log.info(
            "time budget: validation expected to take %.0f s (%d images); training stops %.0f s before the end",
            self.eval_seconds, len(records), self.reserve(),
        )  # fmt: skip


class Progress:
    """Writes ``progress.json`` (at most once a second) with the iteration, epoch and ETA."""

    def __init__(
        self, folder: Path, *, epochs: int, iters_per_epoch: int, start_epoch: int, budget: TimeBudget | None = None
    ) -> None:
        self.path = folder / "progress.json"
        self.budget = budget
        self.epochs = epochs
        self.iters_per_epoch = iters_per_epoch
        self.start_epoch = start_epoch
        self.t0 = time.monotonic()
        self.done = 0  # iterations done in this process (for the ETA)
        self.last_write = 0.0
        self.eval_seconds = 0.0

    def update(self, *, epoch: int, iteration: int, phase: str, force: bool = False, **extra: Any) -> None:
        now = time.monotonic()
        if not force and now - self.last_write < 1.0:
            return
        self.last_write = now
        left = (self.epochs - epoch - 1) * self.iters_per_epoch + (self.iters_per_epoch - iteration)
        per_iter = (now - self.t0 - self.eval_seconds) / self.done if self.done else None
        eta = None
        if per_iter is not None:
            eta = left * per_iter + self.eval_seconds / max(1, epoch - self.start_epoch + 1) * (self.epochs - epoch)
        if self.budget is not None and self.budget.seconds is not None:
            eta = min(eta, self.budget.left()) if eta is not None else self.budget.left()
            extra.setdefault("time_left_seconds", self.budget.left())
        registry.write_json(
            self.path,
            {
                "phase": phase,
                "epoch": epoch + 1,
                "epochs": self.epochs,
                "iteration": iteration,
                "iters_per_epoch": self.iters_per_epoch,
                "global_iteration": epoch * self.iters_per_epoch + iteration,
                "total_iterations": self.epochs * self.iters_per_epoch,
                "seconds_per_iteration": per_iter,
                "eta_seconds": eta,
                "updated": time.time(),
                **extra,
            },
        )


def save_plots(folder: Path) -> None:
    """``loss.png`` (loss per iteration, smoothed) and ``map.png`` (val AP per epoch)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are a nicety
        return
    losses = registry.read_jsonl(folder / "losses.jsonl")
    if losses:
        y = [row["loss"] for row in losses]
        k = max(1, len(y) // 50)
        smooth = [sum(y[max(0, i - k) : i + 1]) / len(y[max(0, i - k) : i + 1]) for i in range(len(y))]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(y, alpha=0.3, label="loss")
        ax.plot(smooth, label=f"mean of {k + 1}")
        ax.set_xlabel("iteration")
        ax.set_ylabel("training loss")
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "loss.png", dpi=80)
        plt.close(fig)
    metrics = registry.read_jsonl(folder / "metrics.jsonl")
    if metrics:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for key in ("AP", "AP50"):
            ax.plot([m["epoch"] for m in metrics], [m[key] for m in metrics], marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation")
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "map.png", dpi=80)
        plt.close(fig)


# --------------------------------------------------------------------------- the loop


def train_step(
    model: torch.nn.Module,
    images: list[torch.Tensor],
    targets: list[dict[str, Any]],
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    scaler: torch.amp.GradScaler,
    params: list[torch.Tensor],
    clip_grad: float,
    use_amp: bool,
    device: torch.device,
) -> tuple[float, dict[str, float]]:
    """One optimisation step on a batch; returns ``(loss, its parts)`` as floats.

    Images ``(3, H, W)`` float in ``[0, 1]`` and targets as torchvision detection models take
    them. Raises ``FloatingPointError`` on a non-finite loss (the step is not applied).
    """
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
    with torch.autocast(device_type=device.type, enabled=use_amp):
        loss_dict = model(images, targets)
        loss = sum(loss_dict.values())
    value = loss.item()
    if not math.isfinite(value):
        raise FloatingPointError(f"loss is {value}: { {k: v.item() for k, v in loss_dict.items()} }")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if clip_grad:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, clip_grad)
    scaler.step(optimizer)
    scaler.update()
    if scheduler is not None:
        scheduler.step()
    return value, {k: v.item() for k, v in loss_dict.items()}


class IterationLog:
    """Loss per iteration into ``losses.jsonl`` (one JSON line each) and TensorBoard."""

    def __init__(self, path: Path, writer: Any | None) -> None:
        self.file = open(path, "a", encoding="utf-8")
        self.writer = writer

    def __call__(self, *, epoch: int, step: int, lr: float, loss: float, parts: dict[str, float]) -> None:
        row = {"epoch": epoch + 1, "iteration": step, "lr": lr, "loss": round(loss, 5)}
        row.update({k: round(v, 5) for k, v in parts.items()})
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/lr", lr, step)
            for k, v in parts.items():
                self.writer.add_scalar(f"train/{k}", v, step)

    def close(self) -> None:
        self.file.close()


def prepare_run(config: TrainConfig, folder: Path) -> dict[str, Any]:
    """Load the dataset, freeze the classes and the split; write ``config.json`` and ``split.json``.

    On resume the saved class list and split are reused, so that the run stays the same
    run even when the dataset was relabelled since.
    """
    from workbench.annotations import content_hash
    from workbench.datasets import versions
    from workbench.formats import load_dataset
    from workbench.splits import ClassMap, freeze_classes, split_records

    dataset = load_dataset(config.data, config.format, strict=False)
    if dataset.skipped:
        log.warning("%s: %d bad annotation file(s) skipped", config.data, len(dataset.skipped))
    if not config.classes:
        config.classes = freeze_classes(dataset)
    split_file = folder / "split.json"
    saved = registry.read_json(split_file)
    if saved:
        by_path = {r.path: r for r in dataset.images}
        train = [by_path[p] for p in saved["train"] if p in by_path]
        val = [by_path[p] for p in saved["val"] if p in by_path]
        how = saved["how"]
    else:
        train, val, how = split_records(dataset, val_fraction=config.val_fraction, seed=config.seed)
    if config.max_val_images:
        val = val[: config.max_val_images]
    return {
        "dataset": dataset,
        "class_map": ClassMap.build(dataset, config.classes),
        "train": train,
        "val": val,
        "how": how,
        "hash": content_hash(dataset),
        "version": versions.take_for_training(dataset, folder),
    }


def main(
    config: TrainConfig | dict[str, Any],
    folder: Path,
    *,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Train run ``folder`` (created, or resumed from its ``checkpoint.pth``); return its model card.

    Raises ``Cancelled`` when ``should_stop()`` turns true; any other exception is a failure.
    """
    from torch.utils.tensorboard import SummaryWriter

    from workbench.training.data import DetectionDataset, collate, train_transforms
    from workbench.training.models import apply_structure, build_model, get_spec, resolve_weights, structure_of
    from workbench.training.predictor import load_checkpoint, pick_device
    from workbench.training.validate import evaluate

    config = TrainConfig.from_dict(config) if isinstance(config, dict) else config
    budget = TimeBudget(config.time)
    folder = Path(folder)
    device = pick_device(config.device)
    rank, world = init_distributed(device)
    setup_logging(folder, rank)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if device.type == "cpu" and world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if world > 1:
        log.info("DDP: %d processes, backend %s, this is rank %d", world, dist.get_backend(), rank)
    torch.manual_seed(config.seed + rank)
    if config.model == "default":
        config.model = default_model(config.device)
    spec = get_spec(config.model)
    config.model = spec.name
    config.imgsz = int(config.imgsz or spec.imgsz)

    checkpoint_file = folder / "checkpoint.pth"
    checkpoint = load_checkpoint(checkpoint_file) if checkpoint_file.is_file() else None
    if checkpoint:
        saved = checkpoint["config"]
        config.classes = list(checkpoint["classes"])
        for name in ("model", "imgsz", "seed", "val_fraction", "weights"):  # what makes it the same run
            setattr(config, name, saved[name])
    run = prepare_run(config, folder)
    dataset, class_map, train_records, val_records = run["dataset"], run["class_map"], run["train"], run["val"]
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        registry.write_json(folder / "config.json", {**config.to_dict(), "run": folder.name})
        registry.write_json(
            folder / "split.json",
            {"how": run["how"], "train": [r.path for r in train_records], "val": [r.path for r in val_records]},
        )
    log.info("run %s: %s", folder.name, json.dumps(config.to_dict(), default=str))
    log.info("data: %s; %d train, %d val images; classes %s", run["how"], len(train_records), len(val_records),
             config.classes)  # fmt: skip

    weights = checkpoint["weights"] if checkpoint else resolve_weights(spec, config.weights)
    log.info(
        "weights: %s from %s%s",
        weights["kind"],
        weights["source"],
        f" ({weights.get('file')})" if weights.get("file") else "",
    )
    if checkpoint and "structure" in checkpoint:  # the frozen layers of the pretrained start, without its file
        model = build_model(spec.name, len(config.classes) + 1, weights=None, imgsz=config.imgsz)
        apply_structure(model, checkpoint["structure"])
    else:  # a new run, or a checkpoint that predates "structure": build from the starting weights again
        model = build_model(spec.name, len(config.classes) + 1, weights=weights, imgsz=config.imgsz)
        if config.freeze_backbone:
            from workbench.training.models import freeze_backbone

            frozen = freeze_backbone(model)
            log.info("backbone frozen: %d parameters not trained", frozen)
            if weights["kind"] == "none":
                log.warning("freeze_backbone with randomly initialised weights: the backbone stays random")
    note = None
    if config.recipe:
        from workbench.training.recipes import fallback_note

        note = fallback_note(config.recipe, config.engine, spec.name)
        if note:
            log.info("recipe %s: %s", config.recipe, note)
    structure = structure_of(model)
    model.transform._skip_resize = True  # the loader resizes (scale jitter); eval still resizes to imgsz
    model.to(device)

    train_ds = DetectionDataset(
        dataset,
        train_records,
        class_map,
        train_transforms(config.imgsz, scale=config.scale, color=config.color, rotation=config.rotation,
                         hflip=config.hflip),
    )  # fmt: skip
    sampler = (
        torch.utils.data.distributed.DistributedSampler(train_ds, shuffle=True, seed=config.seed)
        if world > 1
        else torch.utils.data.RandomSampler(train_ds, generator=torch.Generator().manual_seed(config.seed))
    )
    loader = torch.utils.data.DataLoader(
        train_ds,
        batch_size=config.batch,
        sampler=sampler,
        num_workers=config.workers,
        collate_fn=collate,
        drop_last=len(train_ds) >= config.batch * world,
        persistent_workers=config.workers > 0,
        pin_memory=device.type == "cuda",
    )
    iters_per_epoch = len(loader) if not config.max_iters else min(len(loader), config.max_iters)
    total_iters = iters_per_epoch * config.epochs

    params = [p for p in model.parameters() if p.requires_grad]
    lr = config.lr if config.lr is not None else 0.02 * config.batch * world / 8
    optimizer = torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
    warmup = min(config.warmup_iters, iters_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(warmup, total_iters, budget))
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start_epoch, best_ap, best_metrics = 0, -1.0, {}
    if rank == 0:
        _truncate_logs(folder, int(checkpoint["epoch"]) + 1 if checkpoint else 0)
    if checkpoint:
        from workbench.training.models import load_matching

        load_matching(model, checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scheduler.lr_lambdas = [lr_lambda(warmup, total_iters, budget)]  # epochs may have been extended
        if checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        start_epoch = int(checkpoint["epoch"]) + 1
        best_ap, best_metrics = float(checkpoint.get("best_ap", -1.0)), dict(checkpoint.get("best_metrics") or {})
        log.info(
            "resumed from %s: epoch %d done, continuing at epoch %d", checkpoint_file, start_epoch, start_epoch + 1
        )
    if start_epoch >= config.epochs:
        log.info("nothing to do: %d of %d epochs done (pass --epochs to train longer)", start_epoch, config.epochs)
    if budget.seconds:
        log.info("time budget: %.1f minutes for training and validation", budget.seconds / 60)
        if rank == 0 and start_epoch < config.epochs:
            budget.probe(
                lambda recs: evaluate(model, dataset, recs, class_map, device=device, batch=config.batch), val_records
            )

    train_model = model
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    writer = SummaryWriter(str(folder / "tensorboard")) if rank == 0 else None
    progress = Progress(
        folder, epochs=config.epochs, iters_per_epoch=iters_per_epoch, start_epoch=start_epoch, budget=budget
    )
    stop = should_stop or (lambda: False)
    iteration_log = IterationLog(folder / "losses.jsonl", writer) if rank == 0 else None
    epoch, epochs_done = start_epoch, start_epoch
    try:
        for epoch in range(start_epoch, config.epochs):
            if isinstance(sampler, torch.utils.data.distributed.DistributedSampler):
                sampler.set_epoch(epoch)
            else:  # the order of epoch e depends on (seed, e) only: a resumed run sees the same order
                sampler.generator.manual_seed(config.seed + epoch)
            train_model.train()
            for it, (images, targets) in enumerate(loader):
                if it >= iters_per_epoch:
                    break
                cancel, out_of_time, budget.agreed = _agree((stop(), budget.over(), budget.fraction(own=True)), world)
                if cancel:
                    raise Cancelled(f"cancelled at epoch {epoch + 1}, iteration {it}")
                if out_of_time:
                    budget.hit = True
                    log.info("time budget: training stops at epoch %d, iteration %d", epoch + 1, it)
                    break
                try:
                    loss, parts = train_step(
                        train_model, images, targets, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                        params=params, clip_grad=config.clip_grad, use_amp=use_amp, device=device,
                    )  # fmt: skip
                except FloatingPointError as e:
                    raise WorkbenchError(f"epoch {epoch + 1}, iteration {it}: {e}") from e
                progress.done += 1
                if rank == 0:
                    step = epoch * iters_per_epoch + it
                    lr = optimizer.param_groups[0]["lr"]
                    iteration_log(epoch=epoch, step=step, lr=lr, loss=loss, parts=parts)
                    progress.update(epoch=epoch, iteration=it + 1, phase="train", loss=round(loss, 5), lr=lr)
                    if it % 20 == 0:
                        log.info(
                            "epoch %d/%d iter %d/%d loss %.4f lr %.5f",
                            epoch + 1, config.epochs, it + 1, iters_per_epoch, loss, lr,
                        )  # fmt: skip

            if rank == 0:
                progress.update(epoch=epoch, iteration=iters_per_epoch, phase="val", force=True)
                t = time.monotonic()
                metrics = evaluate(
                    model, dataset, val_records, class_map, device=device, batch=config.batch,
                    workers=min(config.workers, 1), should_stop=stop,
                )  # fmt: skip
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
                log.info("epoch %d/%d val AP %.4f AP50 %.4f", epoch + 1, config.epochs, metrics["AP"], metrics["AP50"])
                state = {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if use_amp else None,
                    "config": config.to_dict(),
                    "epoch": epoch,
                    "classes": config.classes,
                    "weights": weights,
                    "structure": structure,
                    "best_ap": max(best_ap, metrics["AP"]),
                    "best_metrics": best_metrics,
                }
                if metrics["AP"] > best_ap:
                    best_ap, best_metrics = metrics["AP"], metrics
                    state["best_metrics"] = best_metrics
                    _atomic_save(
                        {"model": state["model"], "config": state["config"], "epoch": epoch, "classes": config.classes},
                        folder / "model_best.pth",
                    )
                _atomic_save(state, checkpoint_file)
                save_plots(folder)
                progress.update(
                    epoch=epoch, iteration=iters_per_epoch, phase="checkpoint", force=True,
                    **{k: v for k, v in metrics.items() if k != "epoch"},
                )  # fmt: skip
            epochs_done = epoch + 1
            if world > 1:
                dist.barrier()
            if _agree((budget.hit or budget.over(),), world)[0] > 0:
                budget.hit = True
                break
    finally:
        if writer:
            writer.close()
        if iteration_log:
            iteration_log.close()

    card = {}
    if rank == 0:
        extra: dict[str, Any] = {}
        if config.recipe:
            extra["freeze_backbone"] = config.freeze_backbone
        if note:
            extra["note"] = note
        if budget.seconds:
            extra["stopped_by_time"] = budget.hit
        card = registry.base_card(
            folder, config.to_dict(), run, engine="torchvision", weights=weights,
            device=str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            epochs_done=epochs_done, best_metrics=best_metrics, processes=world,
            seconds=round(budget.elapsed(), 1), **extra,
        )  # fmt: skip
        registry.write_model_card(folder, card)
        if config.recipe:  # MODEL_CARD.md: the recipe and, for a stand-in build, what differs from the original
            with open(folder / registry.CARD_MD, "a", encoding="utf-8") as f:
                f.write(f"## Recipe\n\n`{config.recipe}`" + (f": {note}" if note else "") + "\n")
        progress.update(
            epoch=config.epochs - 1, iteration=iters_per_epoch, phase="done", force=True,
            **{k: v for k, v in best_metrics.items() if k != "epoch"},
        )  # fmt: skip
    if world > 1:
        dist.barrier()
    return card


def _truncate_logs(folder: Path, epochs_done: int) -> None:
    """Drop loss and metric lines of epochs after ``epochs_done`` (an interrupted epoch that is redone)."""
    for name in ("losses.jsonl", "metrics.jsonl"):
        path = folder / name
        if path.exists():
            rows = [r for r in registry.read_jsonl(path) if int(r.get("epoch", 0)) <= epochs_done]
            atomic_write(path, "".join(json.dumps(r) + "\n" for r in rows))


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def cli(argv: list[str] | None = None) -> int:
    """Foreground entry for torchrun across machines (no job database):

    ``torchrun ... -m workbench.training.loop --config config.json --run-dir models/<run>``

    ``config.json`` holds ``TrainConfig`` fields (``data`` must exist at the same path on
    every machine). Rank 0 writes the run folder and, when the run finishes, moves
    ``models/latest`` to it.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m workbench.training.loop", description=cli.__doc__)
    parser.add_argument("--config", required=True, help="JSON file of TrainConfig fields")
    parser.add_argument("--run-dir", required=True, help="the run folder (created; resumed when it has a checkpoint)")
    args = parser.parse_args(argv)
    config = json.loads(Path(args.config).read_text(encoding="utf-8"))
    config.pop("run", None)
    folder = Path(args.run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        card = main(config, folder)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if card:  # rank 0
        registry.set_latest(folder)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
