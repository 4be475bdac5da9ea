"""The Annotate page's canvas in a real browser (Debian's Chromium through Playwright, a real
``streamlit run`` server): draw, resize, relabel with a hotkey, zoom in and move a small box by
3 image pixels, then move on with N. With autosave on, the file on disk holds every change
exactly and the journal's Undo restores its bytes; with autosave off, the guard asks and
nothing is lost. A same-size edit by another tool is refused on Save, and "Reload from disk"
shows the other tool's version. Prints the time from a key press to the change reaching
Python, and the time to show the next image warm."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

from tests.app.conftest import SHARED
from tests.app.test_browser import CHROMIUM, served_page
from tests.conftest import copy_voc_subset
from workbench.datasets import index
from workbench.formats import voc

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api")

STEMS = ["maksssksksss104", "maksssksksss106", "maksssksksss108"]  # in the dataset's order
WARM_TARGET = 0.3  # s: the target for showing the next image warm
# Keys that reach the document, where Streamlit's shortcuts listen (the canvas must stop its own).
LEAKS = "window.leaked = []; document.addEventListener('keydown', (e) => window.leaked.push(e.key))"


class Canvas:
    """The canvas of a page: its image shown, its view (image px -> page px), mouse gestures in
    image pixels."""

    def __init__(self, page) -> None:
        self.page = page
        self.root = page.locator(".wb-canvas")
        self.stage = page.locator(".wb-stage")

    def shown(self, path: str) -> None:
        self.page.locator(f".wb-canvas[data-shown='{path}']").wait_for()

    def at(self, x: float, y: float) -> tuple[float, float]:
        view = json.loads(self.root.get_attribute("data-view"))
        area = self.stage.bounding_box()
        return area["x"] + view["tx"] + x * view["s"], area["y"] + view["ty"] + y * view["s"]

    def scale(self) -> float:
        return json.loads(self.root.get_attribute("data-view"))["s"]

    def into_view(self) -> None:
        self.stage.evaluate("e => e.scrollIntoView({block: 'nearest'})")

    def drag(self, start: tuple[float, float], end: tuple[float, float], steps: int = 8) -> None:
        self.into_view()
        mouse = self.page.mouse
        mouse.move(*self.at(*start))
        mouse.down()
        (ex, ey) = self.at(*end)
        mouse.move(ex, ey, steps=steps)
        mouse.up()

    def click(self, x: float, y: float) -> None:
        self.into_view()
        self.page.mouse.click(*self.at(x, y))


def open_annotate(page, url: str, path: str) -> Canvas:
    page.goto(url)
    page.locator("[data-testid='stSidebarNav'] a", has_text="Annotate").click()
    canvas = Canvas(page)
    canvas.shown(path)
    return canvas


def free_point(record, size: tuple[int, int]) -> tuple[int, int]:
    """A point from which a ``size`` box lies clear of every box of ``record``."""
    w, h = size
    for y in range(4, record.height - h - 4, 4):
        for x in range(4, record.width - w - 4, 4):
            if not any(x - 2 < b[2] and b[0] < x + w + 2 and y - 2 < b[3] and b[1] < y + h + 2 for b in record.boxes):
                return x, y
    raise AssertionError(f"{record.path}: no free place for a {w} x {h} box")


def change_line(page, text: str) -> float:
    """Seconds until the page (Python's unsaved-changes list) shows ``text``."""
    start = time.perf_counter()
    page.get_by_text(text, exact=False).first.wait_for()
    return time.perf_counter() - start


def ms(times: list[float]) -> str:
    return f"median {sorted(times)[len(times) // 2] * 1000:.0f} ms, max {max(times) * 1000:.0f} ms"


def objects(xml: Path) -> list[dict]:
    return voc.parse(xml.read_bytes(), xml.name)[1]


def corners(obj: dict) -> list[float]:
    return [float(obj["bndbox"][t]) for t in ("xmin", "ymin", "xmax", "ymax")]


def dataset(tmp_path: Path):
    """A copy of the three ``STEMS`` images; their records and the class list."""
    data = copy_voc_subset(SHARED, tmp_path / "voc", STEMS)
    opened = index.open_dataset(data).dataset
    assert [r.path.rsplit("/", 1)[-1].split(".")[0] for r in opened.images] == STEMS
    return data, opened.images, opened.classes


def test_canvas_edits_reach_the_file_on_moving_on_and_undo_restores_it(tmp_path):
    data, images, names = dataset(tmp_path)
    first, second = images[0], images[1]
    xml = data / first.annotation
    original = xml.read_bytes()
    small = int(np.argmin((first.boxes[:, 2] - first.boxes[:, 0]) * (first.boxes[:, 3] - first.boxes[:, 1])))
    sx1, sy1, sx2, sy2 = (float(v) for v in first.boxes[small])
    assert sx2 - sx1 <= 16 and sy2 - sy1 <= 16, "the test needs a small box"
    x0, y0 = free_point(first, (40, 34))
    with served_page(data, tmp_path, width=1400, height=1000) as (page, url):
        canvas = open_annotate(page, url, first.path)
        page.evaluate(LEAKS)
        count = len(first)
        # Draw a box with the mouse: it reaches Python at once (no Complete step).
        canvas.drag((x0, y0), (x0 + 30, y0 + 24))
        change_line(page, f"new box {count + 1} ({names[0]}) at ({x0}, {y0})-({x0 + 30}, {y0 + 24})")
        # Resize it from its bottom-right corner, then from its left edge.
        canvas.drag((x0 + 30, y0 + 24), (x0 + 40, y0 + 34))
        change_line(page, f"at ({x0}, {y0})-({x0 + 40}, {y0 + 34})")
        canvas.drag((x0, y0 + 17), (x0 + 2, y0 + 17))
        change_line(page, f"at ({x0 + 2}, {y0})-({x0 + 40}, {y0 + 34})")
        # Relabel it with the hotkeys (2, 1, 2: it ends as class 2); time each key to Python.
        key_to_python = []
        for key in "212":
            start = time.perf_counter()
            page.keyboard.press(key)
            change_line(page, f"new box {count + 1} ({names[int(key) - 1]}) at")
            key_to_python.append(time.perf_counter() - start)
        # Undo and redo within the image; duplicate, then delete the copy.
        page.keyboard.press("Control+z")
        change_line(page, f"new box {count + 1} ({names[0]}) at")
        page.keyboard.press("Control+Shift+z")
        change_line(page, f"new box {count + 1} ({names[1]}) at")
        page.keyboard.press("Control+d")
        change_line(page, f"new box {count + 2} ({names[1]}) at ({x0 + 12}, {y0 + 10})-({x0 + 50}, {y0 + 44})")
        page.keyboard.press("Delete")
        page.get_by_text(f"new box {count + 2} (").wait_for(state="detached")
        # Zoom in around the small box (wheel over it), then move it by 3 image pixels.
        cx, cy = (sx1 + sx2) / 2, (sy1 + sy2) / 2
        page.mouse.move(*canvas.at(cx, cy))
        before = canvas.scale()
        for _ in range(6):
            page.mouse.wheel(0, -120)
        page.keyboard.press("+")
        assert canvas.scale() > 2.5 * before
        canvas.drag((cx, cy), (cx + 3, cy))
        moved = f"({sx1 + 3:g}, {sy1:g})-({sx2 + 3:g}, {sy2:g})"
        change_line(page, f"box {small + 1} ({names[int(first.class_ids[small])]}): moved to {moved}")
        page.get_by_text("2 unsaved change").first.wait_for()
        # Pan with space-drag: the view moves, no box does.
        tx = json.loads(canvas.root.get_attribute("data-view"))["tx"]
        area = canvas.stage.bounding_box()
        page.keyboard.down("Space")
        page.mouse.move(area["x"] + area["width"] / 2, area["y"] + area["height"] / 2)
        page.mouse.down()
        page.mouse.move(area["x"] + area["width"] / 2 + 50, area["y"] + area["height"] / 2, steps=5)
        page.mouse.up()
        page.keyboard.up("Space")
        assert json.loads(canvas.root.get_attribute("data-view"))["tx"] == pytest.approx(tx + 50, abs=1)
        page.get_by_text("2 unsaved change").first.wait_for()
        # N on the canvas: autosaved, and the next image (not the one after: the key is taken once).
        page.keyboard.press("n")
        canvas.shown(second.path)
        page.get_by_text("autosaved on moving on").wait_for()
        after = objects(xml)
        assert len(after) == count + 1
        for k, (a, b) in enumerate(zip(objects_of(original, xml.name), after, strict=False)):
            if k == small:
                assert corners(b) == [v + d for v, d in zip(corners(a), (3, 0, 3, 0), strict=True)]
                assert {t: v for t, v in b.items() if t != "bndbox"} == {t: v for t, v in a.items() if t != "bndbox"}
            else:
                assert b == a, f"object {k + 1} changed"
        saved = voc.load(data).record(first.path)  # the model's 0-based pixels, as drawn
        assert saved.boxes[small].tolist() == [sx1 + 3, sy1, sx2 + 3, sy2]
        assert saved.boxes[-1].tolist() == [x0 + 2, y0, x0 + 40, y0 + 34] and after[-1]["name"] == names[1]
        # Warm: back (P) and forth (N) between images already shown.
        page.keyboard.press("p")
        canvas.shown(first.path)
        page.keyboard.press("n")
        canvas.shown(second.path)
        warm = []
        for key, path in (("p", first.path), ("n", second.path), ("p", first.path)):
            start = time.perf_counter()
            page.keyboard.press(key)
            canvas.shown(path)
            warm.append(time.perf_counter() - start)
        print(
            f"\ncanvas: key press to Python {ms(key_to_python)}; next image warm {ms(warm)}"
            f" (target {WARM_TARGET * 1000:.0f} ms)"
        )
        assert min(warm) < 10 * WARM_TARGET  # the target is reported; a loaded CI machine gets slack
        assert page.evaluate("window.leaked") == []  # no key handled by the canvas reached the page
        # The journal's Undo takes the autosave back byte for byte.
        page.get_by_role("button", name="Undo last save").click()
        page.get_by_text("Undone:").wait_for()
        assert xml.read_bytes() == original
    assert not list(data.rglob("*.tmp"))


def objects_of(content: bytes, name: str) -> list[dict]:
    return voc.parse(content, name)[1]


def test_with_autosave_off_the_guard_asks_and_nothing_is_lost(tmp_path):
    data, images, _ = dataset(tmp_path)
    first, second = images[0], images[1]
    xml = data / first.annotation
    original = xml.read_bytes()
    with served_page(data, tmp_path, width=1400, height=1000) as (page, url):
        canvas = open_annotate(page, url, first.path)
        page.get_by_text("Autosave", exact=True).click()
        assert not page.get_by_role("switch", name="Autosave").is_checked()
        # Typing in a Streamlit text box never reaches the canvas's keys.
        page.get_by_label("New class").fill("n2x")
        page.get_by_label("New class").press("Backspace")
        assert page.get_by_text("unsaved change").count() == 0
        assert canvas.root.get_attribute("data-shown") == first.path
        # Delete a box on the canvas (select it, then Delete).
        x1, y1, x2, y2 = first.boxes[0]
        canvas.click((x1 + x2) / 2, (y1 + y2) / 2)
        page.keyboard.press("Delete")
        page.get_by_text("1 unsaved change").first.wait_for()
        page.keyboard.press("n")
        page.get_by_text(f"unsaved change(s) on {first.path}").wait_for()
        assert xml.read_bytes() == original and canvas.root.get_attribute("data-shown") == first.path
        page.get_by_role("button", name="Stay").click()
        page.get_by_role("button", name="Stay").wait_for(state="detached")
        page.get_by_text("1 unsaved change").first.wait_for()  # still there
        page.get_by_role("button", name="Next ▶").click()
        page.get_by_role("button", name="Save and go").click()
        canvas.shown(second.path)
        page.get_by_text(re.compile(r"^Saved ")).wait_for()
    assert len(objects(xml)) == len(first) - 1
    assert objects(xml) == objects_of(original, xml.name)[1:]


def test_reload_from_disk_shows_the_other_tools_same_size_edit(tmp_path):
    data, images, names = dataset(tmp_path)
    first = images[0]
    xml = data / first.annotation
    x1, y1, x2, y2 = (int(v) for v in first.boxes[3])
    label = names[int(first.class_ids[3])]
    with served_page(data, tmp_path, width=1400, height=1000) as (page, url):
        canvas = open_annotate(page, url, first.path)
        canvas.click((first.boxes[0][0] + first.boxes[0][2]) / 2, (first.boxes[0][1] + first.boxes[0][3]) / 2)
        page.keyboard.press("Delete")
        page.get_by_text("1 unsaved change").first.wait_for()
        # Another tool moves box 4 by one pixel: the file keeps its size.
        text = xml.read_text()
        edited = text.replace(f"<xmin>{x1 + 1}</xmin>", f"<xmin>{x1 + 2}</xmin>", 1)  # VOC is 1-based
        assert len(edited) == len(text) and edited != text
        xml.write_text(edited)
        theirs = xml.read_bytes()
        page.get_by_role("button", name="Save", exact=True).click()
        page.get_by_text("changed on disk since").wait_for()
        assert xml.read_bytes() == theirs
        page.get_by_role("button", name=re.compile("Reload from disk")).click()
        page.get_by_text("unsaved change(s):").wait_for(state="detached")
        # The canvas and the side panel show their version: all boxes, box 4 one pixel right.
        canvas.click(x1 + 1 + (x2 - x1 - 1) / 2, (y1 + y2) / 2)
        page.locator(".wb-status", has_text=f"selected #4 {label} ({x1 + 1}, {y1})-({x2}, {y2})").wait_for()
        box = page.get_by_role("combobox", name="Box", exact=True)  # the side panel follows the canvas
        sync_api.expect(box).to_have_value(f"#4 {label} ({x1 + 1}, {y1})-({x2}, {y2})")
        assert page.locator(".wb-overlay rect[data-box]").count() == len(first)
    assert xml.read_bytes() == theirs


def test_the_canvas_takes_the_page_width_on_a_laptop_and_a_4k_screen(tmp_path):
    data, images, _ = dataset(tmp_path)
    first = images[0]
    with served_page(data, tmp_path, width=1280, height=720) as (page, url):
        canvas = open_annotate(page, url, first.path)
        for width, height in ((1280, 720), (3840, 2160)):
            page.set_viewport_size({"width": width, "height": height})
            column = page.locator("[data-testid='stMainBlockContainer']")
            # The stage spans the main column (less its padding), the image fitted to it again.
            page.wait_for_function(
                """([stage, root, column, w, h]) => {
                    const view = JSON.parse(root.dataset.view);
                    const fill = Math.max(w * view.s / stage.clientWidth, h * view.s / stage.clientHeight);
                    return stage.clientWidth > column.clientWidth - 200 && fill > 0.98 && fill < 1.01;
                }""",
                arg=[
                    canvas.stage.element_handle(),
                    canvas.root.element_handle(),
                    column.element_handle(),
                    first.width,
                    first.height,
                ],
            )
            assert canvas.stage.bounding_box()["width"] > 0.6 * width
            assert page.locator(".wb-overlay rect[data-box]").count() == len(first)
