"""Training-step overhead and loader headroom, measured side by side in one run.

1. The workbench's training step (``engines.torchvision_epoch.train_step`` with the AMP
   scaler (disabled on the CPU), the LR scheduler and the per-iteration log: ``losses.jsonl``, TensorBoard,
   ``progress.json``) against a bare torchvision loop (forward, backward, SGD step) on the
   same batches, with two copies of the same model. The two alternate batch by batch
   (ABBA) so that a change in the machine's load hits both. Target: ratio <= 1.05.
2. How long the loader takes to produce a batch (decode, augment, collate; one process),
   against how long the model takes to consume one. With ``--workers`` loader processes the
   loader's rate is ``workers / batch time``. Target: model time / (loader time / workers) >= 3.

    .venv/bin/python benchmarks/train_step.py [--data DIR] [--images 24] [--imgsz 384] [--batch 4] [--steps 6]

Not a test: it prints numbers. CPU time (``process_time``) is shown next to wall time
because on a shared machine the wall time of a step depends on the other processes.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workbench.formats import load_dataset  # noqa: E402
from workbench.splits import ClassMap, freeze_classes, split_records  # noqa: E402
from workbench.training.data import DetectionDataset, collate, train_transforms  # noqa: E402
from workbench.training.engines.torchvision_epoch import train_step  # noqa: E402
from workbench.training.models import build_model, get_spec  # noqa: E402
from workbench.training.run import IterationLog, Progress  # noqa: E402
from workbench.training.weights import resolve_weights  # noqa: E402


def timed(fn, *args) -> tuple[float, float]:
    """``(wall seconds, CPU seconds of this process)`` of ``fn(*args)``."""
    w, c = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - w, time.process_time() - c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "andrewmvd-voc"))
    parser.add_argument("--model", default="fasterrcnn_mobilenet_v2")
    parser.add_argument("--images", type=int, default=24, help="training images to draw batches from")
    parser.add_argument("--imgsz", type=int, default=384)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6, help="measured steps per variant (after one warm-up)")
    parser.add_argument("--workers", type=int, default=2, help="loader processes a real run uses")
    parser.add_argument("--clip-grad", type=float, default=0.0, help="as train --clip-grad (default 0: off)")
    args = parser.parse_args()
    torch.manual_seed(0)

    dataset = load_dataset(args.data)
    train, _, _ = split_records(dataset, val_fraction=0.2, seed=0)
    train = train[: args.images]
    classes = freeze_classes(dataset)
    tds = DetectionDataset(dataset, train, ClassMap.build(dataset, classes), train_transforms(args.imgsz))
    loader = torch.utils.data.DataLoader(tds, batch_size=args.batch, shuffle=True, num_workers=0, collate_fn=collate)

    # loader: time to produce each batch in one process
    batches, load_times = [], []
    it = iter(loader)
    while len(batches) < args.steps + 1:
        try:
            t = time.perf_counter()
            batch = next(it)
            load_times.append(time.perf_counter() - t)
            batches.append(batch)
        except StopIteration:
            it = iter(loader)

    spec = get_spec(args.model)
    weights = resolve_weights(spec)
    base = build_model(spec.name, len(classes) + 1, weights=weights, imgsz=args.imgsz)
    base.transform._skip_resize = True
    bare_model, wb_model = copy.deepcopy(base).train(), copy.deepcopy(base).train()

    bare_params = [p for p in bare_model.parameters() if p.requires_grad]
    bare_opt = torch.optim.SGD(bare_params, lr=0.005, momentum=0.9, weight_decay=1e-4)

    def bare_step(images, targets):
        """torchvision references/detection style, minimal: forward, backward, step, loss.item()."""
        loss = sum(bare_model(images, targets).values())
        bare_opt.zero_grad()
        loss.backward()
        bare_opt.step()
        return loss.item()

    wb_params = [p for p in wb_model.parameters() if p.requires_grad]
    wb_opt = torch.optim.SGD(wb_params, lr=0.005, momentum=0.9, weight_decay=1e-4)
    # the run's scheduler object, but a constant factor: both models then take the same steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(wb_opt, lambda it: 1.0)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    tmp = Path(tempfile.mkdtemp(prefix="wb-bench-"))
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp / "tb"))
    iteration_log = IterationLog(tmp / "losses.jsonl", writer)
    progress = Progress(tmp, epochs=1, iters_per_epoch=len(batches), start_epoch=0)
    device = torch.device("cpu")

    def wb_step(images, targets, i):
        loss, parts = train_step(
            wb_model,
            images,
            targets,
            optimizer=wb_opt,
            scheduler=scheduler,
            scaler=scaler,
            params=wb_params,
            clip_grad=args.clip_grad,
            use_amp=False,
            device=device,
        )
        lr = wb_opt.param_groups[0]["lr"]
        iteration_log(epoch=0, step=i, lr=lr, loss=loss, parts=parts)
        progress.step(epoch=0, iteration=i, loss=loss, lr=lr)

    # warm-up (first-call allocations, oneDNN kernels)
    bare_step(*batches[0])
    wb_step(*batches[0], 0)
    bare, wb = [], []
    for i, (images, targets) in enumerate(batches[1:], start=1):
        order = [("bare", bare_step), ("wb", wb_step)] if i % 2 else [("wb", wb_step), ("bare", bare_step)]
        for name, _ in order:
            if name == "bare":
                bare.append(timed(bare_step, images, targets))
            else:
                wb.append(timed(wb_step, images, targets, i))

    def med(rows, k):
        return statistics.median(r[k] for r in rows)

    print(
        f"model {spec.name} ({weights['kind']} weights), imgsz {args.imgsz}, batch {args.batch}, "
        f"{args.steps} steps each, torch threads {torch.get_num_threads()}"
    )
    print(f"{'':28s} {'wall s/step':>12s} {'cpu s/step':>12s}")
    print(f"{'bare torchvision loop':28s} {med(bare, 0):12.3f} {med(bare, 1):12.3f}")
    print(f"{'workbench train_step + log':28s} {med(wb, 0):12.3f} {med(wb, 1):12.3f}")
    ratio_wall, ratio_cpu = med(wb, 0) / med(bare, 0), med(wb, 1) / med(bare, 1)
    print(f"step ratio workbench/bare: wall {ratio_wall:.3f}, cpu {ratio_cpu:.3f} (target <= 1.05)")

    # the workbench's extra work per step, timed alone (free of the step-to-step noise above)
    extra = []
    for i in range(200):
        w = time.perf_counter()
        iteration_log(epoch=0, step=i, lr=0.01, loss=1.0, parts={"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0})
        progress.update(epoch=0, iteration=1, phase="train", loss=1.0, force=i % 10 == 0)
        scheduler.step()
        extra.append(time.perf_counter() - w)
    extra_s = statistics.mean(extra)
    print(
        f"extra work per step alone (log, progress, scheduler): {extra_s * 1000:.2f} ms "
        f"= ratio {(med(bare, 0) + extra_s) / med(bare, 0):.4f} of the bare step"
    )

    writer.close()
    iteration_log.close()
    load = statistics.median(load_times[1:] or load_times)
    step = med(wb, 0)
    print(f"loader: {load:.3f} s per batch in one process; {args.workers} workers -> {load / args.workers:.3f} s")
    print(
        f"model step / loader batch time: {step / load:.1f}x with one process, "
        f"{step / (load / args.workers):.1f}x with {args.workers} workers (target >= 3)"
    )


if __name__ == "__main__":
    main()
