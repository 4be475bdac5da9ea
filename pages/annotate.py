"""Annotate: one image, large, with its boxes. Draw, move, resize, relabel and delete boxes,
add a class, step through the images of the current filter, save back to the dataset's own
format, undo the last save; dataset-wide rename, merge and delete of a class. A model's
suggestions (``workbench suggest``) are drawn dashed beside the accepted boxes and can be
accepted (one, or all above a score), rejected, or edited then accepted; the sidebar holds the
review queue and FiftyOne's relabel queue. Shortcuts: A accept, X reject, N next, P previous.

Edits go to a working copy of the record held in the session; Save writes it through
``workbench.edits.save_record`` (conflict check, atomic write, journal)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image
from streamlit.elements.lib.image_utils import image_to_url
from streamlit.elements.lib.layout_utils import LayoutConfig
from streamlit_image_annotation.Detection import _component_func

from pages.common import ui
from workbench.annotations import ImageRecord
from workbench.datasets import catalog as workspace
from workbench.drawing import colour_map, open_rgb, render
from workbench.errors import WorkbenchError
from workbench.labelling import edits, review, suggestions

CANVAS = (1024, 768)  # the largest size the drawing component shows an image at (px)


def filtered(opened: workspace.OpenDataset) -> list[int]:
    """Positions of the images in the Browse page's current filter."""
    chosen = {
        "classes": st.session_state.get("filter_classes") or [],
        "kinds": st.session_state.get("filter_kinds") or [],
        "splits": st.session_state.get("filter_splits") or [],
        "empty": bool(st.session_state.get("filter_empty")),
        "search": st.session_state.get("filter_search") or "",
    }
    report = workspace.health(opened) if chosen["kinds"] else None
    return workspace.filter_images(opened.dataset, report=report, **chosen)


def start_work(opened: workspace.OpenDataset, position: int) -> dict:
    """A fresh working copy of the record at ``position`` and the state its files must still
    have on disk when it is saved."""
    record = opened.dataset.images[position]
    work = {
        "root": str(opened.root),
        "path": record.path,
        "position": position,
        "record": record.copy(),
        "classes": list(opened.dataset.classes),
        "expected": edits.expected_state(opened, edits.files_of(opened.dataset, record)),
        "changes": [],
        "rev": st.session_state.get("work", {}).get("rev", 0) + 1,
        "applied": None,
    }
    st.session_state["work"] = work
    return work


def bump(work: dict, changes: list[str]) -> None:
    work["changes"].extend(changes)
    work["rev"] += 1


def label_list(work: dict) -> list[str]:
    record: ImageRecord = work["record"]
    count = max(len(work["classes"]), int(record.class_ids.max()) + 1 if len(record) else 0)
    return [work["classes"][i] if i < len(work["classes"]) else str(i) for i in range(count)]


def component_view(boxes: np.ndarray, scale: float, size: tuple[int, int]) -> np.ndarray:
    """The boxes as the drawing component gives them back untouched: it clamps them to the
    image and makes any side under 5 display px a 5 x 5 box (Detection/BBoxCanvas.tsx)."""
    out = []
    for x1, y1, x2, y2 in boxes / scale:
        x, y, w, h = x1, y1, x2 - x1, y2 - y1
        if x < 0 or y < 0:
            w, h = w + min(0, x), h + min(0, y)
            x, y = max(0, x), max(0, y)
        if x + w > size[0] or y + h > size[1]:
            w, h = min(w, size[0] - x), min(h, size[1] - y)
        if w < 5 or h < 5:
            w = h = 5
        out.append([x, y, x + w, y + h])
    return np.asarray(out, dtype=np.float64).reshape(-1, 4) * scale


def detection(shown, scale: float, names: list[str], xywh: list[list[float]], labels: list[int], *, key: str):
    """streamlit-image-annotation's ``detection`` (0.8.0), with the workbench's class colours and
    an image already scaled to fit: boxes in and out are ``[x, y, w, h]`` in image pixels."""
    url = image_to_url(
        shown, LayoutConfig(width=shown.width, height=shown.height), True, "RGB", "JPEG", f"detect-{key}"
    )
    colours = colour_map(names)
    info = [
        {"bbox": [v / scale for v in b], "label_id": c, "label": names[c]} for b, c in zip(xywh, labels, strict=True)
    ]
    value = _component_func(
        image_url=url,
        image_size=shown.size,
        label_list=names,
        bbox_info=info,
        color_map=colours,
        line_width=2,
        use_space=False,
        key=key,
    )
    if value is None:
        return None
    return [
        {"bbox": [v * scale for v in item["bbox"]], "label_id": item["label_id"], "label": item["label"]}
        for item in value
    ]


