"""workbench.training.validate: the engines' per-epoch COCO AP of a torch model, on a stand-in
detector that answers with boxes it is given (so the expected AP is known exactly)."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import write_image
from workbench.annotations import Dataset, ImageRecord
from workbench.metrics import STAT_NAMES
from workbench.splits import ClassMap
from workbench.training.validate import evaluate

CLASSES = ["cat", "dog"]


class Oracle(torch.nn.Module):
    """A torchvision-like detector: ``model(images) -> [{"boxes", "scores", "labels"}]``, here the
    next answers of a fixed list (one per image, in loader order); labels are class id + 1."""

    def __init__(self, answers: list[tuple[list, list[int]]]) -> None:
        super().__init__()
        self.answers = iter(answers)
        self.seen: list[tuple[int, ...]] = []
        self.roi_heads = torch.nn.Module()  # set_postprocess writes its thresholds here

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out = []
        for image in images:
            assert not self.training, "evaluate runs the model in eval mode"
            self.seen.append(tuple(image.shape))
            boxes, labels = next(self.answers)
            out.append(
                {
                    "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                    "scores": torch.full((len(labels),), 0.9),
                    "labels": torch.tensor(labels, dtype=torch.int64) + 1,
                }
            )
        return out


@pytest.fixture
def data(tmp_path) -> Dataset:
    for name in ("a.png", "b.png"):
        write_image(tmp_path / name, 200, 100)
    return Dataset(
        tmp_path,
        "voc",
        list(CLASSES),
        [
            ImageRecord("a.png", 200, 100, [[10, 10, 60, 60], [100, 20, 150, 90]], [0, 1]),
            ImageRecord("b.png", 200, 100, [[20, 20, 80, 70]], [1]),
        ],
    )


def run(data: Dataset, answers, **kwargs) -> tuple[dict[str, float], Oracle]:
    model = Oracle(answers)
    model.train()
    stats = evaluate(model, data, data.images, ClassMap.build(data, CLASSES), device=torch.device("cpu"), **kwargs)
    assert model.training, "the model's training mode is restored"
    assert model.roi_heads.score_thresh == 0.001 and model.roi_heads.detections_per_img == 100
    return stats, model


def test_the_ground_truth_as_predictions_scores_one(data):
    answers = [(r.boxes.tolist(), r.class_ids.tolist()) for r in data.images]
    stats, model = run(data, answers, batch=1)
    assert set(STAT_NAMES) <= set(stats)
    assert stats["AP"] == pytest.approx(1.0) and stats["AP/cat"] == pytest.approx(1.0)
    assert stats["AP/dog"] == pytest.approx(1.0)
    assert model.seen == [(3, 100, 200), (3, 100, 200)]  # full size: the model resizes itself


def test_a_wrong_class_and_a_miss_cost(data):
    answers = [([[10, 10, 60, 60]], [1]), ([[20, 20, 80, 70]], [1])]  # the cat called a dog; a's dog missed
    stats, _ = run(data, answers, batch=2)
    assert stats["AP/cat"] == pytest.approx(0.0)
    assert 0.0 < stats["AP/dog"] < 1.0


def test_stopping_early_scores_what_was_seen(data):
    answers = [(r.boxes.tolist(), r.class_ids.tolist()) for r in data.images]
    stats, model = run(data, answers, batch=1, should_stop=lambda: True)
    assert model.seen == [] and stats["AP"] == 0.0
