"""What the Streamlit pages share: the dataset they show, and leaving Streamlit's ``pages/`` folder mode.

Imported by the pages only (the library ``workbench/`` has no Streamlit import). It lives in a
subfolder of ``pages/`` because Streamlit's old ``pages/`` folder mode, which runs when a page is
opened without ``app.py`` (see ``through_app``), lists every ``.py`` file of that folder as a page
but ignores its subfolders.
"""

from __future__ import annotations

import streamlit as st

from workbench.datasets.catalog import DatasetEntry, current_dataset, find_dataset
from workbench.datasets.index import OpenDataset, get_open
from workbench.errors import WorkbenchError
from workbench.labelling import saving

NO_DATASET = "No dataset yet: add one on the Datasets page."


def through_app() -> None:
    """If a fresh server's first request is a page's URL, Streamlit runs the page alone (its
    old ``pages/`` folder mode), without app.py's navigation and ``--data``: leave that mode and
    rerun, so that app.py runs and opens this same page."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def current_user() -> str | None:
    """The signed-in user's e-mail (or name) when Streamlit's login is on, else ``None``: the
    journal then names the OS user. ``st.user`` is Streamlit's public API for the login."""
    try:
        user = st.user
        if not user.get("is_logged_in"):
            return None
        return user.get("email") or user.get("name")
    except (AttributeError, KeyError, RuntimeError):
        return None


def journal() -> saving.Journal:
    """The edit journal, writing this session's user on each save."""
    return saving.Journal(author=current_user())


def current_entry() -> DatasetEntry | None:
    """The dataset this session shows (``st.session_state["dataset"]``), else the one opened last."""
    path = st.session_state.get("dataset")
    entry = find_dataset(path) if path else None
    return entry or current_dataset()


def open_entry(entry: DatasetEntry, *, spinner: bool = False) -> OpenDataset | None:
    """``entry`` opened (cached by ``index.get_open``), or ``None`` after showing why it cannot be.
    ``spinner`` says "Reading …" while it loads."""
    try:
        if spinner:
            with st.spinner(f"Reading {entry.path} …"):
                return get_open(entry.path, entry.format)
        return get_open(entry.path, entry.format)
    except WorkbenchError as e:
        st.error(f"Cannot open {entry.path}: {e}")
        return None


def open_current() -> tuple[DatasetEntry, OpenDataset] | None:
    """The current dataset's entry and the dataset opened, or ``None`` after saying on the page
    that there is no dataset yet or that it cannot be opened."""
    entry = current_entry()
    if entry is None:
        st.info(NO_DATASET)
        return None
    opened = open_entry(entry)
    return None if opened is None else (entry, opened)