@st.cache_resource(max_entries=16, show_spinner=False)
def fitted(path: str, size: int, mtime_ns: int) -> tuple[Image.Image, float]:
    """The image fitted to the canvas (a small one enlarged: the component never enlarges) and
    its scale (image px per canvas px). Cached by path, size and mtime: every click reruns the
    page, and decoding a 12-megapixel photo each time would make the page sluggish."""
    image = open_rgb(Path(path))
    fit = min(CANVAS[0] / image.width, CANVAS[1] / image.height)
    shown = image.resize(
        (max(1, round(image.width * fit)), max(1, round(image.height * fit))), Image.Resampling.BILINEAR
    )
    return shown, image.width / shown.width


def canvas(opened: workspace.OpenDataset, work: dict) -> None:
    """The drawing component; when the user clicks Complete, its boxes become the working copy."""
    record: ImageRecord = work["record"]
    names = label_list(work)
    if not names:
        st.info("This dataset has no class yet: add one on the right to draw boxes.")
        st.image(render(opened.root / record.path, record.boxes, record.class_ids, names), width="stretch")
        return
    path = opened.root / record.path
    try:
        stat = path.stat()
        shown, scale = fitted(str(path), stat.st_size, stat.st_mtime_ns)
    except (WorkbenchError, OSError) as e:
        st.error(f"{record.path}: {e}")
        return
    xywh = [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in record.boxes]
    key = f"detect-{work['rev']}"
    result = detection(shown, scale, names, xywh, [int(c) for c in record.class_ids], key=key)
    st.caption(
        "Click a box to select it, drag to move, pull a corner to resize, drag on the image to draw a new box; "
        "pick its class on the right of the picture. Click **Complete** to take the changes."
    )
    if result is None:
        return
    token = key + json.dumps(result)
    if work["applied"] == token:
        return
    work["applied"] = token
    drawn = [
        ([b["bbox"][0], b["bbox"][1], b["bbox"][0] + b["bbox"][2], b["bbox"][1] + b["bbox"][3]], b["label_id"])
        for b in result
    ]
    view = component_view(record.boxes, scale, shown.size)
    changes = edits.apply_drawn(record, drawn, shown=view, names=names, tol=max(1.0, scale))
    if changes:
        bump(work, changes)
        st.rerun()
    else:
        st.toast("No change to take.")


def box_editor(work: dict) -> None:
    """Relabel, move (by numbers) or delete one box; add a class."""
    record: ImageRecord = work["record"]
    names = label_list(work)
    rev = work["rev"]
    st.markdown(f"**Boxes** ({len(record)})")
    if len(record):
        start = min(int(st.session_state.get("box_index", 0)), len(record) - 1)
        index = st.selectbox(
            "Box",
            range(len(record)),
            index=start,
            format_func=lambda i: f"#{i + 1} {names[int(record.class_ids[i])]} " + edits.box_text(record.boxes[i]),
            key=f"box_pick-{rev}",
        )
        st.session_state["box_index"] = index
        class_id = st.selectbox(
            "Box class",
            range(len(names)),
            index=int(record.class_ids[index]),
            format_func=names.__getitem__,
            key=f"box_class-{rev}-{index}",
        )
        c = st.columns(4)
        coords = [
            c[k].number_input(
                label, value=float(record.boxes[index][k]), step=1.0, format="%g", key=f"box_{label}-{rev}-{index}"
            )
            for k, label in enumerate(("x1", "y1", "x2", "y2"))
        ]
        b1, b2 = st.columns(2)
        if b1.button("Apply", key="box_apply", width="stretch"):
            changes = []
            if class_id != int(record.class_ids[index]):
                changes.append(f"box {index + 1}: {names[int(record.class_ids[index])]} → {names[class_id]}")
                edits.relabel_box(record, index, class_id)
            if not np.allclose(coords, record.boxes[index], rtol=0, atol=1e-9):
                try:
                    edits.move_box(record, index, coords)
                    changes.append(f"box {index + 1} ({names[class_id]}): moved to {edits.box_text(coords)}")
                except WorkbenchError as e:
                    st.error(str(e))
            if changes:
                bump(work, changes)
                st.rerun()
        if b2.button("Delete box", key="box_delete", width="stretch"):
            name = names[int(record.class_ids[index])]
            edits.delete_box(record, index)
            bump(work, [f"box {index + 1} ({name}): deleted"])
            st.rerun()
    with st.form("add_class", clear_on_submit=True, border=False):
        new = st.text_input("New class", key="new_class")
        if st.form_submit_button("Add class"):
            try:
                edits.add_class(work["classes"], new)
                bump(work, [f"class {new.strip()!r} added"])
                st.rerun()
            except WorkbenchError as e:
                st.error(str(e))


