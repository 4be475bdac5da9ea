"""The Train page's recipe selector fills in the recipe's settings (AppTest, no training)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.conftest import PROJECT
from workbench.training import jobs
from workbench.training.recipes import RECIPES, fallback_note, recipe_config


def run_recipe(at: AppTest, recipe: str, folder: str, **changes: int) -> None:
    at.selectbox(key="train_recipe").select(recipe).run()
    assert not at.exception, at.exception
    at.selectbox(key="train_dataset").select("Other folder...")
    at.text_input(key="train_other").input(folder)
    for key, value in changes.items():
        at.number_input(key=f"train_{key}_{recipe}").set_value(value)
    at.button[0].click()
    at.run()
    assert not at.exception, at.exception


def test_recipe_selector_starts_a_job_with_the_recipe_settings(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(jobs, "start_job", lambda config, run=None, **_: started.append(config) or "new-run")
    at = AppTest.from_file(str(PROJECT / "pages" / "train.py"), default_timeout=90).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="train_recipe").options == ["(none)", *RECIPES]
    assert any("On a CPU, **face-then-classify** for faces" in c.value for c in at.caption)
    at.selectbox(key="train_recipe").select("retinanet-frozen").run()
    note = fallback_note("retinanet-frozen", "torchvision", recipe_config("retinanet-frozen", device="cpu")["model"])
    assert (note in [i.value for i in at.info]) == bool(note)  # the stand-in, said before training
    assert at.number_input(key="train_epochs_retinanet-frozen").value == 12
    assert at.number_input(key="train_time_retinanet-frozen").value == 30
    run_recipe(at, "retinanet-frozen", str(tmp_path), batch=2, time=10)
    config = started[0]
    resolved = recipe_config("retinanet-frozen", device="cpu")["model"]  # MobileNetV2 without ResNet-50 weights
    assert config["recipe"] == "retinanet-frozen" and config["model"] == resolved
    assert config["freeze_backbone"] is True and config["rotation"] == 10.0
    assert config["batch"] == 2 and config["time"] == 10 and config["epochs"] == 12  # changed fields win

    run_recipe(at, "face-then-classify", str(tmp_path))
    config = started[1]
    assert config["engine"] == "two-stage" and config["detector"] == "retinaface" and config["time"] == 30
    assert config["imgsz"] == 128 and config["data"] == str(tmp_path)
