"""The labelling parts of the pages, headless (AppTest): suggestions in Annotate, versions and diff
in Datasets. Suggestions are written into the store by hand: no model needed."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.conftest import PROJECT
from workbench.datasets import catalog, index, versions
from workbench.formats import voc
from workbench.labelling import edits, saving, suggestions

TIMEOUT = 60


def run(page: str, **state) -> AppTest:
    at = AppTest.from_file(str(PROJECT / page), default_timeout=TIMEOUT)
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def store(root, path: str, items: list[tuple[list[float], float, str]]) -> None:
    data = suggestions.load(root)
    data["images"][path] = [{"id": k, "box": b, "score": s, "label": name} for k, (b, s, name) in enumerate(items)]
    data["next_id"] = len(items)
    suggestions.save(root, data)


def test_annotate_accepts_rejects_and_queues(voc8):
    entry = catalog.add_dataset(voc8)
    first = index.open_dataset(voc8).dataset.images[0]
    store(
        voc8,
        first.path,
        [
            ([5, 5, 30, 30], 0.9, "with_mask"),
            ([40, 40, 60, 70], 0.3, "without_mask"),
            ([70, 10, 90, 30], 0.7, "helmet"),
        ],
    )
    before = (voc8 / first.annotation).read_bytes()
    at = run("pages/annotate.py", dataset=entry.path, image=first.path)
    assert not at.exception, at.exception
    assert any("Suggestions" in m.value for m in at.markdown)
    assert (voc8 / first.annotation).read_bytes() == before  # shown, not written
    at.button(key="sugg_reject").click().run()  # S1 rejected: the store only
    assert not at.exception, at.exception
    assert [s["score"] for s in suggestions.pending(voc8, first.path)] == [0.3, 0.7]
    assert (voc8 / first.annotation).read_bytes() == before
    at.slider(key="sugg_floor").set_value(0.5).run()
    at.button(key="sugg_accept_all").click().run()  # accept all >= 0.5: the helmet box only
    assert not at.exception, at.exception
    record = voc.load(voc8).record(first.path)
    assert len(record) == len(first) + 1 and record.boxes[-1].tolist() == [70, 10, 90, 30]
    assert voc.load(voc8).class_name(int(record.class_ids[-1])) == "helmet"
    assert [s["score"] for s in suggestions.pending(voc8, first.path)] == [0.3]
    assert saving.Journal().undoable(voc8)[-1]["message"].startswith(f"{first.path}: accepted suggestion helmet")
    at.button(key="undo").click().run()
    assert (voc8 / first.annotation).read_bytes() == before
    # the review queue in the sidebar: the image with a suggestion left is listed with its reason
    at.toggle(key="review_toggle").set_value(True).run()
    assert not at.exception, at.exception
    assert any("1 suggestion(s), mean score 0.30" in c.value for c in at.sidebar.caption)


def test_datasets_page_takes_versions_and_shows_the_diff(voc8):
    entry = catalog.add_dataset(voc8)
    at = run("pages/datasets.py", dataset=entry.path)
    assert not at.exception, at.exception
    at.text_input(key="version_name").input("before").run()
    at.button(key="version_take").click().run()
    assert [v["name"] for v in versions.list_versions(voc8)] == ["before"]
    opened = index.get_open(entry.path, entry.format)
    record = opened.dataset.images[0].copy()
    edits.delete_box(record, 0)
    saving.save_record(opened, 0, record, journal=saving.Journal())
    at.run()
    at.selectbox(key="diff_old").set_value("before").run()
    at.selectbox(key="diff_new").set_value("current").run()
    assert not at.exception, at.exception
    assert any("1 removed" in m.value for m in at.markdown)


def test_relabel_queue_opens_the_image_and_saving_clears_its_tag(voc8, monkeypatch):
    from workbench.evaluation import fiftyone_app

    entry = catalog.add_dataset(voc8)
    images = index.open_dataset(voc8).dataset.images
    target = images[3]
    calls = []
    monkeypatch.setattr(
        fiftyone_app, "relabel_queue", lambda root: [{"path": target.path, "reasons": ["tagged 'fix' in FiftyOne"]}]
    )
    monkeypatch.setattr(fiftyone_app, "clear_tag", lambda root, paths: calls.append((str(root), list(paths))) or 1)
    at = run("pages/annotate.py", dataset=entry.path, image=images[0].path)
    assert not at.exception, at.exception
    assert not calls and not [b for b in at.sidebar.button if str(b.key).startswith("relabel-")]  # off by default
    at.toggle(key="relabel_toggle").set_value(True).run()
    assert any("tagged 'fix' in FiftyOne" in c.value for c in at.sidebar.caption)
    at.button(key="relabel-0").click().run()
    assert not at.exception, at.exception
    assert at.session_state["image"] == target.path
    at.button(key="box_delete").click().run()
    at.button(key="save").click().run()
    assert not at.exception, at.exception
    assert calls == [(str(voc8.resolve()), [target.path])]
    assert len(voc.load(voc8).record(target.path)) == len(target) - 1


def test_annotate_moving_on_autosaves_or_asks(voc8):
    entry = catalog.add_dataset(voc8)
    first, second = index.open_dataset(voc8).dataset.images[:2]
    xml = voc8 / first.annotation
    at = run("pages/annotate.py", dataset=entry.path, image=first.path)
    at.button(key="box_delete").click().run()
    at.button(key="next").click().run()  # autosave on (the default): saved, then moved on
    assert not at.exception, at.exception
    assert at.session_state["image"] == second.path and at.session_state["work"]["path"] == second.path
    assert len(voc.load(voc8).record(first.path)) == len(first) - 1
    assert any("autosaved" in s.value for s in at.success)
    saved = xml.read_bytes()
    at.button(key="prev").click().run()
    at.toggle(key="autosave").set_value(False).run()
    at.button(key="box_delete").click().run()
    at.button(key="next").click().run()  # autosave off: the guard asks, nothing written or dropped
    assert at.session_state["work"]["path"] == first.path and at.session_state["work"]["changes"]
    assert xml.read_bytes() == saved
    at.button(key="leave_stay").click().run()
    assert at.session_state["work"]["changes"] and at.session_state["work"]["path"] == first.path
    at.button(key="next").click().run()
    at.button(key="leave_save").click().run()
    at.run()
    assert at.session_state["work"]["path"] == second.path
    assert len(voc.load(voc8).record(first.path)) == len(first) - 2


def test_canvas_edit_rebuilds_the_record_keeping_each_boxs_fields(voc8):
    from pages.common.canvas import rebuild

    record = index.open_dataset(voc8).dataset.images[1]
    record.box_extra[1]["pose"] = "Frontal"
    names = ["a", "b", "c"]
    boxes = [[*b, k] for k, b in enumerate(record.boxes.tolist())]
    x1, y1, x2, y2, _ = boxes[1]
    boxes[1][:4] = [x1 + 3, y1, x2 + 3, y2]
    del boxes[0]
    boxes.append([1, 2, 11, 12, None])
    labels = [int(record.class_ids[b[4]]) if b[4] is not None else 2 for b in boxes]
    labels[-2] = 1 if labels[-2] != 1 else 0
    new, lines, where = rebuild(record, boxes, labels, names)
    assert len(new) == len(record) and new.boxes[0].tolist() == [x1 + 3, y1, x2 + 3, y2]
    assert new.box_extra[0]["pose"] == "Frontal"  # the moved box kept its own fields
    assert new.boxes[-1].tolist() == [1, 2, 11, 12] and int(new.class_ids[-1]) == 2
    assert lines[0].startswith("box 2 (") and "moved to (" in lines[0]
    assert any(line.endswith("deleted") and line.startswith("box 1 ") for line in lines)
    assert where == list(range(len(boxes)))
    assert record.boxes[1].tolist() == [x1, y1, x2, y2]  # the base is not changed