def save_panel(opened: workspace.OpenDataset, work: dict) -> None:
    journal = edits.Journal()
    changes = work["changes"]
    if changes:
        st.warning(f"{len(changes)} unsaved change(s):\n" + "\n".join(f"- {c}" for c in changes))
    c1, c2 = st.columns(2)
    if c1.button("Save", type="primary", disabled=not changes, key="save", width="stretch"):
        try:
            result = edits.save_record(
                opened,
                work["position"],
                work["record"],
                classes=work["classes"],
                expected=work["expected"],
                journal=journal,
                message=f"{work['path']}: " + "; ".join(changes),
            )
        except edits.ConflictError as e:
            st.session_state["conflict"] = str(e)
        except WorkbenchError as e:
            st.error(f"Not saved: {e}")
        else:
            written = ", ".join(result.files) or "nothing (no byte changed)"
            st.session_state["flash"] = f"Saved {written}."
            after_save(opened, work)
            start_work(opened, work["position"])
            st.rerun()
    if c2.button("Discard", disabled=not changes, key="discard", width="stretch"):
        start_work(opened, work["position"])
        st.rerun()
    if st.session_state.get("conflict"):
        st.error(st.session_state["conflict"])
        if st.button("Reload from disk (drops my unsaved changes)", key="conflict_reload"):
            st.session_state.pop("conflict")
            fresh = workspace.get_open(opened.root, opened.dataset.format, reload=True)
            start_work(fresh, min(work["position"], len(fresh.dataset) - 1))
            st.rerun()
    undoable = journal.undoable(opened.root)
    if undoable:
        last = undoable[-1]
        if st.button("Undo last save", key="undo", help=last.get("message", ""), width="stretch"):
            try:
                edits.undo(opened.root, journal=journal)
            except WorkbenchError as e:
                st.error(f"Cannot undo: {e}")
            else:
                fresh = workspace.get_open(opened.root, opened.dataset.format, reload=True)
                st.session_state["flash"] = f"Undone: {last.get('message', '')}"
                position = next((i for i, r in enumerate(fresh.dataset.images) if r.path == work["path"]), 0)
                start_work(fresh, position)
                st.rerun()
        st.caption(f"Last save: {last.get('message', '')[:120]}")


# --- suggestions, the review queue and FiftyOne's relabel queue ------------------------------


def after_save(opened: workspace.OpenDataset, work: dict) -> None:
    """A saved image leaves FiftyOne's relabel queue (its ``fix`` tag is cleared) when it was in it."""
    if work["path"] not in st.session_state.get("relabel_paths", set()):
        return
    try:
        from workbench.evaluation import fiftyone_app

        fiftyone_app.clear_tag(opened.root, [work["path"]])
        st.session_state["relabel_paths"].discard(work["path"])
        fiftyone_queue.clear()
    except Exception as e:  # FiftyOne's database may be down: the save itself is done
        st.session_state["flash"] = st.session_state.get("flash", "") + f" (FiftyOne tag not cleared: {e})"


