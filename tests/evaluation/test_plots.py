"""workbench.evaluation.plots: the three PNG plots of a report, and the ground truth beside the
predictions drawn on one evaluated image."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tests.evaluation.conftest import CLASSES, TWO_IMAGES, make_dataset, perfect, report_of
from workbench.annotations import Detections
from workbench.drawing import class_colour
from workbench.evaluation.plots import ap_figure, confusion_figure, draw_evaluated, pr_figure, save_plots
from workbench.evaluation.report import PLOTS


def test_save_plots_writes_three_pngs(tmp_path):
    dataset = make_dataset(tmp_path, TWO_IMAGES)
    report = report_of(dataset, perfect(dataset))
    written = save_plots(report, tmp_path)
    assert [p.name for p in written] == list(PLOTS)
    for path in written:
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 100


def test_figures_leave_out_classes_without_ground_truth(tmp_path):
    dataset = make_dataset(tmp_path, [([[10, 10, 60, 80]], [0])])  # only class a has a box
    report = report_of(dataset, perfect(dataset))
    (ax,) = ap_figure(report).axes
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a (1)"]
    assert len(pr_figure(report).axes[0].lines) == 2  # class a at IoU 0.50 and 0.75
    ticks = [t.get_text() for t in confusion_figure(report).axes[0].get_xticklabels()]
    assert ticks == [*CLASSES, "background"]


def rgb(colour: str) -> tuple[int, int, int]:
    from PIL import ImageColor

    return ImageColor.getrgb(colour)[:3]


def test_draw_evaluated_colours_the_ground_truth_by_the_runs_classes(tmp_path):
    dataset = make_dataset(tmp_path, [([[10, 10, 60, 60], [100, 10, 150, 60]], [0, 2])])
    record = dataset.images[0]
    image = Image.new("RGB", (400, 300), "white")
    run_classes = ["c", "a"]  # the run's order differs from the dataset's; "b" is unknown to it
    detections = Detections([[200, 100, 260, 160], [300, 100, 360, 160]], [0.9, 0.1], [1, 0])
    drawn = np.asarray(
        draw_evaluated(
            image, dataset=dataset, record=record, detections=detections, classes=run_classes, score_threshold=0.5
        )
    )
    assert tuple(drawn[30, 10]) == rgb(class_colour(1))  # ground-truth "a" is the run's class 1
    assert tuple(drawn[30, 100]) == rgb(class_colour(0))  # ground-truth "c" is the run's class 0
    assert (drawn[100:161, 200] != 255).any()  # the prediction scoring 0.9 is drawn (dashed)
    assert (drawn[100:161, 300] == 255).all()  # the one at 0.1 is below the threshold
    empty = draw_evaluated(
        image, dataset=dataset, record=record, detections=None, classes=run_classes, score_threshold=0
    )
    assert (np.asarray(empty)[100:161, 200] == 255).all()
