"""workbench/demo/gradio_app.py: the ``gr.Blocks`` of the demo, and its handlers as Gradio calls
them (a turned-down request becomes Gradio's message box); no server, a fake predictor."""

from __future__ import annotations

import inspect
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from tests.conftest import write_image
from tests.demo.conftest import make_run
from workbench.demo.gradio_app import GradioHandlers, build_demo
from workbench.training.registry import set_latest


@pytest.fixture
def handlers(app) -> GradioHandlers:
    return GradioHandlers(app)


def test_every_event_has_an_api_name(app):
    demo = build_demo(app)
    names = {fn.api_name for fn in demo.fns.values()}
    assert None not in names
    assert {"detect_image", "detect_webcam", "detect_video", "model_card"} <= names


def test_handlers_keep_the_parameters_that_name_the_api(app, handlers):
    for name in ("detect_image", "detect_frame", "detect_video"):
        plain = list(inspect.signature(getattr(app, name)).parameters)
        shown = list(inspect.signature(getattr(handlers, name)).parameters)
        assert shown[:4] == plain[:4], name
    assert "progress" in inspect.signature(handlers.detect_video).parameters  # Gradio fills gr.Progress in


def test_no_model_is_a_message_box(handlers, app):
    image = write_image(Path(app.out_dir).parent / "a.png", 200, 150)
    with pytest.raises(gr.Error, match="workbench train") as raised:
        handlers.detect_image(str(image))
    assert raised.value.title == "No trained model"
    with pytest.raises(gr.Error, match="workbench train"):
        handlers.detect_video(str(image))
    assert "workbench train --data" in handlers.model_card()[0]


def test_bad_and_large_inputs_are_message_boxes(handlers, tmp_path):
    set_latest(make_run("run-a"))
    with pytest.raises(gr.Error, match="Upload an image"):
        handlers.detect_image(None)
    with pytest.raises(gr.Error, match="Upload a video"):
        handlers.detect_video(None)
    with pytest.raises(gr.Error, match="at most 500 px") as raised:
        handlers.detect_image(str(write_image(tmp_path / "big.png", 501, 100)))
    assert raised.value.title == "Too large"
    with pytest.raises(gr.Error, match="at most 500 px"):
        handlers.detect_frame(np.zeros((501, 10, 3), np.uint8))


def test_a_good_image_goes_through(handlers, tmp_path):
    set_latest(make_run("run-a"))
    annotated, rows, _, _, status = handlers.detect_image(str(write_image(tmp_path / "p.png", 200, 150)), 0.3, 0.5)
    assert Image.open(annotated).size == (200, 150) and len(rows) == 2 and "**2** detection(s)" in status
    assert handlers.detect_frame(np.zeros((120, 160, 3), np.uint8), 0.1, 0.5).shape == (120, 160, 3)