def accept_suggestions(opened: workspace.OpenDataset, work: dict, **chosen) -> None:
    """Accept suggestions (``ids=``, ``min_score=``, ``edited=``) into the working copy and save it."""
    try:
        result = suggestions.accept(
            opened,
            work["path"],
            record=work["record"],
            classes=work["classes"],
            expected=work["expected"],
            journal=edits.Journal(),
            notes=work["changes"],
            **chosen,
        )
    except edits.ConflictError as e:
        st.session_state["conflict"] = str(e)
        return
    except WorkbenchError as e:
        st.error(f"Not accepted: {e}")
        return
    written = ", ".join(result.files) or "nothing"
    st.session_state["flash"] = f"Accepted; saved {written} (Undo last save takes it back)."
    after_save(opened, work)
    start_work(opened, work["position"])
    st.rerun()


def suggestion_view(opened: workspace.OpenDataset, work: dict, items: list[dict]) -> None:
    """The image with the working boxes solid and the suggestions dashed, with their scores."""
    from workbench.evaluation.plots import draw_comparison

    record: ImageRecord = work["record"]
    names = label_list(work)
    path = opened.root / record.path
    try:
        stat = path.stat()
        shown, scale = fitted(str(path), stat.st_size, stat.st_mtime_ns)
    except (WorkbenchError, OSError):
        return
    pred_names = list(names)
    ids = []
    for s in items:
        if s["label"] not in pred_names:
            pred_names.append(s["label"])
        ids.append(pred_names.index(s["label"]))
    drawn = draw_comparison(
        shown,
        gt_boxes=record.boxes / scale,
        gt_class_ids=record.class_ids,
        gt_names=names,
        pred_boxes=np.asarray([s["box"] for s in items], dtype=np.float64).reshape(-1, 4) / scale,
        pred_class_ids=np.asarray(ids, dtype=np.int64),
        pred_scores=np.asarray([s["score"] for s in items]),
        pred_names=pred_names,
    )
    st.image(drawn, caption="Accepted boxes solid, suggestions dashed with their score", width="stretch")


def suggestion_panel(opened: workspace.OpenDataset, work: dict, items: list[dict]) -> None:
    """Accept one / all above a score, reject, edit then accept the image's suggestions."""
    st.markdown(f"**Suggestions** ({len(items)}) · A accept · X reject")
    pick = st.selectbox(
        "Suggestion",
        range(len(items)),
        format_func=lambda i: (
            f"S{i + 1} {items[i]['label']} {items[i]['score']:.2f} " + edits.box_text(items[i]["box"])
        ),
        key=f"sugg_pick-{work['rev']}-{len(items)}",
    )
    chosen = items[pick]
    c1, c2 = st.columns(2)
    if c1.button("Accept", key="sugg_accept", type="primary", shortcut="A", width="stretch"):
        accept_suggestions(opened, work, ids=[chosen["id"]])
    if c2.button("Reject", key="sugg_reject", shortcut="X", width="stretch"):
        suggestions.reject(opened.root, work["path"], [chosen["id"]])
        st.rerun()
    floor = st.slider("Accept all scoring at least", 0.0, 1.0, 0.5, 0.05, key="sugg_floor")
    above = [s for s in items if s["score"] >= floor]
    c1, c2 = st.columns(2)
    if c1.button(f"Accept {len(above)} ≥ {floor:.2f}", key="sugg_accept_all", disabled=not above, width="stretch"):
        accept_suggestions(opened, work, min_score=floor)
    if c2.button("Reject all", key="sugg_reject_all", width="stretch"):
        suggestions.reject(opened.root, work["path"])
        st.rerun()
    with st.expander("Edit, then accept"):
        names = label_list(work)
        known = names if chosen["label"] in names else [*names, chosen["label"]]
        label = st.selectbox("Class", known, index=known.index(chosen["label"]), key=f"sugg_class-{chosen['id']}")
        c = st.columns(4)
        box = [
            c[k].number_input(n, value=float(chosen["box"][k]), step=1.0, format="%g", key=f"sugg_{n}-{chosen['id']}")
            for k, n in enumerate(("x1", "y1", "x2", "y2"))
        ]
        if st.button("Accept edited", key="sugg_accept_edited", width="stretch"):
            accept_suggestions(opened, work, ids=[chosen["id"]], edited={chosen["id"]: {"box": box, "label": label}})


