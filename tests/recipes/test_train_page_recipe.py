"""The Train page's recipe selector fills in the recipe's settings (AppTest, no training)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.conftest import PROJECT
from workbench.training import jobs


def test_recipe_selector_starts_a_job_with_the_recipe_settings(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(jobs, "start_job", lambda config, run=None: started.append(config) or "new-run")
    at = AppTest.from_file(str(PROJECT / "pages" / "train.py"), default_timeout=90).run()
    assert not at.exception, at.exception
    assert "face-then-classify" not in at.selectbox(key="train_recipe").options  # not trainable yet
    at.selectbox(key="train_recipe").select("retinanet-frozen").run()
    assert not at.exception, at.exception
    assert at.number_input(key="train_epochs_retinanet-frozen").value == 6
    at.selectbox(key="train_dataset").select("Other folder...")
    at.text_input(key="train_other").input(str(tmp_path))
    at.number_input(key="train_batch_retinanet-frozen").set_value(2)
    at.button[0].click()
    at.run()
    assert not at.exception, at.exception
    config = started[0]
    assert config["recipe"] == "retinanet-frozen" and config["model"] == "retinanet_resnet50_fpn_v2"
    assert config["freeze_backbone"] is True and config["rotation"] == 10.0 and config["batch"] == 2
