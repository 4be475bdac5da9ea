"""The Annotate page's working copy of one record: kept in ``st.session_state["work"]`` while the
user edits, with the state its files must still have on disk when it is saved, and the list of
changes not yet saved. Also the positions of the Browse page's current filter, which Annotate
steps through."""

from __future__ import annotations

import streamlit as st

from workbench.annotations import ImageRecord
from workbench.datasets import health
from workbench.datasets.index import OpenDataset, filter_images
from workbench.labelling import saving


def filtered(opened: OpenDataset) -> list[int]:
    """Positions of the images in the Browse page's current filter."""
    chosen = {
        "classes": st.session_state.get("filter_classes") or [],
        "kinds": st.session_state.get("filter_kinds") or [],
        "splits": st.session_state.get("filter_splits") or [],
        "empty": bool(st.session_state.get("filter_empty")),
        "search": st.session_state.get("filter_search") or "",
    }
    report = health.report(opened) if chosen["kinds"] else None
    return filter_images(opened.dataset, report=report, **chosen)


def start_work(opened: OpenDataset, position: int) -> dict:
    """A fresh working copy of the record at ``position`` and the state its files must still
    have on disk when it is saved."""
    record = opened.dataset.images[position]
    work = {
        "root": str(opened.root),
        "path": record.path,
        "position": position,
        "record": record.copy(),
        "classes": list(opened.dataset.classes),
        "expected": saving.expected_state(opened, saving.files_of(opened.dataset, record)),
        "changes": [],
        "rev": st.session_state.get("work", {}).get("rev", 0) + 1,
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
