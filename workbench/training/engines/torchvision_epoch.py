"""One epoch of the torchvision engine: the optimiser and schedule, the training step, and the
epoch's loop over the loader (torchvision's ``references/detection/engine.py``; ``main`` is in
``engines/torchvision.py``)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from workbench.errors import WorkbenchError
from workbench.training.budget import TimeBudget
from workbench.training.config import TrainConfig
from workbench.training.models import load_matching
from workbench.training.run import Cancelled, IterationLog, Progress, agree, lr_lambda

log = logging.getLogger("workbench.training")


@dataclass
class Trainer:
    """The parts of a torchvision run that train: the model (``train_model`` is its DDP wrapper
    under torchrun), the optimiser, and what every iteration checks (time budget, stop flag)."""

    model: torch.nn.Module
    train_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    config: TrainConfig
    device: torch.device
    world: int
    budget: TimeBudget
    should_stop: Callable[[], bool]

    def step(self, images: list[torch.Tensor], targets: list[dict[str, Any]]) -> tuple[float, dict[str, float]]:
        return train_step(
            self.train_model,
            images,
            targets,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            params=[p for g in self.optimizer.param_groups for p in g["params"]],
            clip_grad=self.config.clip_grad,
            use_amp=self.scaler.is_enabled(),
            device=self.device,
        )

    def state(self) -> dict[str, Any]:
        """The optimiser's part of the checkpoint."""
        scaler = self.scaler.state_dict() if self.scaler.is_enabled() else None
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(), "scaler": scaler}


def make_trainer(
    model: torch.nn.Module,
    config: TrainConfig,
    checkpoint: dict[str, Any] | None,
    *,
    iters_per_epoch: int,
    world: int,
    budget: TimeBudget,
    should_stop: Callable[[], bool],
) -> Trainer:
    """SGD (``lr`` ``None``: ``0.02 * total batch / 8``), warm-up + cosine schedule, AMP scaler on
    CUDA, DDP under torchrun; all restored from ``checkpoint`` on resume."""
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    lr = config.lr if config.lr is not None else 0.02 * config.batch * world / 8
    optimizer = torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
    warmup, total = min(config.warmup_iters, iters_per_epoch), iters_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(warmup, total, budget))
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp and device.type == "cuda")
    if checkpoint:
        load_matching(model, checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scheduler.lr_lambdas = [lr_lambda(warmup, total, budget)]  # epochs may have been extended
        if checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
    train_model = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return Trainer(model, train_model, optimizer, scheduler, scaler, config, device, world, budget, should_stop)


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


def train_one_epoch(
    trainer: Trainer,
    loader: torch.utils.data.DataLoader,
    *,
    epoch: int,
    progress: Progress,
    iteration_log: IterationLog | None,
) -> None:
    """Train one epoch of at most ``progress.iters_per_epoch`` iterations; the ranks agree each
    iteration on cancel (raises ``Cancelled``) and on the time budget (ends the epoch early).
    ``iteration_log`` is ``None`` on the ranks other than 0."""
    budget, sampler = trainer.budget, loader.sampler
    if isinstance(sampler, torch.utils.data.distributed.DistributedSampler):
        sampler.set_epoch(epoch)
    else:  # the order of epoch e depends on (seed, e) only: a resumed run sees the same order
        sampler.generator.manual_seed(trainer.config.seed + epoch)
    trainer.train_model.train()
    for it, (images, targets) in enumerate(loader):
        if it >= progress.iters_per_epoch:
            break
        flags = (trainer.should_stop(), budget.over(), budget.fraction(own=True))
        cancel, out_of_time, budget.agreed = agree(flags, trainer.world)
        if cancel:
            raise Cancelled(f"cancelled at epoch {epoch + 1}, iteration {it}")
        if out_of_time:
            budget.hit = True
            log.info("time budget: training stops at epoch %d, iteration %d", epoch + 1, it)
            break
        try:
            loss, parts = trainer.step(images, targets)
        except FloatingPointError as e:
            raise WorkbenchError(f"epoch {epoch + 1}, iteration {it}: {e}") from e
        if iteration_log is None:  # another rank: counts for the ETA only
            progress.done += 1
            continue
        lr = trainer.optimizer.param_groups[0]["lr"]
        iteration_log(epoch=epoch, step=epoch * progress.iters_per_epoch + it, lr=lr, loss=loss, parts=parts)
        progress.step(epoch=epoch, iteration=it, loss=loss, lr=lr)
