"""Annotate: one image, large, with its boxes. Draw, move, resize, relabel and delete boxes,
add a class, step through the images of the current filter, save back to the dataset's own
format, undo the last save; dataset-wide rename, merge and delete of a class. A model's
suggestions (``workbench suggest``) are drawn dashed beside the accepted boxes and can be
accepted (one, or all above a score), rejected, or edited then accepted; the sidebar holds the
review queue and FiftyOne's relabel queue. Keys on the canvas: 1-9 class, Delete, Ctrl+Z and
Ctrl+Shift+Z, wheel and +/- zoom, space-drag pan, A accept, X reject, N next, P previous (N, P,
A and X also work as the buttons' shortcuts when the canvas has no focus).

Edits go to a working copy of the record held in the session (``pages.common.work``); every
canvas change reaches it at once. Save writes it through ``saving.save_record`` (conflict
check, atomic write, journal); moving to another image with unsaved changes saves them
(the Autosave toggle, on by default) or asks first. The canvas is in ``pages.common.canvas``,
the suggestions and queues in ``pages.common.suggestions``."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import streamlit as st

from pages.common import ui
from pages.common.canvas import canvas, warm
from pages.common.suggestions import after_save, sidebar, suggestion_command, suggestion_panel
from pages.common.work import bump, filtered, label_list, start_work
from workbench.annotations import ImageRecord
from workbench.datasets import health
from workbench.datasets.index import OpenDataset, get_open
from workbench.errors import WorkbenchError
from workbench.formats import labelme_file
from workbench.labelling import edits, saving, suggestions


def box_editor(work: dict) -> None:
    """Relabel, move (by numbers) or delete one box; add a class."""
    record: ImageRecord = work["record"]
    names = label_list(work)
    seq = work.get("seq", 0)  # the canvas's own edits: the numbers below must follow them too
    rev = f"{work['rev']}.{seq}" if seq else work["rev"]
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


def save_work(opened: OpenDataset, work: dict, *, why: str = "") -> bool:
    """Save the working copy through ``saving.save_record``; ``False`` (and the reason shown)
    when it was refused: a conflict keeps the changes and offers to reload."""
    try:
        result = saving.save_record(
            opened,
            work["position"],
            work["record"],
            classes=work["classes"],
            expected=work["expected"],
            journal=ui.journal(),
            message=f"{work['path']}: " + "; ".join(work["changes"]),
        )
    except saving.ConflictError as e:
        st.session_state["conflict"] = str(e)
        return False
    except WorkbenchError as e:
        st.session_state["save_error"] = f"Not saved: {e}"
        return False
    written = ", ".join(result.files) or "nothing (no byte changed)"
    st.session_state["flash"] = f"Saved {written}{why}."
    after_save(opened, work)
    return True


def move_on(opened: OpenDataset, work: dict, target: str) -> bool:
    """Whether the page may leave the working copy for ``target``: nothing unsaved, or saved
    now (autosave on). With autosave off the guard asks first; nothing is ever dropped."""
    if not work["changes"]:
        return True
    if st.session_state.get("autosave_on", True):
        return save_work(opened, work, why=" (autosaved on moving on)")
    st.session_state["leave_to"] = target
    return False


def guard(opened: OpenDataset, work: dict, target: str) -> None:
    """Autosave off and unsaved changes: save, discard or stay before opening ``target``."""
    with st.container(border=True):
        st.warning(f"{len(work['changes'])} unsaved change(s) on {work['path']}: save them before opening {target}?")
        c1, c2, c3 = st.columns(3)
        if c1.button("Save and go", key="leave_save", type="primary", width="stretch"):
            if save_work(opened, work):
                start_work(opened, work["position"])
                st.session_state["image"] = target
            st.session_state.pop("leave_to", None)
            st.rerun()
        if c2.button("Discard and go", key="leave_discard", width="stretch"):
            start_work(opened, work["position"])
            st.session_state["image"] = target
            st.session_state.pop("leave_to", None)
            st.rerun()
        if c3.button("Stay", key="leave_stay", width="stretch"):
            st.session_state.pop("leave_to", None)
            st.rerun()


def save_panel(opened: OpenDataset, work: dict) -> None:
    journal = ui.journal()
    changes = work["changes"]
    if error := st.session_state.pop("save_error", None):
        st.error(error)
    if changes:
        st.warning(f"{len(changes)} unsaved change(s):\n" + "\n".join(f"- {c}" for c in changes))
    c1, c2 = st.columns(2)
    if c1.button("Save", type="primary", disabled=not changes, key="save", width="stretch"):
        if save_work(opened, work):
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


def go(path: str) -> None:
    st.session_state["image"] = path


def current_work(opened: OpenDataset, by_path: dict[str, int], wanted: str) -> dict:
    """The working copy: the session's one while it is of this dataset and image, else the
    image ``wanted``; leaving an image with unsaved changes goes through ``move_on``."""
    work = st.session_state.get("work")
    if not work or work["root"] != str(opened.root) or work["path"] not in by_path:
        return start_work(opened, by_path[wanted])
    work["position"] = by_path[work["path"]]  # a reload (undo, another tab) may have moved it
    if work["path"] != wanted:
        if move_on(opened, work, wanted):
            return start_work(opened, by_path[wanted])
        st.session_state["image"] = work["path"]
    return work


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
    if st.session_state.get("image") not in by_path:
        st.session_state["image"] = dataset.images[positions[0]].path
    command = st.session_state.pop("canvas_command", None) or {}
    action = command.get("action")
    work = st.session_state.get("work")
    if action in ("next", "previous") and work and work["path"] in by_path:
        at = by_path[work["path"]]
        here = positions.index(at) if at in positions else None
        step = 1 if action == "next" else -1
        if here is not None and 0 <= here + step < len(positions):
            st.session_state["image"] = dataset.images[positions[here + step]].path
    work = current_work(opened, by_path, st.session_state["image"])
    if action == "save" and work["changes"] and save_work(opened, work):
        work = start_work(opened, work["position"])
    record: ImageRecord = work["record"]

    here = positions.index(work["position"]) if work["position"] in positions else None
    before = dataset.images[positions[here - 1]].path if here else None
    after = dataset.images[positions[here + 1]].path if here is not None and here + 1 < len(positions) else None
    nav = st.columns([1, 4, 1, 1])
    nav[0].button(
        "◀ Previous", disabled=not before, key="prev", width="stretch", shortcut="P", on_click=go, args=(before,)
    )
    where = f"{here + 1} of {len(positions):,} in the filter" if here is not None else "not in the current filter"
    nav[1].markdown(
        f"<div style='text-align:center'><b>{record.path}</b> · {record.width} x {record.height}"
        + (f" · {record.split}" if record.split else "")
        + f" · {where}</div>",
        unsafe_allow_html=True,
    )
    nav[2].button("Next ▶", disabled=not after, key="next", width="stretch", shortcut="N", on_click=go, args=(after,))
    st.session_state["autosave_on"] = nav[3].toggle(
        "Autosave",
        value=st.session_state.get("autosave_on", True),  # kept while the user is on other pages
        key="autosave",
        help="Save unsaved changes when moving to another image; off, the page asks first",
    )
    if flash := st.session_state.pop("flash", None):
        st.success(flash)
    target = st.session_state.get("leave_to")
    if target and work["changes"] and target in by_path:
        guard(opened, work, target)
    elif target:
        st.session_state.pop("leave_to")

    sidebar(opened, work)
    waiting = suggestions.pending(opened.root, work["path"])
    if action in ("accept", "reject"):
        suggestion_command(opened, work, waiting, command)
    canvas(opened, work, waiting)
    for position in (by_path.get(after), by_path.get(before)):
        if position is not None:
            warm(opened, position)
    left, right = st.columns(2)
    with left:
        save_panel(opened, work)
        if waiting:
            suggestion_panel(opened, work, waiting)
    with right:
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