@st.cache_data(ttl=30, show_spinner=False)
def fiftyone_queue(root: str) -> list[dict]:
    from workbench.evaluation import fiftyone_app

    return fiftyone_app.relabel_queue(root)


@st.cache_data(ttl=30, show_spinner=False)
def fiftyone_mistakenness(root: str) -> dict[str, float]:
    return review.fiftyone_mistakenness(root)


@st.cache_data(ttl=10, show_spinner=False)
def review_queue(root: str, fmt: str, revision: int, store_mtime: float, use_fiftyone: bool) -> list[dict]:
    opened = workspace.get_open(root, fmt)
    mistakenness = None
    if use_fiftyone:
        try:
            mistakenness = fiftyone_mistakenness(root)
        except Exception:
            mistakenness = None
    evaluation = None if mistakenness else review.last_evaluation(root)
    return review.build_queue(opened, mistakenness=mistakenness, evaluation=evaluation)


def open_button(path: str, text: str, key: str, current: str) -> None:
    if st.sidebar.button(text, key=key, width="stretch", disabled=path == current, help=path):
        st.session_state["image"] = path
        st.rerun()


def sidebar(opened: workspace.OpenDataset, work: dict) -> None:
    """The review queue (unlabelled, disagreement, low confidence) and FiftyOne's relabel queue."""
    root = str(opened.root)
    use_fiftyone = st.sidebar.toggle("Relabel queue (FiftyOne)", key="relabel_toggle")
    if st.sidebar.toggle("Review queue", key="review_toggle"):
        store = suggestions.store_path(root)
        mtime = store.stat().st_mtime if store.is_file() else 0.0
        queue = review_queue(root, opened.dataset.format, opened.revision, mtime, use_fiftyone)
        st.sidebar.caption(f"{len(queue)} image(s): unlabelled first, then model disagreement, then low confidence.")
        for n, item in enumerate(queue[:30]):
            name = item["path"].rsplit("/", 1)[-1]
            open_button(item["path"], f"{name} · {item['tier']}", f"review-{n}", work["path"])
            st.sidebar.caption("; ".join(item["reasons"]))
    if use_fiftyone:
        try:
            queue = fiftyone_queue(root)
        except Exception as e:  # the database may not start: say so, keep the page
            st.sidebar.error(f"FiftyOne could not be read: {e}")
            return
        st.session_state["relabel_paths"] = {item["path"] for item in queue}
        if not queue:
            st.sidebar.info("No image is tagged `fix` in FiftyOne.")
        for n, item in enumerate(queue):
            open_button(item["path"], item["path"].rsplit("/", 1)[-1], f"relabel-{n}", work["path"])
            st.sidebar.caption("; ".join(item["reasons"]))


def labelme_action(opened: workspace.OpenDataset, work: dict) -> None:
    """'Open in LabelMe', only where a display and the labelme tool are available."""
    if not os.environ.get("DISPLAY") or not shutil.which("labelme"):
        return
    record: ImageRecord = work["record"]
    target = record.annotation if opened.dataset.format == "labelme" and record.annotation else record.path
    if st.button("Open in LabelMe", key="labelme", help=f"labelme {target}; the file is reloaded when it closes"):
        with st.spinner("Waiting for LabelMe to close …"):
            subprocess.run([shutil.which("labelme"), str(opened.root / target)], check=False)
        fresh = workspace.get_open(opened.root, opened.dataset.format, reload=True)
        start_work(fresh, work["position"])
        st.rerun()


