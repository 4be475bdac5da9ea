"""What every engine shares: the run's setup and resume, the time budget, progress and loss logs,
the learning-rate schedule, DDP helpers, and ``end_epoch``, the one end of an epoch (validate,
time budget, metrics file, TensorBoard, best checkpoint, plots).

A run folder's files are listed in ``registry``. Only rank 0 of a DDP run writes them.
"""

from __future__ import annotations

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

from workbench.annotations import content_hash
from workbench.datasets import versions
from workbench.fileio import atomic_write
from workbench.formats import load_dataset
from workbench.splits import ClassMap, freeze_classes, split_records
from workbench.training import registry
from workbench.training.budget import TimeBudget
from workbench.training.config import TrainConfig
from workbench.training.predictor import load_checkpoint

log = logging.getLogger("workbench.training")

CHECKPOINT = "checkpoint.pth"
BEST = "model_best.pth"


class Cancelled(Exception):
    """The run was asked to stop (``workbench cancel``)."""


def setup_logging(rank: int = 0) -> None:
    """Log to stderr (a job's stderr is its ``train.log``); other ranks log warnings only."""
    root = logging.getLogger("workbench")
    if not any(getattr(h, "_workbench", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"%(asctime)s [rank {rank}] %(levelname)s %(message)s", "%H:%M:%S"))
        handler._workbench = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def init_distributed(device: torch.device) -> tuple[int, int]:
    """``(rank, world_size)``; joins the torchrun process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def agree(values: tuple[float, ...], world: int) -> tuple[float, ...]:
    """The largest of each value over the ranks (one tiny all-reduce per iteration): a flag true
    on any rank becomes true on all of them."""
    if world <= 1:
        return values
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(t.tolist())


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

    def step(self, *, epoch: int, iteration: int, loss: float, lr: float) -> None:
        """One training iteration done (``iteration`` counts from 0): the progress file, and a log
        line every 20 iterations."""
        self.done += 1
        self.update(epoch=epoch, iteration=iteration + 1, phase="train", loss=round(loss, 5), lr=lr)
        if iteration % 20 == 0:
            log.info(
                "epoch %d/%d iter %d/%d loss %.4f lr %.5f",
                epoch + 1,
                self.epochs,
                iteration + 1,
                self.iters_per_epoch,
                loss,
                lr,
            )

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

    def done_with(self, best_metrics: dict[str, Any], *, epochs_done: int) -> None:
        """The run is over: phase ``done`` with the best epoch's metrics."""
        metrics = {k: v for k, v in best_metrics.items() if k != "epoch"}
        self.update(epoch=max(0, epochs_done - 1), iteration=self.iters_per_epoch, phase="done", force=True, **metrics)


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


def resume_checkpoint(folder: Path, config: TrainConfig, *, same: tuple[str, ...]) -> dict[str, Any] | None:
    """``checkpoint.pth`` of run ``folder`` when it has one, else ``None``. On resume, the saved
    class list and the ``same`` fields (what makes it the same run: model, seed, ...) go back
    into ``config``, whatever the resume asked for."""
    path = folder / CHECKPOINT
    if not path.is_file():
        return None
    checkpoint = load_checkpoint(path)
    saved = checkpoint["config"]
    config.classes = list(checkpoint["classes"])
    for name in same:
        setattr(config, name, saved[name])
    return checkpoint


def prepare_run(config: TrainConfig, folder: Path, *, write: bool = True) -> dict[str, Any]:
    """Load the dataset, freeze the classes and the split; with ``write`` (rank 0) write
    ``config.json`` and ``split.json``.

    Returns ``{"dataset", "class_map", "train", "val", "how", "hash", "version"}``. On resume the
    saved class list and split are reused, so that the run stays the same run even when the
    dataset was relabelled since.
    """
    dataset = load_dataset(config.data, config.format, strict=False)
    if dataset.skipped:
        log.warning("%s: %d bad annotation file(s) skipped", config.data, len(dataset.skipped))
    if not config.classes:
        config.classes = freeze_classes(dataset)
    saved = registry.read_json(folder / "split.json")
    if saved:
        by_path = {r.path: r for r in dataset.images}
        train = [by_path[p] for p in saved["train"] if p in by_path]
        val = [by_path[p] for p in saved["val"] if p in by_path]
        how = saved["how"]
    else:
        train, val, how = split_records(dataset, val_fraction=config.val_fraction, seed=config.seed)
    if config.max_val_images:
        val = val[: config.max_val_images]
    if write:
        folder.mkdir(parents=True, exist_ok=True)
        registry.write_json(folder / "config.json", {**config.to_dict(), "run": folder.name})
        split = {"how": how, "train": [r.path for r in train], "val": [r.path for r in val]}
        registry.write_json(folder / "split.json", split)
    return {
        "dataset": dataset,
        "class_map": ClassMap.build(dataset, config.classes),
        "train": train,
        "val": val,
        "how": how,
        "hash": content_hash(dataset),
        "version": versions.take_for_training(dataset, folder),
    }


