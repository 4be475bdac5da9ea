"""A trained torch model ready to run: ``Predictor`` (``predict(image) -> Detections``), the device choice, checkpoints.

Boxes are in the pixel coordinates of the image passed in (the model resizes internally
and maps back), with the workbench's convention (0-based, ``x2``/``y2`` exclusive).
``workbench.inference.predict.load_predictor`` builds one from a registered run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.annotations import Detections
from workbench.errors import WorkbenchError
from workbench.training.models import set_postprocess

log = logging.getLogger(__name__)


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


__all__ = ["Predictor", "image_tensor", "load_checkpoint", "pick_device"]
