"""Browse: a gallery of the dataset's images with their boxes, 50 per page, filtered by class,
health finding, split, images with no boxes and file name. A click opens the image in Annotate."""

from __future__ import annotations

import math

import streamlit as st

from pages.common import ui
from workbench.datasets import health
from workbench.datasets.health import KINDS
from workbench.datasets.index import OpenDataset, filter_images, get_open
from workbench.datasets.thumbnails import tile as make_tile
from workbench.drawing import class_colour

PAGE_SIZE = 50
COLUMNS = 5


@st.cache_data(max_entries=2000, show_spinner=False)
def tile(root: str, fmt: str, revision: int, position: int, path: str) -> bytes:
    """One gallery tile (JPEG bytes); the revision makes a saved edit redraw its boxes."""
    opened = get_open(root, fmt)
    return make_tile(opened.dataset, opened.dataset.images[position])


def filters(opened: OpenDataset) -> dict:
    """Draw the filter widgets; return their values as ``index.filter_images`` keywords."""
    dataset = opened.dataset
    with st.sidebar:
        st.markdown("**Filters**")
        classes = st.multiselect("Class", dataset.classes, key="filter_classes")
        kinds = st.multiselect("Health finding", list(KINDS), format_func=lambda k: KINDS[k], key="filter_kinds")
        splits = st.multiselect("Split", dataset.splits, key="filter_splits") if dataset.splits else []
        empty = st.checkbox("Only images with no boxes", key="filter_empty")
        search = st.text_input("File name contains", key="filter_search")
    return {"classes": classes, "kinds": kinds, "splits": splits, "empty": empty, "search": search}


def legend(dataset) -> None:
    chips = " ".join(
        f"<span style='border-left:14px solid {class_colour(i)};padding-left:6px;margin-right:14px'>{name}</span>"
        for i, name in enumerate(dataset.classes)
    )
    st.markdown(chips, unsafe_allow_html=True)


def pager(count: int) -> int:
    """Page controls; returns the 0-based page shown."""
    pages = max(1, math.ceil(count / PAGE_SIZE))
    page = min(max(int(st.session_state.get("gallery_page", 1)), 1), pages)
    st.session_state["gallery_page"] = page
    c1, c2, c3 = st.columns([1, 2, 1])
    if c1.button("◀ Previous page", disabled=page <= 1, key="page_prev"):
        st.session_state["gallery_page"] = page - 1
        st.rerun()
    c2.markdown(
        f"<div style='text-align:center'>page {page} of {pages} · {count:,} images</div>", unsafe_allow_html=True
    )
    if c3.button("Next page ▶", disabled=page >= pages, key="page_next"):
        st.session_state["gallery_page"] = page + 1
        st.rerun()
    return page - 1


def main() -> None:
    ui.through_app()
    st.title("Browse")
    found = ui.open_current()
    if found is None:
        return
    _, opened = found
    dataset = opened.dataset
    chosen = filters(opened)
    report = health.report(opened) if chosen["kinds"] else None
    positions = filter_images(dataset, report=report, **chosen)
    signature = repr(sorted(chosen.items()))
    if st.session_state.get("browse_signature") != signature:  # new filter: back to its first page
        st.session_state["browse_signature"] = signature
        st.session_state["gallery_page"] = 1
    legend(dataset)
    if not positions:
        st.info("No image matches these filters.")
        return
    page = pager(len(positions))
    shown = positions[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
    for row in range(0, len(shown), COLUMNS):
        cols = st.columns(COLUMNS)
        for col, position in zip(cols, shown[row : row + COLUMNS], strict=False):
            record = dataset.images[position]
            with col:
                st.image(
                    tile(str(dataset.root), dataset.format, opened.revision, position, record.path), width="stretch"
                )
                name = record.path.rsplit("/", 1)[-1]
                if st.button(f"{name} · {len(record)}", key=f"open-{position}", width="stretch", help=record.path):
                    st.session_state["image"] = record.path
                    st.switch_page("pages/annotate.py")


main()