def truncate_logs(folder: Path, epochs_done: int) -> None:
    """Drop loss and metric lines of epochs after ``epochs_done`` (an interrupted epoch that is redone)."""
    for name in ("losses.jsonl", "metrics.jsonl"):
        path = folder / name
        if path.exists():
            rows = [r for r in registry.read_jsonl(path) if int(r.get("epoch", 0)) <= epochs_done]
            atomic_write(path, "".join(json.dumps(r) + "\n" for r in rows))


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` into a temporary file beside ``path``, then renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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
        ax.set(xlabel="iteration", ylabel="training loss")
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "loss.png", dpi=80)
        plt.close(fig)
    metrics = registry.read_jsonl(folder / "metrics.jsonl")
    if metrics:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for key in ("AP", "AP50"):
            ax.plot([m["epoch"] for m in metrics], [m[key] for m in metrics], marker="o", label=key)
        ax.set(xlabel="epoch", ylabel="validation")
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "map.png", dpi=80)
        plt.close(fig)


@dataclass
class Best:
    """The best validation so far: its AP and the metrics row it came with (saved in checkpoints)."""

    ap: float = -1.0
    metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, checkpoint: dict[str, Any] | None) -> Best:
        """The best of a resumed run's checkpoint, or none yet."""
        if not checkpoint:
            return cls()
        return cls(float(checkpoint.get("best_ap", -1.0)), dict(checkpoint.get("best_metrics") or {}))


@dataclass
class EpochEnd:
    """What ``end_epoch`` needs of a run for the whole run: its folder, progress, budget, stop flag,
    best validation so far, and optional TensorBoard writer and extra plots."""

    folder: Path
    progress: Progress
    budget: TimeBudget
    should_stop: Callable[[], bool]
    best: Best
    writer: Any | None = None
    plots: Callable[[Path], None] | None = None


def end_epoch(
    run: EpochEnd,
    *,
    epoch: int,
    validate: Callable[[], dict[str, float]],
    checkpoint: dict[str, Any],
    best_weights: dict[str, Any],
) -> dict[str, Any]:
    """End epoch ``epoch`` (0-based) the way every engine does, and return its metrics row.

    ``validate()`` gives the validation metrics (COCO ``AP``, ``AP50``, ...; more keys ride
    along); its duration tells the time budget how much to keep back for the next one. The row
    ``{"epoch": epoch + 1, ...}`` (floats rounded to 5 places) goes to ``metrics.jsonl``,
    TensorBoard and the log. ``best_weights`` is saved as ``model_best.pth`` when AP beat the
    best so far, ``checkpoint`` (with ``best_ap`` and ``best_metrics`` added) as
    ``checkpoint.pth`` every epoch; then the plots and ``progress.json``. Raises ``Cancelled``
    when ``should_stop()`` turned true during the validation.
    """
    progress, folder = run.progress, run.folder
    progress.update(epoch=epoch, iteration=progress.iters_per_epoch, phase="val", force=True)
    t = time.monotonic()
    metrics = validate()
    seconds = time.monotonic() - t
    progress.eval_seconds += seconds
    run.budget.validated(seconds)
    if run.should_stop():
        raise Cancelled(f"cancelled in the validation of epoch {epoch + 1}")
    row = {"epoch": epoch + 1, **{k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()}}
    with open(folder / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    if run.writer is not None:
        for k, v in row.items():
            if k != "epoch":
                run.writer.add_scalar(f"val/{k}", v, epoch + 1)
    log.info("epoch %d/%d val AP %.4f AP50 %.4f", epoch + 1, progress.epochs, row["AP"], row["AP50"])
    if row["AP"] > run.best.ap:
        run.best.ap, run.best.metrics = row["AP"], row
        atomic_save(best_weights, folder / BEST)
    atomic_save({**checkpoint, "best_ap": run.best.ap, "best_metrics": run.best.metrics}, folder / CHECKPOINT)
    save_plots(folder)
    if run.plots is not None:
        run.plots(folder)
    metrics_only = {k: v for k, v in row.items() if k != "epoch"}
    progress.update(epoch=epoch, iteration=progress.iters_per_epoch, phase="checkpoint", force=True, **metrics_only)
    return row
