"""``D2Detector``: a trained detectron2 model behind torchvision's detection interface, so that
``Predictor`` and the per-epoch evaluation use a detectron2 run unchanged."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


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
