"""The model registry: one folder per training run under ``models_dir()``.

A run folder ``models/<run>/`` holds::

    config.json         the frozen training config, including the class list
    train.log           the job's log (a crash leaves its traceback here)
    progress.json       epoch, iteration, ETA, last loss (rewritten while training)
    losses.jsonl        one line per iteration: epoch, iteration, lr, loss and its parts
    metrics.jsonl       one line per epoch: COCO AP, AP50, ... on the validation split
    tensorboard/        TensorBoard event files
    checkpoint.pth      the last epoch: model, optimizer, scheduler, config, epoch, classes
    model_best.pth      the weights of the best epoch (by AP), with config and classes
    loss.png, map.png   plots
    model_card.json     dataset path and content hash, classes, engine, model, weights, epochs, best metrics
    MODEL_CARD.md       the same for people

``models/latest`` is a symbolic link to the newest run that finished successfully; only a
finished run moves it (``set_latest``), atomically (a new link renamed over the old one).
``set_latest`` also records the run as the latest of the dataset it trained on, in
``models/latest.json`` (``{resolved dataset folder: run name}``, changed under the file's
inter-process lock): ``latest:<dataset folder>`` names that run, and ``choose_run`` picks it
for the demo and suggestions, refusing a run whose classes differ from the dataset's unless asked.
An interrupted or cancelled run never calls ``set_latest``, so it moves neither pointer.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from workbench.datasets.index import open_dataset
from workbench.errors import WorkbenchError
from workbench.fileio import atomic_write
from workbench.locks import locked
from workbench.paths import models_dir

LATEST = "latest"
LATEST_OF = "latest:"  # ``latest:<dataset folder>``: the newest finished run trained on that dataset
LATEST_JSON = "latest.json"
CARD_JSON = "model_card.json"
CARD_MD = "MODEL_CARD.md"


def new_run_name(model: str) -> str:
    """A fresh run name ``<model or recipe>-<YYYYmmdd-HHMMSS>`` (suffixed ``-2``, ``-3``... when taken)."""
    base = f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"
    name, n = base, 1
    while (models_dir() / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def check_run_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or name == LATEST:
        raise WorkbenchError(f"bad run name {name!r}: use letters, digits, '.', '_' and '-'")
    return name


def run_dir(name: str) -> Path:
    """The folder of run ``name`` (not created)."""
    return models_dir() / check_run_name(name)


def resolve_run(run: str | Path = LATEST) -> Path:
    """The run folder for ``"latest"``, a run name, or a path to a run folder.

    Raises ``WorkbenchError`` naming what was looked for when there is no such trained model.
    """
    text = str(run)
    if text.startswith(LATEST_OF):
        dataset = text[len(LATEST_OF) :]
        name = latest_of(dataset)
        if name is None:
            raise WorkbenchError(
                f"no model trained on {dataset_key(dataset)} yet (train one with `workbench train --data {dataset}`)"
            )
        path = models_dir() / name
    elif text == LATEST:
        link = models_dir() / LATEST
        if not link.exists():
            raise WorkbenchError(
                f"no trained model yet: {link} does not exist (train one with `workbench train --data DATASET`)"
            )
        path = link.resolve()
    elif os.sep in text or "/" in text or Path(text).is_absolute():
        path = Path(text)
    else:
        path = models_dir() / text
    if not path.is_dir():
        raise WorkbenchError(f"no trained model {text!r}: {path} is not a folder")
    if not has_weights(path):
        raise WorkbenchError(
            f"{path}: no checkpoint (model_best.pth or checkpoint.pth); has the run finished an epoch?"
        )
    return path


def weights_file(folder: Path) -> Path:
    """The weights a predictor loads from run ``folder``: the best epoch's (``model_best.pth``),
    else the last checkpoint's (an unfinished run)."""
    best = Path(folder) / "model_best.pth"
    return best if best.is_file() else Path(folder) / "checkpoint.pth"


def has_weights(folder: Path) -> bool:
    """True when run ``folder`` has finished an epoch (it has weights to predict with)."""
    return weights_file(folder).is_file()


def set_latest(run_folder: Path) -> None:
    """Point ``models/latest`` at ``run_folder`` (a relative symlink, replaced atomically) and
    record it as the latest run of the dataset it trained on (``models/latest.json``)."""
    root = models_dir()
    tmp = root / f".latest.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    target = os.path.relpath(Path(run_folder).resolve(), root.resolve())
    os.symlink(target, tmp)
    os.replace(tmp, root / LATEST)
    dataset = run_dataset(run_folder)
    if dataset is not None:
        store = root / LATEST_JSON
        with locked(store):
            latest = read_json(store, {})
            latest = latest if isinstance(latest, dict) else {}
            latest[dataset] = Path(run_folder).resolve().name
            write_json(store, latest)


