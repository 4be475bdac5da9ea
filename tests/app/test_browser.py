"""The workbench driven in a real browser (Debian's Chromium through Playwright).

For a VOC and a YOLO copy of a shared dataset: open it, filter to one class, open an image,
change one box's class (side panel) and move another (dragging it on the canvas), save; then
the file on disk must differ exactly by those two edits, every other annotation and file must
be unchanged, and Undo must give the original file back byte for byte.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.app.conftest import PROJECT, copy_voc, copy_yolo
from workbench.datasets.index import filter_images
from workbench.formats import get_format, voc, yolo

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = os.environ.get("WORKBENCH_SCREENSHOTS")  # a folder to keep the screenshots in, if set

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``streamlit run app.py`` on a free local port with its own workspace, opening ``data``."""

    def __init__(self, home: Path, data: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, WORKBENCH_HOME=str(home), STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
        self.log = open(log, "wb")  # closed in stop()
        command = [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(PROJECT / "app.py"),
            "--server.headless",
            "true",
            "--server.address",
            "127.0.0.1",
            "--server.port",
            str(self.port),
            "--server.fileWatcherType",
            "none",
            "--",
            "--data",
            str(data),
        ]
        self.process = subprocess.Popen(command, cwd=PROJECT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.read() == b"ok":
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"streamlit did not start: {log.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


@contextlib.contextmanager
def served_page(data: Path, tmp_path: Path, *, width: int = 1400, height: int = 1000):
    """A Chromium page and ``streamlit run app.py`` opening ``data`` in the test's workspace
    (``WORKBENCH_HOME``); the server's log is ``tmp_path/server.log``. Yields ``(page, url)``."""
    server = Server(Path(os.environ["WORKBENCH_HOME"]), data, tmp_path / "server.log")
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(30_000)
            yield page, server.url
            browser.close()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        yield p


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def pick_boxes(record) -> tuple[int, int, tuple[int, int]]:
    """Box to relabel (the first), box to move (one whose centre lies in no other box, big
    enough to grab) and the move in image pixels (kept inside the image)."""
    boxes = record.boxes
    for b in range(1, len(boxes)):
        x1, y1, x2, y2 = boxes[b]
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        inside_other = any(o[0] <= cx <= o[2] and o[1] <= cy <= o[3] for k, o in enumerate(boxes) if k != b)
        if inside_other or x2 - x1 < 12 or y2 - y1 < 12:
            continue
        dx = 24 if x2 + 24 <= record.width else -24
        dy = 16 if y2 + 16 <= record.height else -16
        return 0, b, (dx, dy)
    raise AssertionError(f"{record.path}: no box to move")


def shot(page, tmp_path: Path, name: str) -> None:
    """Save a screenshot (once the drawing component, if any, has drawn), and fail on any
    exception the app shows."""
    if page.locator(".wb-canvas").count():
        page.locator(".wb-canvas[data-shown]").wait_for()
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / f"{name}.png", Path(SHOTS) / f"{name}.png")
    errors = page.locator("[data-testid='stException']")
    assert errors.count() == 0, errors.first.inner_text()


def drive(
    page, url: str, *, class_name: str, record, relabel_to: str, move: int, delta, tmp_path, tag: str, direct: bool
) -> None:
    """Filter, open, relabel box 0, drag box ``move`` by ``delta`` image px, save. ``direct``
    opens the Browse page's URL as the fresh server's first request (which must still go through
    app.py: its navigation and ``--data``)."""
    page.set_default_timeout(30_000)
    if direct:
        page.goto(url + "/browse")
        page.locator("[data-testid='stSidebarNav'] a", has_text="Datasets").wait_for()
    else:
        page.goto(url)
        page.get_by_text("Images", exact=True).wait_for()
        shot(page, tmp_path, f"{tag}-1-datasets")
        page.locator("[data-testid='stSidebarNav'] a", has_text="Browse").click()
    page.get_by_text(re.compile(r"page 1 of \d+ · \d+ images")).wait_for()
    classes = page.locator("[data-testid='stMultiSelect']", has_text="Class")
    classes.click()
    page.get_by_role("option", name=class_name, exact=True).click()
    page.keyboard.press("Escape")
    page.get_by_text(re.compile(r"page 1 of 1 · \d+ images")).wait_for()
    shot(page, tmp_path, f"{tag}-2-browse-filtered")
    name = record.path.rsplit("/", 1)[-1]
    page.get_by_role("button", name=re.compile(re.escape(name) + r" · \d+")).first.click()

    page.get_by_text(record.path, exact=False).first.wait_for()
    page.locator(f".wb-canvas[data-shown='{record.path}']").wait_for()
    rev = page.locator(".wb-canvas").get_attribute("data-rev")
    # Relabel box 1 in the side panel.
    box_class = page.locator("[data-testid='stSelectbox']", has_text="Box class")
    box_class.evaluate("e => e.scrollIntoView({block: 'center'})")  # its list opens on screen
    box_class.click()
    page.get_by_role("option", name=relabel_to, exact=True).click()
    page.get_by_role("button", name="Apply").click()
    page.get_by_text("1 unsaved change").wait_for()

    # Move another box on the canvas by dragging it: it reaches Python at once (no Complete step).
    page.locator(f".wb-canvas:not([data-rev='{rev}'])").wait_for()  # the canvas took the side panel's change
    page.locator(".wb-stage").evaluate("e => e.scrollIntoView({block: 'nearest'})")
    view = json.loads(page.locator(".wb-canvas").get_attribute("data-view"))
    area = page.locator(".wb-stage").bounding_box()
    scale = view["s"]
    x1, y1, x2, y2 = record.boxes[move]
    cx = area["x"] + view["tx"] + (x1 + x2) / 2 * scale
    cy = area["y"] + view["ty"] + (y1 + y2) / 2 * scale
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + delta[0] * scale, cy + delta[1] * scale, steps=12)
    page.mouse.up()
    shot(page, tmp_path, f"{tag}-3-annotate-dragged")
    page.get_by_text("2 unsaved change").wait_for()
    shot(page, tmp_path, f"{tag}-4-annotate-pending")
    page.get_by_role("button", name="Save", exact=True).click()
    page.get_by_text(re.compile(r"^Saved \w")).wait_for()
    shot(page, tmp_path, f"{tag}-5-saved")


