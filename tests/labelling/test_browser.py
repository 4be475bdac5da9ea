"""The suggestion review in a real browser (Debian's Chromium through Playwright): suggestions are
drawn dashed on the canvas beside the accepted boxes; the keyboard rejects (X, the button's
shortcut), accepts (A, on the canvas), goes to the next (N) and the previous (P) image; accepting writes the VOC file, rejecting writes nothing. Two sessions
saving one VOC file (the second is refused, naming who saved) and different images of one COCO
file (both land)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.app.conftest import SHARED
from tests.app.test_browser import CHROMIUM, served_page
from tests.labelling.test_canvas_browser import Canvas
from workbench.datasets import index
from workbench.formats import get_format, voc
from workbench.labelling import suggestions

SHOTS = os.environ.get("WORKBENCH_SCREENSHOTS")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api")


def shot(page, tmp_path: Path, name: str) -> None:
    if page.locator(".wb-canvas").count():
        page.locator(".wb-canvas[data-shown]").wait_for()  # the canvas has drawn its image
    page.wait_for_function("() => [...document.images].every((i) => i.complete)")
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / f"{name}.png", Path(SHOTS) / f"{name}.png")
    errors = page.locator("[data-testid='stException']")
    assert errors.count() == 0, errors.first.inner_text()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_review_suggestions_with_the_keyboard(voc8, tmp_path):
    first, second = index.open_dataset(voc8).dataset.images[:2]
    data = suggestions.load(voc8)
    data["images"][first.path] = [
        {"id": 0, "box": [150, 20, 210, 90], "score": 0.91, "label": "with_mask"},
        {"id": 1, "box": [300, 120, 360, 190], "score": 0.64, "label": "without_mask"},
        {"id": 2, "box": [20, 150, 80, 220], "score": 0.35, "label": "mask_weared_incorrect"},
    ]
    data["next_id"] = 3
    suggestions.save(voc8, data)
    xml = voc8 / first.annotation
    before = digest(xml)
    with served_page(voc8, tmp_path, width=1500, height=1100) as (page, url):
        page.goto(url)
        page.locator("[data-testid='stSidebarNav'] a", has_text="Annotate").click()
        page.get_by_text("Suggestions (3)").wait_for()
        canvas = Canvas(page)
        canvas.shown(first.path)
        assert page.locator(".wb-overlay rect[data-suggestion]").count() == 3  # drawn dashed
        shot(page, tmp_path, "suggest-1-review")
        page.get_by_text("Suggestions (3)").click()  # focus the page, not an input: the button's X
        page.keyboard.press("x")
        page.get_by_text("Suggestions (2)").wait_for()
        assert [s["id"] for s in suggestions.pending(voc8, first.path)] == [1, 2]
        assert digest(xml) == before  # rejecting writes nothing
        page.locator(".wb-overlay rect[data-suggestion]").nth(2).wait_for(state="detached")
        canvas.click(330, 155)  # on the canvas: select suggestion 1, then A
        page.locator(".wb-canvas[data-selected='sugg:0']").wait_for()
        page.keyboard.press("a")
        page.get_by_text("Accepted; saved").wait_for()
        shot(page, tmp_path, "suggest-2-accepted")
        record = voc.load(voc8).record(first.path)
        assert len(record) == len(first) + 1 and record.boxes[-1].tolist() == [300, 120, 360, 190]
        assert [s["id"] for s in suggestions.pending(voc8, first.path)] == [2]
        page.get_by_text("Suggestions (1)").click()
        page.keyboard.press("n")
        page.get_by_text(second.path).first.wait_for()
        shot(page, tmp_path, "suggest-3-next")
        page.get_by_text(second.path).first.click()
        page.keyboard.press("p")
        page.get_by_text("Suggestions (1)").wait_for()
        shot(page, tmp_path, "suggest-4-back")


def annotate_page(page, url: str):
    page.goto(url)
    page.locator("[data-testid='stSidebarNav'] a", has_text="Annotate").click()
    page.get_by_role("button", name="Delete box").wait_for()
    return page


def delete_boxes_and_save(page, count: int = 1) -> None:
    for n in range(1, count + 1):
        page.get_by_role("button", name="Delete box").click()
        page.get_by_text(f"{n} unsaved change").wait_for()
    page.get_by_role("button", name="Save", exact=True).click()


def two_sessions(data: Path, tmp_path: Path):
    """Two browser sessions (separate contexts: separate Streamlit sessions) on one server."""
    return served_page(data, tmp_path, width=1500, height=1100)


def test_two_sessions_edit_the_same_voc_file_and_the_second_is_refused(voc8, tmp_path):
    first = index.open_dataset(voc8).dataset.images[0]
    with two_sessions(voc8, tmp_path) as (alice, url):
        bob = alice.context.browser.new_context(viewport={"width": 1500, "height": 1100}).new_page()
        bob.set_default_timeout(30_000)
        annotate_page(alice, url)
        annotate_page(bob, url)
        delete_boxes_and_save(alice)
        alice.get_by_text(re.compile(r"^Saved \w")).wait_for()
        delete_boxes_and_save(bob, 2)  # not Alice's edit (the same bytes would just be "saved nothing")
        refusal = bob.get_by_text("changed on disk since the dataset was loaded")
        refusal.wait_for()
        assert "saved by" in refusal.inner_text()
        shot(bob, tmp_path, "two-sessions-voc-refused")
    assert len(voc.load(voc8).record(first.path)) == len(first) - 1  # Alice's edit, not both


def test_two_sessions_edit_different_images_of_one_coco_file_and_both_land(tmp_path):
    data = tmp_path / "coco" / "valid"
    shutil.copytree(SHARED / "roboflow-coco" / "valid", data, copy_function=shutil.copyfile)
    root = data.parent
    images = index.open_dataset(root, "coco").dataset.images
    assert len(images[0]) and len(images[1])
    with two_sessions(root, tmp_path) as (alice, url):
        bob = alice.context.browser.new_context(viewport={"width": 1500, "height": 1100}).new_page()
        bob.set_default_timeout(30_000)
        annotate_page(alice, url)
        annotate_page(bob, url)
        bob.get_by_role("button", name="Next ▶").click()
        bob.get_by_text(images[1].path).first.wait_for()
        delete_boxes_and_save(alice)
        alice.get_by_text(re.compile(r"^Saved \w")).wait_for()
        delete_boxes_and_save(bob)
        bob.get_by_text(re.compile(r"^Saved \w")).wait_for()
        shot(bob, tmp_path, "two-sessions-coco-merged")
    after = get_format("coco").load(root).images
    assert [len(r) for r in after[:2]] == [len(images[0]) - 1, len(images[1]) - 1]
