"""The torchvision engine: a flat ``main(config, folder)`` after torchvision's
``references/detection/train.py``.

One call trains one run folder (see ``registry``) from its config and, when the folder holds
``checkpoint.pth``, continues from the epoch after the saved one. Each epoch ends with COCO AP
on the validation split and a checkpoint dict (model, optimizer, scheduler, scaler, config,
epoch, classes, best AP): ``run.end_epoch``.

Runs single-process, or as one rank of ``torchrun`` (DDP; gloo on the CPU, NCCL on CUDA): the
environment variables ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` decide. Only rank 0 evaluates and
writes files. Mixed precision (``torch.autocast`` + ``GradScaler``) on CUDA.

``should_stop`` is polled every iteration (cancel); when it says stop, ``Cancelled`` is raised
after the ranks agree, leaving the last epoch's checkpoint to resume from.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

from workbench.training import registry
from workbench.training.budget import TimeBudget
from workbench.training.config import TrainConfig, default_model
from workbench.training.data import DetectionDataset, collate, train_transforms
from workbench.training.engines.torchvision_epoch import Trainer, make_trainer, train_one_epoch
from workbench.training.models import (
    MODELS,
    apply_structure,
    build_model,
    freeze_backbone,
    get_spec,
    load_matching,
    structure_of,
)
from workbench.training.predictor import Predictor, load_checkpoint, pick_device
from workbench.training.recipes import fallback_note
from workbench.training.run import (
    Best,
    EpochEnd,
    IterationLog,
    Progress,
    agree,
    end_epoch,
    init_distributed,
    prepare_run,
    resume_checkpoint,
    setup_logging,
    truncate_logs,
)
from workbench.training.validate import evaluate
from workbench.training.weights import resolve_weights

log = logging.getLogger("workbench.training")

SAME_RUN = ("model", "imgsz", "seed", "val_fraction", "weights")  # what a resume keeps from the saved run


def model_choices() -> dict[str, str]:
    return {name: spec.description for name, spec in MODELS.items()}


def prepare(config: TrainConfig) -> str:
    """Resolve ``model`` (``default``: ``default_model``; aliases: the full name) before a job starts."""
    config.model = get_spec(default_model(config.device) if config.model == "default" else config.model).name
    return config.model


def load(folder: Path, config: dict[str, Any], card: dict[str, Any], device: torch.device) -> Predictor:
    """The predictor of torchvision run ``folder``: its best epoch's weights, else its last checkpoint's."""
    file = registry.weights_file(folder)
    checkpoint = load_checkpoint(file)
    classes = list(checkpoint.get("classes") or config["classes"])
    model = build_model(config["model"], len(classes) + 1, weights=None, imgsz=int(config["imgsz"]))
    load_matching(model, checkpoint["model"])
    log.info("loaded %s (%s, epoch %s)", file, config["model"], checkpoint.get("epoch"))
    return Predictor(model, classes=classes, card=card, run_dir=folder, device=device)


def setup_device(config: TrainConfig) -> tuple[torch.device, int, int]:
    """``(device, rank, world size)``: this process's device, its DDP rank, and the log set up."""
    device = pick_device(config.device)
    rank, world = init_distributed(device)
    setup_logging(rank)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if device.type == "cpu" and world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if world > 1:
        log.info("DDP: %d processes, backend %s, this is rank %d", world, dist.get_backend(), rank)
    return device, rank, world