def dataset_key(dataset: str | Path) -> str:
    """How ``latest.json`` names a dataset: its folder with ``~`` expanded, absolute, symlinks resolved."""
    return str(Path(str(dataset).strip()).expanduser().resolve())


def run_dataset(run_folder: Path) -> str | None:
    """The resolved folder of the dataset run ``run_folder`` trained on (its card, else its config)."""
    card = read_json(Path(run_folder) / CARD_JSON) or {}
    config = read_json(Path(run_folder) / "config.json") or {}
    data = card.get("dataset") or config.get("data")
    return dataset_key(data) if data else None


def latest_of(dataset: str | Path) -> str | None:
    """The name of the newest finished run trained on ``dataset``, ``None`` when there is none
    (or its folder is gone)."""
    latest = read_json(models_dir() / LATEST_JSON, {})
    name = latest.get(dataset_key(dataset)) if isinstance(latest, dict) else None
    return name if name and (models_dir() / name).is_dir() else None


def run_classes(run_folder: Path) -> list[str]:
    """The class list a run predicts (its card's, else its config's)."""
    card = read_json(Path(run_folder) / CARD_JSON) or {}
    config = read_json(Path(run_folder) / "config.json") or {}
    return list(card.get("classes") or config.get("classes") or [])


class ClassMismatch(WorkbenchError):
    """A run whose classes are not the dataset's; the message says which differ and how to override."""


def class_difference(run_classes: list[str], dataset_classes: list[str]) -> tuple[list[str], list[str]]:
    """``(only the run's, only the dataset's)`` class names; both empty when they match. A dataset
    with no class yet matches any run (its first labels come from the model)."""
    if not dataset_classes:
        return [], []
    run_only = [c for c in run_classes if c not in dataset_classes]
    dataset_only = [c for c in dataset_classes if c not in run_classes]
    return run_only, dataset_only


def choose_run(
    dataset: str | Path,
    classes: list[str],
    *,
    run: str | Path | None = None,
    any_classes: bool = False,
    override: str = "--model RUN --any-classes",
) -> str:
    """The run to use on ``dataset`` (class list ``classes``): ``run`` when given, else the
    latest run trained on it (``latest:<folder>``), else ``latest``. Raises ``ClassMismatch``
    when the run's classes differ from ``classes``, unless ``any_classes``; ``override`` is how
    the caller's user asks for it (named in the message)."""
    if run is None:
        run = f"{LATEST_OF}{dataset_key(dataset)}" if latest_of(dataset) else LATEST
    spec = str(run)
    folder = resolve_run(spec)
    check_classes(
        folder.name, run_classes(folder), dataset=dataset, classes=classes, any_classes=any_classes, override=override
    )
    return spec


def check_classes(
    name: str,
    model_classes: list[str],
    *,
    dataset: str | Path,
    classes: list[str],
    any_classes: bool = False,
    override: str = "--model RUN --any-classes",
) -> None:
    """``choose_run``'s check, for a model already loaded (an exported file): ``ClassMismatch``
    when model ``name``'s classes differ from the dataset's, unless ``any_classes``."""
    run_only, dataset_only = class_difference(list(model_classes), list(classes))
    if (run_only or dataset_only) and not any_classes:
        parts = [
            f"only the model has {', '.join(run_only)}" if run_only else "",
            f"only the dataset has {', '.join(dataset_only)}" if dataset_only else "",
        ]
        raise ClassMismatch(
            f"model {name} was not trained on the classes of {dataset_key(dataset)}: "
            f"{'; '.join(p for p in parts if p)}. Train a model on this dataset, or use this one anyway "
            f"with {override}"
        )


def latest_name() -> str | None:
    link = models_dir() / LATEST
    return link.resolve().name if link.exists() else None


