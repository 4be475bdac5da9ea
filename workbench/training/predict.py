"""Run a trained model: the one API that evaluation, FiftyOne and the demo build on.

    from workbench.training.predict import load_predictor
    predictor = load_predictor("latest")            # or a run name, or a run folder
    det = predictor.predict(image)                  # image: (H, W, 3) uint8 RGB
    det.boxes, det.scores, det.class_ids            # (N, 4) x1 y1 x2 y2 pixels, (N,), (N,)
    predictor.classes[det.class_ids[0]]

Boxes are in the pixel coordinates of the image passed in (the model resizes internally
and maps back), with the workbench's convention (0-based, ``x2``/``y2`` exclusive).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.errors import WorkbenchError
from workbench.training.registry import CARD_JSON, read_json, resolve_run

log = logging.getLogger(__name__)


@dataclass
class Detections:
    """Detections in one image, as parallel arrays.

    Attributes:
        boxes: ``(N, 4)`` float64 pixels ``x1, y1, x2, y2`` in the original image.
        scores: ``(N,)`` float64 confidences in ``[0, 1]``, highest first.
        class_ids: ``(N,)`` int64 indices into ``Predictor.classes``.
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    class_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.class_ids = np.asarray(self.class_ids, dtype=np.int64).reshape(-1)
        n = len(self.boxes)
        if self.scores.shape != (n,) or self.class_ids.shape != (n,):
            raise ValueError(f"{n} boxes but {len(self.scores)} scores and {len(self.class_ids)} class ids")

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: Any) -> Detections:
        """A subset: ``det[det.scores > 0.5]``, ``det[:3]``."""
        return Detections(self.boxes[index], self.scores[index], self.class_ids[index])


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` is CUDA when available, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise WorkbenchError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 RGB array -> ``(3, H, W)`` float32 tensor in ``[0, 1]``."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise WorkbenchError(f"expected an (H, W, 3) RGB image, got shape {array.shape}")
    if array.dtype != np.uint8:
        raise WorkbenchError(f"expected a uint8 image, got {array.dtype}")
    array = np.array(array[:, :, :3], copy=True)  # decoded images are often read-only
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


class Predictor:
    """A trained model ready to run.

    Attributes:
        classes: the class list frozen into the run; ``class_ids`` index it.
        card: the run's model card (``model_card.json``), or a card built from its config
            when the run has not finished (a checkpoint of an unfinished run can be used too).
        run_dir: the run folder.
        device: the torch device the model runs on.
    """

    def __init__(
        self, model: torch.nn.Module, *, classes: list[str], card: dict[str, Any], run_dir: Path, device: torch.device
    ) -> None:
        self.model = model.eval().to(device)
        self.classes = list(classes)
        self.card = card
        self.run_dir = run_dir
        self.device = device

    def __repr__(self) -> str:
        return f"Predictor({self.run_dir.name!r}, model={self.card.get('model')!r}, classes={self.classes})"

    @torch.inference_mode()
    def predict_batch(
        self,
        images: Sequence[np.ndarray],
        score_threshold: float = 0.25,
        iou_threshold: float = 0.5,
        max_detections: int = 300,
    ) -> list[Detections]:
        """Detect objects in each ``(H, W, 3)`` uint8 RGB image (sizes may differ)."""
        if not len(images):
            return []
        from workbench.training.models import set_postprocess

        set_postprocess(
            self.model, score_threshold=score_threshold, iou_threshold=iou_threshold, max_detections=max_detections
        )
        tensors = [image_tensor(im).to(self.device) for im in images]
        outputs = self.model(tensors)
        results = []
        for out in outputs:
            keep = out["scores"] >= score_threshold
            order = torch.argsort(out["scores"][keep], descending=True)
            results.append(
                Detections(
                    boxes=out["boxes"][keep][order].double().cpu().numpy(),
                    scores=out["scores"][keep][order].double().cpu().numpy(),
                    class_ids=(out["labels"][keep][order] - 1).cpu().numpy(),  # label 0 is the background
                )
            )
        return results

    def predict(
        self, image: np.ndarray, score_threshold: float = 0.25, iou_threshold: float = 0.5, max_detections: int = 300
    ) -> Detections:
        """Detect objects in one ``(H, W, 3)`` uint8 RGB image."""
        return self.predict_batch(
            [image], score_threshold=score_threshold, iou_threshold=iou_threshold, max_detections=max_detections
        )[0]


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint dict read safely (``weights_only=True``) onto the CPU."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise WorkbenchError(f"{path}: cannot read checkpoint: {e}") from e


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
        from workbench.training.engine_detectron2 import load_model as load_d2

        model = load_d2(folder, config, torch_device)
        return Predictor(model, classes=config["classes"], card=card, run_dir=folder, device=torch_device)

    if config.get("engine") == "two-stage":  # face detector + crop classifier (face-then-classify recipe)
        from workbench.training.two_stage import load_two_stage

        return load_two_stage(folder, config, card, torch_device)

    from workbench.training.models import build_model, load_matching

    file = folder / "model_best.pth" if (folder / "model_best.pth").is_file() else folder / "checkpoint.pth"
    checkpoint = load_checkpoint(file)
    classes = list(checkpoint.get("classes") or config["classes"])
    model = build_model(config["model"], len(classes) + 1, weights=None, imgsz=int(config["imgsz"]))
    load_matching(model, checkpoint["model"])
    log.info("loaded %s (%s, epoch %s)", file, config["model"], checkpoint.get("epoch"))
    return Predictor(model, classes=classes, card=card, run_dir=folder, device=torch_device)


def detections_to_json(det: Detections, classes: list[str]) -> list[dict[str, Any]]:
    """Plain JSON records ``{"box": [x1, y1, x2, y2], "score", "class_id", "class"}``."""
    return [
        {"box": [round(float(v), 2) for v in b], "score": round(float(s), 4), "class_id": int(c), "class": classes[c]}
        for b, s, c in zip(det.boxes, det.scores, det.class_ids, strict=True)
    ]


__all__ = ["Detections", "Predictor", "detections_to_json", "load_predictor", "pick_device", "resolve_run"]
