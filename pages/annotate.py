"""Annotate: one image, large, with its boxes. Draw, move, resize, relabel and delete boxes,
add a class, step through the images of the current filter, save back to the dataset's own
format, undo the last save; dataset-wide rename, merge and delete of a class. A model's
suggestions (``workbench suggest``) are drawn dashed beside the accepted boxes and can be
accepted (one, or all above a score), rejected, or edited then accepted; the sidebar holds the
review queue and FiftyOne's relabel queue. Shortcuts: A accept, X reject, N next, P previous.

Edits go to a working copy of the record held in the session (``pages.common.work``); Save
writes it through ``workbench.labelling.saving.save_record`` (conflict check, atomic write,
journal). The canvas is in ``pages.common.canvas``, the suggestions and queues in
``pages.common.suggestions``."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import streamlit as st

from pages.common import ui
from pages.common.canvas import canvas
from pages.common.suggestions import after_save, sidebar, suggestion_panel, suggestion_view
from pages.common.work import bump, filtered, label_list, start_work
from workbench.annotations import ImageRecord
from workbench.datasets import health
from workbench.datasets.index import OpenDataset, get_open
from workbench.drawing import colour_map
from workbench.errors import WorkbenchError
from workbench.formats import labelme_file
from workbench.labelling import edits, saving, suggestions


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


def save_panel(opened: OpenDataset, work: dict) -> None:
    journal = ui.journal()
    changes = work["changes"]
    if changes:
        st.warning(f"{len(changes)} unsaved change(s):\n" + "\n".join(f"- {c}" for c in changes))
    c1, c2 = st.columns(2)
    if c1.button("Save", type="primary", disabled=not changes, key="save", width="stretch"):
        try:
            result = saving.save_record(
                opened,
                work["position"],
                work["record"],
                classes=work["classes"],
                expected=work["expected"],
                journal=journal,
                message=f"{work['path']}: " + "; ".join(changes),
            )
        except saving.ConflictError as e:
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
            fresh = get_open(opened.root, opened.dataset.format, reload=True)
            start_work(fresh, min(work["position"], len(fresh.dataset) - 1))
            st.rerun()
    undoable = journal.undoable(opened.root, author=journal.author)  # my saves, not someone else's
    if undoable:
        last = undoable[-1]
        if st.button("Undo last save", key="undo", help=last.get("message", ""), width="stretch"):
            try:
                saving.undo(opened.root, entry=last["id"], journal=journal)
            except WorkbenchError as e:
                st.error(f"Cannot undo: {e}")
            else:
                fresh = get_open(opened.root, opened.dataset.format, reload=True)
                st.session_state["flash"] = f"Undone: {last.get('message', '')}"
                position = next((i for i, r in enumerate(fresh.dataset.images) if r.path == work["path"]), 0)
                start_work(fresh, position)
                st.rerun()
        st.caption(f"My last save: {last.get('message', '')[:120]}")


def labelme_action(opened: OpenDataset, work: dict) -> None:
    """'Open in LabelMe', only where a display and the labelme tool are available."""
    if not os.environ.get("DISPLAY") or not shutil.which("labelme"):
        return
    record: ImageRecord = work["record"]
    target = labelme_file(opened.dataset, record)
    if st.button("Open in LabelMe", key="labelme", help=f"labelme {target}; the file is reloaded when it closes"):
        with st.spinner("Waiting for LabelMe to close …"):
            subprocess.run([shutil.which("labelme"), str(opened.root / target)], check=False)
        fresh = get_open(opened.root, opened.dataset.format, reload=True)
        start_work(fresh, work["position"])
        st.rerun()


def class_tools(opened: OpenDataset) -> None:
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
                result = saving.save_class_change(opened, changed, journal=ui.journal(), message=verb)
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
        file = (saving.files_of(dataset, record) or ["(no annotation file)"])[0]
        st.caption(f"Annotation file: `{file}`")
        findings = health.record_findings(dataset, record, work["classes"])
        if findings:
            st.markdown("**Findings**")
            st.markdown("\n".join(f"- {f.detail}" for f in findings))
    class_tools(opened)


main()