def model_for(
    data: str | Path | None,
    *,
    fmt: str | None = None,
    run: str | None = None,
    any_classes: bool = False,
    override: str = "--model RUN --any-classes",
) -> str:
    """The run spec the demo serves for dataset ``data`` (format ``fmt``): ``run`` when given,
    else the latest run trained on ``data`` (``latest:<folder>``, which the demo follows as new
    runs finish), else ``latest``. Its classes must be the dataset's (``ClassMismatch``
    otherwise, unless ``any_classes``; ``override`` says how the user asks for it). No dataset:
    ``run`` or ``latest``, unchecked. No model yet: the spec unchecked (the demo starts, says
    so, and serves the first run trained on ``data``)."""
    if data is None:
        return run or LATEST
    if run is None and latest_of(data) is None:
        try:
            resolve_run(LATEST)
        except WorkbenchError:
            return f"{LATEST_OF}{dataset_key(data)}"
    elif run is not None:
        try:
            resolve_run(run)
        except WorkbenchError:
            return run  # the caller loads it and says what is missing
    classes = open_dataset(data, fmt).dataset.classes
    return choose_run(data, classes, run=run, any_classes=any_classes, override=override)


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a JSON-lines file (a half-written last line is skipped)."""
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
    except OSError:
        return []
    return rows


def base_card(
    folder: Path,
    config: dict[str, Any],
    prepared: dict[str, Any],
    *,
    engine: str,
    weights: dict[str, Any],
    device: str,
    epochs_done: int,
    best_metrics: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """The model card's fields every engine writes.

    ``config`` is the run's ``config.json`` dict, ``prepared`` what ``run.prepare_run`` returned
    (dataset, splits, hash, version); ``extra`` keys are added (or override) as given.
    """
    import torch  # for its version only: reading the registry stays torch-free

    card = {
        "run": folder.name,
        "engine": engine,
        "model": config["model"],
        "weights": weights,
        "dataset": str(Path(config["data"]).resolve()),
        "dataset_format": prepared["dataset"].format,
        "dataset_hash": prepared["hash"],
        "dataset_version": prepared["version"],
        "split": prepared["how"],
        "train_images": len(prepared["train"]),
        "val_images": len(prepared["val"]),
        "classes": list(config["classes"]),
        "epochs": config["epochs"],
        "epochs_done": epochs_done,
        "imgsz": config["imgsz"],
        "batch": config["batch"],
        "processes": 1,
        "device": device,
        "best_metrics": best_metrics,
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "torch": torch.__version__,
    }
    if config.get("recipe"):
        card["recipe"] = config["recipe"]
    if config.get("time"):
        card["time_limit_minutes"] = config["time"]
    card.update(extra)
    return card


def write_model_card(folder: Path, card: dict[str, Any]) -> None:
    """Write ``model_card.json`` and ``MODEL_CARD.md`` into a run folder."""
    write_json(folder / CARD_JSON, card)
    best = card.get("best_metrics") or {}
    weights = card.get("weights") or {}
    lines = [
        f"# Model card: {card.get('run')}",
        "",
        f"- **Engine / model**: {card.get('engine')} / `{card.get('model')}`",
        f"- **Starting weights**: {weights.get('kind')} ({weights.get('source')}{', ' + str(weights.get('weights')) if weights.get('weights') else ''})",
        f"- **Dataset**: `{card.get('dataset')}` ({card.get('dataset_format')}), version `{card.get('dataset_version') or '-'}`, annotations sha256 `{card.get('dataset_hash')}`",
        f"- **Images**: {card.get('train_images')} train, {card.get('val_images')} val ({card.get('split')})",
        f"- **Classes** ({len(card.get('classes', []))}): {', '.join(card.get('classes', []))}",
        f"- **Epochs**: {card.get('epochs_done')} of {card.get('epochs')}, image size {card.get('imgsz')} px, batch {card.get('batch')}",
        *(
            [
                f"- **Time limit**: {card['time_limit_minutes']} min"
                + (", reached" if card.get("stopped_by_time") else "")
            ]
            if card.get("time_limit_minutes")
            else []
        ),
        f"- **Device**: {card.get('device')}",
        f"- **Finished**: {card.get('finished_at')}",
        "",
        "## Best validation metrics (COCO, pycocotools)",
        "",
        "| metric | value |",
        "| --- | --- |",
        *[f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in best.items()],
        "",
        "## Use",
        "",
        "```python",
        "from workbench.inference.predict import load_predictor",
        f"predictor = load_predictor({card.get('run')!r})",
        "detections = predictor.predict(image_rgb_uint8)",
        "```",
        "",
    ]
    atomic_write(folder / CARD_MD, "\n".join(lines))


def list_runs() -> list[dict[str, Any]]:
    """Every run folder in the registry, newest first: name, path, config, card, last metrics."""
    root = models_dir()
    runs = []
    for path in sorted(root.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True):
        if path.name == LATEST or path.is_symlink() or not (path / "config.json").is_file():
            continue
        metrics = read_jsonl(path / "metrics.jsonl")
        runs.append(
            {
                "run": path.name,
                "path": path,
                "config": read_json(path / "config.json", {}),
                "card": read_json(path / CARD_JSON),
                "metrics": metrics,
                "progress": read_json(path / "progress.json", {}),
            }
        )
    return runs


def runs_with_weights() -> list[str]:
    """Names of the runs that can predict (``has_weights``), newest first; none when the
    registry folder cannot be read."""
    try:
        return [run["run"] for run in list_runs() if has_weights(run["path"])]
    except OSError:
        return []