def undo(page, tmp_path: Path, tag: str) -> None:
    page.get_by_role("button", name="Undo last save").click()
    page.get_by_text("Undone:").wait_for()
    shot(page, tmp_path, f"{tag}-6-undone")


def run_case(browser, tmp_path: Path, data: Path, fmt: str, class_name: str):
    dataset = get_format(fmt).load(data)
    positions = filter_images(dataset, classes=[class_name])
    record = dataset.images[positions[0]]
    relabel, move, delta = pick_boxes(record)
    old = dataset.class_name(int(record.class_ids[relabel]))
    relabel_to = next(c for c in dataset.classes if c != old)
    ann = data / get_format(fmt).annotation_path(dataset, record)
    original = ann.read_bytes()
    others = {k: v for k, v in digests(data).items() if k != str(ann.relative_to(data))}

    server = Server(tmp_path / "home", data, tmp_path / "streamlit.log")
    context = browser.chromium.launch_persistent_context(
        str(tmp_path / "profile"),
        executable_path=CHROMIUM,
        args=ARGS,
        headless=True,
        viewport={"width": 1400, "height": 1000},
    )
    try:
        page = context.new_page()
        drive(
            page,
            server.url,
            class_name=class_name,
            record=record,
            relabel_to=relabel_to,
            move=move,
            delta=delta,
            tmp_path=tmp_path,
            tag=fmt,
            direct=fmt == "yolo",
        )
        saved = ann.read_bytes()
        after = {k: v for k, v in digests(data).items() if k != str(ann.relative_to(data))}
        assert after == others, "a file other than the edited one changed"
        undo(page, tmp_path, fmt)
        assert ann.read_bytes() == original, "undo did not restore the file byte for byte"
        assert {k: v for k, v in digests(data).items() if k != str(ann.relative_to(data))} == others
    finally:
        context.close()
        server.stop()
    return record, relabel, move, delta, relabel_to, original, saved, dataset


def test_voc_edit_save_undo_in_browser(browser, tmp_path):
    data = copy_voc(tmp_path / "voc", 6, must_have="mask_weared_incorrect")
    _, relabel, move, delta, relabel_to, original, saved, _ = run_case(
        browser, tmp_path, data, "voc", "mask_weared_incorrect"
    )
    fields0, objects0 = voc.parse(original, "before")
    fields1, objects1 = voc.parse(saved, "after")
    assert fields1 == fields0
    assert len(objects1) == len(objects0)
    for i, (a, b) in enumerate(zip(objects0, objects1, strict=True)):
        if i == relabel:
            assert b["name"] == relabel_to
            assert {k: v for k, v in b.items() if k != "name"} == {k: v for k, v in a.items() if k != "name"}
        elif i == move:
            assert {k: v for k, v in b.items() if k != "bndbox"} == {k: v for k, v in a.items() if k != "bndbox"}
            got = np.array([float(b["bndbox"][t]) for t in ("xmin", "ymin", "xmax", "ymax")])
            want = np.add([float(a["bndbox"][t]) for t in ("xmin", "ymin", "xmax", "ymax")], delta * 2)
            assert np.abs(got - want).max() <= 1.0, (got, want)
        else:
            assert b == a, f"object {i + 1} changed"


def test_yolo_edit_save_undo_in_browser(browser, tmp_path):
    data = copy_yolo(tmp_path / "yolo", 4)
    record, relabel, move, delta, relabel_to, original, saved, dataset = run_case(
        browser, tmp_path, data, "yolo", "with_mask"
    )
    ids0, boxes0, _ = yolo.parse_lines(original.decode(), "before")
    ids1, boxes1, _ = yolo.parse_lines(saved.decode(), "after")
    assert len(ids1) == len(ids0)
    w, h = record.width, record.height
    for i in range(len(ids0)):
        if i == relabel:
            assert dataset.classes[ids1[i]] == relabel_to
            assert np.allclose(boxes1[i], boxes0[i], atol=1e-6)
        elif i == move:
            assert ids1[i] == ids0[i]
            shift = np.array([delta[0] / w, delta[1] / h] * 2)
            assert np.abs(boxes1[i] - (boxes0[i] + shift)).max() <= 1.5 / min(w, h)
        else:
            assert ids1[i] == ids0[i] and np.allclose(boxes1[i], boxes0[i], atol=1e-6), f"line {i + 1} changed"
    assert (data / "classes.txt").read_text() == (
        PROJECT.parent / "shared/datasets/macwinwin-yolo/classes.txt"
    ).read_text()
