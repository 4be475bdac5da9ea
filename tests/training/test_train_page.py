"""The Train page renders headless (AppTest), lists runs, and starts a job from its form."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import PROJECT, copy_voc_subset
from workbench.datasets.catalog import resolve_path
from workbench.training import jobs
from workbench.training.recipes import best_recipe, recipe_config
from workbench.training.registry import run_dir, write_json

TIMEOUT = 90


def page() -> AppTest:
    return AppTest.from_file(str(PROJECT / "pages" / "train.py"), default_timeout=TIMEOUT)


def test_page_renders_with_no_run_yet():
    at = page().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Train"
    assert any("No training run yet" in i.value for i in at.info)
    assert any(
        f"Model (from the recipe): `{recipe_config(best_recipe('cpu'))['model']}`" in m.value for m in at.markdown
    )
    at.selectbox(key="train_recipe").select("(none)").run()
    assert any(o.startswith("fasterrcnn_mobilenet_v2: ") for o in at.selectbox(key="train_model_torchvision").options)


def test_page_shows_a_run_with_its_charts_and_starts_a_job(tiny_voc, monkeypatch):
    # a finished-looking run recorded by hand: no training needed to render it
    folder = run_dir("shown")
    folder.mkdir(parents=True)
    (folder / "losses.jsonl").write_text(
        "".join(json.dumps({"epoch": 1, "iteration": i, "loss": 2.0 - i / 10}) + "\n" for i in range(5))
    )
    (folder / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "AP": 0.25, "AP50": 0.5}) + "\n")
    (folder / "train.log").write_text("hello from the log\n")
    write_json(folder / "progress.json", {"epoch": 1, "epochs": 1, "global_iteration": 5, "total_iterations": 5})
    with jobs.connect() as con:
        con.execute(
            "INSERT INTO jobs (run, state, created, config, folder) VALUES ('shown', 'cancelled', 0, ?, ?)",
            (json.dumps({"data": str(tiny_voc), "model": "fasterrcnn_mobilenet_v2", "epochs": 1}), str(folder)),
        )
    started = []
    monkeypatch.setattr(jobs, "start_job", lambda config, run=None, **_: started.append(config) or "new-run")
    at = page().run()
    assert not at.exception, at.exception
    assert {m.label: m.value for m in at.metric}["Best val AP"] == "0.250"
    assert len(at.get("vega_lite_chart")) == 2  # the loss and the validation mAP charts
    assert any("hello from the log" in c.value for c in at.code)
    assert [b.label for b in at.button if b.label == "Resume"]
    table = at.dataframe[0].value
    assert list(table["run"]) == ["shown"] and table["best AP"][0] == pytest.approx(0.25)
    # the form starts a job with the chosen options (no recipe: this machine's best one is preselected)
    assert at.selectbox(key="train_recipe").value == best_recipe("cpu")
    at.selectbox(key="train_recipe").select("(none)").run()
    at.selectbox(key="train_dataset").select("Other folder...")
    at.text_input(key="train_other").input(str(tiny_voc))
    at.number_input(key="train_epochs").set_value(3)
    at.button[0].click()  # the form's Train button
    at.run()
    assert not at.exception, at.exception
    assert started and started[0]["data"] == str(tiny_voc) and started[0]["epochs"] == 3
    assert any("Started **new-run**" in s.value for s in at.success)


def test_other_folder_accepts_a_home_relative_path(shared, tmp_path, monkeypatch):
    """``~/voc`` under "Other folder" starts a job on ``$HOME/voc``, as the Datasets page accepts it."""
    home = tmp_path / "home"
    data = copy_voc_subset(shared, home / "voc", ["maksssksksss0", "maksssksksss1"])
    monkeypatch.setenv("HOME", str(home))
    started = []
    monkeypatch.setattr(jobs, "start_job", lambda config, run=None, **_: started.append(config) or "new-run")
    at = page().run()
    at.selectbox(key="train_dataset").select("Other folder...")
    at.text_input(key="train_other").input("~/voc")
    at.button[0].click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert started and started[0]["data"] == str(data.resolve())
    assert resolve_path("~/voc") == data.resolve()  # the same text on the Datasets page


@pytest.mark.parametrize(
    "progress, text",
    [
        ({"phase": "faces", "images_done": 3, "images": 12}, "finding faces: image 3/12"),
        (
            {
                "phase": "detector",
                "detector_iterations": 40,
                "loss": 2.5,
                "detector_seconds": 120.0,
                "detector_budget": 480.0,
            },
            "fine-tuning the face detector: iteration 40, loss 2.5, 120 of up to 480 s",
        ),
    ],
)
def test_two_stage_phases_show_their_progress(tiny_voc, progress, text):
    folder = run_dir("faces")
    folder.mkdir(parents=True)
    write_json(folder / "progress.json", {"epoch": 0, "epochs": 10, **progress})
    with jobs.connect() as con:
        con.execute(
            "INSERT INTO jobs (run, state, created, config, folder) VALUES ('faces', 'cancelled', 0, ?, ?)",
            (json.dumps({"data": str(tiny_voc), "engine": "two-stage", "epochs": 10}), str(folder)),
        )
    at = page().run()
    assert not at.exception, at.exception
    bars = at.get("progress")
    assert len(bars) == 1 and bars[0].proto.text == text