def build(config: TrainConfig, checkpoint: dict[str, Any] | None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model to train and its starting weights (``weights.resolve_weights``; a resumed run's saved ones)."""
    spec = get_spec(config.model)
    weights = checkpoint["weights"] if checkpoint else resolve_weights(spec, config.weights)
    source = f" ({weights.get('file')})" if weights.get("file") else ""
    log.info("weights: %s from %s%s", weights["kind"], weights["source"], source)
    num_classes = len(config.classes) + 1
    if checkpoint and "structure" in checkpoint:  # the frozen layers of the pretrained start, without its file
        model = build_model(spec.name, num_classes, weights=None, imgsz=config.imgsz)
        apply_structure(model, checkpoint["structure"])
    else:  # a new run, or a checkpoint that predates "structure": build from the starting weights again
        model = build_model(spec.name, num_classes, weights=weights, imgsz=config.imgsz)
        if config.freeze_backbone:
            log.info("backbone frozen: %d parameters not trained", freeze_backbone(model))
            if weights["kind"] == "none":
                log.warning("freeze_backbone with randomly initialised weights: the backbone stays random")
    model.transform._skip_resize = True  # the loader resizes (scale jitter); eval still resizes to imgsz
    return model, weights


def make_loader(config: TrainConfig, run: dict[str, Any], *, world: int, device: torch.device):
    """The training ``DataLoader`` over the run's train split: a seeded order, or a DDP shard."""
    transforms = train_transforms(
        config.imgsz, scale=config.scale, color=config.color, rotation=config.rotation, hflip=config.hflip
    )
    train_ds = DetectionDataset(run["dataset"], run["train"], run["class_map"], transforms)
    if world > 1:
        sampler = torch.utils.data.distributed.DistributedSampler(train_ds, shuffle=True, seed=config.seed)
    else:
        sampler = torch.utils.data.RandomSampler(train_ds, generator=torch.Generator().manual_seed(config.seed))
    return torch.utils.data.DataLoader(
        train_ds,
        batch_size=config.batch,
        sampler=sampler,
        num_workers=config.workers,
        collate_fn=collate,
        drop_last=len(train_ds) >= config.batch * world,
        persistent_workers=config.workers > 0,
        pin_memory=device.type == "cuda",
    )


def write_card(folder: Path, config: TrainConfig, run: dict[str, Any], *, trainer: Trainer, **fields: Any) -> dict:
    """``model_card.json`` and ``MODEL_CARD.md`` of a finished torchvision run (``fields``: weights,
    epochs_done, best_metrics); a recipe's stand-in note goes into both."""
    note = fallback_note(config.recipe, config.engine, config.model) if config.recipe else None
    device = trainer.device
    fields["device"] = str(device) if device.type == "cpu" else torch.cuda.get_device_name(device)
    fields.update(processes=trainer.world, seconds=round(trainer.budget.elapsed(), 1))
    if trainer.budget.seconds:
        fields["stopped_by_time"] = trainer.budget.hit
    if config.recipe:
        fields["freeze_backbone"] = config.freeze_backbone
    if note:
        fields["note"] = note
    card = registry.base_card(folder, config.to_dict(), run, engine="torchvision", **fields)
    registry.write_model_card(folder, card)
    if config.recipe:  # MODEL_CARD.md: the recipe and, for a stand-in build, what differs from the original
        with open(folder / registry.CARD_MD, "a", encoding="utf-8") as f:
            f.write(f"## Recipe\n\n`{config.recipe}`" + (f": {note}" if note else "") + "\n")
    return card


def main(
    config: TrainConfig | dict[str, Any], folder: Path, *, should_stop: Callable[[], bool] | None = None
) -> dict[str, Any]:
    """Train run ``folder`` (created, or resumed from its ``checkpoint.pth``); return its model card
    (``{}`` on the ranks other than 0).

    Raises ``Cancelled`` when ``should_stop()`` turns true; any other exception is a failure.
    """
    config = TrainConfig.from_dict(config) if isinstance(config, dict) else config
    budget = TimeBudget(config.time)
    folder, stop = Path(folder), should_stop or (lambda: False)
    device, rank, world = setup_device(config)
    torch.manual_seed(config.seed + rank)
    prepare(config)
    config.imgsz = int(config.imgsz or get_spec(config.model).imgsz)
    checkpoint = resume_checkpoint(folder, config, same=SAME_RUN)
    run = prepare_run(config, folder, write=rank == 0)
    log.info("run %s: %s", folder.name, json.dumps(config.to_dict(), default=str))
    log.info(
        "data: %s; %d train, %d val images; classes %s", run["how"], len(run["train"]), len(run["val"]), config.classes
    )
    if config.recipe and (note := fallback_note(config.recipe, config.engine, config.model)):
        log.info("recipe %s: %s", config.recipe, note)
    model, weights = build(config, checkpoint)
    structure = structure_of(model)
    model.to(device)

    loader = make_loader(config, run, world=world, device=device)
    iters_per_epoch = min(len(loader), config.max_iters or len(loader))
    start_epoch = int(checkpoint["epoch"]) + 1 if checkpoint else 0
    if rank == 0:
        truncate_logs(folder, start_epoch)
    trainer = make_trainer(
        model, config, checkpoint, iters_per_epoch=iters_per_epoch, world=world, budget=budget, should_stop=stop
    )
    if checkpoint:
        log.info(
            "resumed from %s: epoch %d done, continuing at epoch %d",
            folder / "checkpoint.pth",
            start_epoch,
            start_epoch + 1,
        )
    if start_epoch >= config.epochs:
        log.info("nothing to do: %d of %d epochs done (pass --epochs to train longer)", start_epoch, config.epochs)

    def validate(records: list) -> dict[str, float]:
        workers = min(config.workers, 1)
        return evaluate(
            model,
            run["dataset"],
            records,
            run["class_map"],
            device=device,
            batch=config.batch,
            workers=workers,
            should_stop=stop,
        )

    if budget.seconds:
        log.info("time budget: %.1f minutes for training and validation", budget.seconds / 60)
        if rank == 0 and start_epoch < config.epochs:
            budget.probe(validate, run["val"])
    progress = Progress(
        folder, epochs=config.epochs, iters_per_epoch=iters_per_epoch, start_epoch=start_epoch, budget=budget
    )
    writer = SummaryWriter(str(folder / "tensorboard")) if rank == 0 else None
    iteration_log = IterationLog(folder / "losses.jsonl", writer) if rank == 0 else None
    ending = EpochEnd(folder, progress, budget, stop, Best.of(checkpoint), writer)
    epochs_done = start_epoch
    try:
        for epoch in range(start_epoch, config.epochs):
            train_one_epoch(trainer, loader, epoch=epoch, progress=progress, iteration_log=iteration_log)
            if rank == 0:
                saved = {"model": model.state_dict(), "config": config.to_dict(), "epoch": epoch}
                saved["classes"] = config.classes
                state = {**saved, **trainer.state(), "weights": weights, "structure": structure}
                end_epoch(
                    ending, epoch=epoch, validate=lambda: validate(run["val"]), checkpoint=state, best_weights=saved
                )
            epochs_done = epoch + 1
            if world > 1:
                dist.barrier()
            if agree((budget.hit or budget.over(),), world)[0] > 0:
                budget.hit = True
                break
    finally:
        if writer:
            writer.close()
        if iteration_log:
            iteration_log.close()

    card: dict[str, Any] = {}
    if rank == 0:
        best = ending.best.metrics
        card = write_card(
            folder, config, run, trainer=trainer, weights=weights, epochs_done=epochs_done, best_metrics=best
        )
        progress.done_with(best, epochs_done=config.epochs)
    if world > 1:
        dist.barrier()
    return card


def cli(argv: list[str] | None = None) -> int:
    """Foreground entry for torchrun across machines (no job database):

    ``torchrun ... -m workbench.training.engines.torchvision --config config.json --run-dir models/<run>``

    ``config.json`` holds ``TrainConfig`` fields (``data`` must exist at the same path on
    every machine). Rank 0 writes the run folder and, when the run finishes, moves
    ``models/latest`` to it.
    """
    parser = argparse.ArgumentParser(prog="python -m workbench.training.engines.torchvision", description=cli.__doc__)
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