def class_tools(opened: workspace.OpenDataset) -> None:
    """Dataset-wide rename, merge and delete of a class, each confirmed with its count."""
    dataset = opened.dataset
    if not dataset.classes:
        return
    with st.expander("Classes (whole dataset)"):
        c1, c2, c3 = st.columns(3)
        class_id = c1.selectbox(
            "Class to change", range(len(dataset.classes)), format_func=dataset.classes.__getitem__, key="cls_pick"
        )
        action = c2.selectbox("Action", ["rename", "merge into", "delete"], key="cls_action")
        target = None
        if action == "rename":
            target = c3.text_input("New name", key="cls_new_name")
        elif action == "merge into":
            others = [i for i in range(len(dataset.classes)) if i != class_id]
            target = (
                c3.selectbox("Into", others, format_func=dataset.classes.__getitem__, key="cls_into")
                if others
                else None
            )
        usage = edits.class_usage(dataset, class_id)
        name = dataset.classes[class_id]
        verb = {
            "rename": f"rename {name!r} to {target!r}",
            "merge into": "",
            "delete": f"delete {name!r} and its boxes",
        }[action]
        if action == "merge into" and target is not None:
            verb = f"relabel {name!r} as {dataset.classes[target]!r} and remove {name!r}"
        st.warning(f"This will {verb}: {usage.boxes:,} box(es) in {usage.images:,} image(s) change.")
        if st.button("Confirm", key="cls_confirm", disabled=target in (None, "") and action != "delete"):
            changed = edits.copy_for_class_edit(dataset)
            try:
                if action == "rename":
                    edits.rename_class(changed, class_id, target)
                elif action == "merge into":
                    edits.merge_classes(changed, class_id, target)
                else:
                    edits.delete_class(changed, class_id)
                result = edits.save_class_change(opened, changed, journal=edits.Journal(), message=verb)
            except WorkbenchError as e:
                st.error(f"Not saved: {e}")
            else:
                st.session_state["flash"] = f"Done: {verb}; {len(result.files)} file(s) written."
                st.session_state.pop("work", None)
                st.rerun()


def main() -> None:
    ui.through_app()
    found = ui.open_current()
    if found is None:
        return
    _, opened = found
    dataset = opened.dataset
    if not len(dataset):
        st.info("This dataset has no image.")
        return
    positions = filtered(opened) or list(range(len(dataset)))
    by_path = {dataset.images[i].path: i for i in range(len(dataset))}
    wanted = st.session_state.get("image")
    if wanted not in by_path:
        wanted = dataset.images[positions[0]].path
        st.session_state["image"] = wanted
    work = st.session_state.get("work")
    if not work or work["root"] != str(opened.root) or work["path"] != wanted:
        work = start_work(opened, by_path[wanted])
    work["position"] = by_path[wanted]  # a reload (undo, another tab) may have moved it
    record: ImageRecord = work["record"]

    here = positions.index(work["position"]) if work["position"] in positions else None
    dirty = bool(work["changes"])
    nav = st.columns([1, 4, 1])
    if nav[0].button("◀ Previous", disabled=dirty or not here, key="prev", width="stretch", shortcut="P"):
        st.session_state["image"] = dataset.images[positions[here - 1]].path
        st.rerun()
    where = f"{here + 1} of {len(positions):,} in the filter" if here is not None else "not in the current filter"
    nav[1].markdown(
        f"<div style='text-align:center'><b>{record.path}</b> · {record.width} x {record.height}"
        + (f" · {record.split}" if record.split else "")
        + f" · {where}</div>",
        unsafe_allow_html=True,
    )
    at_end = here is None or here + 1 >= len(positions)
    if nav[2].button("Next ▶", disabled=dirty or at_end, key="next", width="stretch", shortcut="N"):
        st.session_state["image"] = dataset.images[positions[here + 1]].path
        st.rerun()
    if dirty:
        st.caption("Save or discard the changes to move to another image.")
    if flash := st.session_state.pop("flash", None):
        st.success(flash)

    sidebar(opened, work)
    waiting = suggestions.pending(opened.root, work["path"])
    left, right = st.columns([3, 1])
    with left:
        canvas(opened, work)
        if waiting:
            suggestion_view(opened, work, waiting)
        chips = " ".join(
            f"<span style='border-left:14px solid {colour};padding-left:6px;margin-right:14px'>{name}</span>"
            for name, colour in colour_map(label_list(work)).items()
        )
        st.markdown(chips, unsafe_allow_html=True)
    with right:
        save_panel(opened, work)
        if waiting:
            suggestion_panel(opened, work, waiting)
        box_editor(work)
        labelme_action(opened, work)
        file = (edits.files_of(dataset, record) or ["(no annotation file)"])[0]
        st.caption(f"Annotation file: `{file}`")
        findings = workspace.record_findings(dataset, record, work["classes"])
        if findings:
            st.markdown("**Findings**")
            st.markdown("\n".join(f"- {f.detail}" for f in findings))
    class_tools(opened)


main()
