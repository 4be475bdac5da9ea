"""Load a trained run as a predictor: the one API that evaluation, FiftyOne and the demo build on.

    from workbench.inference.predict import load_predictor
    predictor = load_predictor("latest")            # or a run name, or a run folder
    det = predictor.predict(image)                  # image: (H, W, 3) uint8 RGB
    det.boxes, det.scores, det.class_ids            # (N, 4) x1 y1 x2 y2 pixels, (N,), (N,)
    predictor.classes[det.class_ids[0]]

Boxes are in the pixel coordinates of the image passed in (the model resizes internally
and maps back), with the workbench's convention (0-based, ``x2``/``y2`` exclusive).
"""

from __future__ import annotations

import logging
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.training.predictor import Predictor, load_checkpoint, pick_device
from workbench.training.registry import CARD_JSON, read_json, resolve_run

log = logging.getLogger(__name__)


def load_predictor(run: str | Path = "latest", device: str = "auto") -> Predictor:
    """The predictor of a registered run: ``"latest"``, a run name or a run folder.

    Uses the best epoch's weights (``model_best.pth``), else the last checkpoint.
    """
    folder = resolve_run(run)
    config = read_json(folder / "config.json")
    if not config:
        raise WorkbenchError(f"{folder}: config.json missing or unreadable")
    card = read_json(folder / CARD_JSON) or {
        "run": folder.name,
        "engine": config.get("engine"),
        "model": config.get("model"),
        "classes": config.get("classes"),
        "finished": False,
    }
    torch_device = pick_device(device)
    if config.get("engine", "torchvision") == "detectron2":
        from workbench.training.engines.detectron2 import load_model as load_d2

        model = load_d2(folder, config, torch_device)
        return Predictor(model, classes=config["classes"], card=card, run_dir=folder, device=torch_device)

    if config.get("engine") == "two-stage":  # face detector + crop classifier (face-then-classify recipe)
        from workbench.training.engines.two_stage import load_two_stage

        return load_two_stage(folder, config, card, torch_device)

    from workbench.training.models import build_model, load_matching

    file = folder / "model_best.pth" if (folder / "model_best.pth").is_file() else folder / "checkpoint.pth"
    checkpoint = load_checkpoint(file)
    classes = list(checkpoint.get("classes") or config["classes"])
    model = build_model(config["model"], len(classes) + 1, weights=None, imgsz=int(config["imgsz"]))
    load_matching(model, checkpoint["model"])
    log.info("loaded %s (%s, epoch %s)", file, config["model"], checkpoint.get("epoch"))
    return Predictor(model, classes=classes, card=card, run_dir=folder, device=torch_device)
