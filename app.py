"""The workbench's Streamlit entry point: ``streamlit run app.py [-- --data PATH]``.

Navigation over the pages that exist. On the first run with an empty workspace it opens the
bundled sample dataset; ``--data PATH`` adds PATH and opens it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import streamlit as st

from workbench.datasets import catalog
from workbench.errors import WorkbenchError

HERE = Path(__file__).resolve().parent
PAGES = [
    ("pages/datasets.py", "Datasets", ":material/folder_open:"),
    ("pages/browse.py", "Browse", ":material/grid_view:"),
    ("pages/annotate.py", "Annotate", ":material/edit_square:"),
    ("pages/train.py", "Train", ":material/model_training:"),
    ("pages/errors.py", "Errors", ":material/error:"),
    ("pages/demo.py", "Demo", ":material/smart_toy:"),
]
# Session keys that hold widget values other pages read (filters, the open image):
# Streamlit forgets a widget's value when its page is not shown, unless it is re-saved.
SHARED_KEYS = ("filter_classes", "filter_kinds", "filter_splits", "filter_empty", "filter_search", "gallery_page")


@st.cache_resource
def _startup(argv: tuple[str, ...]) -> str | None:
    """Once per server: handle ``--data`` and the first-run sample. Returns the dataset to open."""
    parser = argparse.ArgumentParser(prog="app.py", add_help=False)
    parser.add_argument("--data", "--dataset", dest="data")
    parser.add_argument("--format", dest="fmt")
    args, _ = parser.parse_known_args(list(argv))
    if args.data:
        return catalog.add_dataset(args.data, args.fmt).path
    sample = catalog.ensure_sample()
    return sample.path if sample else None


def main() -> None:
    st.set_page_config(page_title="Detection workbench", page_icon=":material/center_focus_strong:", layout="wide")
    try:
        opened = _startup(tuple(sys.argv[1:]))
    except (WorkbenchError, OSError) as e:  # a bad --data must not stop the app from starting
        st.error(f"Could not open the dataset given on the command line: {e}")
        opened = None
    if opened and "dataset" not in st.session_state:
        st.session_state["dataset"] = opened
    for key in SHARED_KEYS:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]
    pages = [st.Page(path, title=title, icon=icon) for path, title, icon in PAGES if (HERE / path).is_file()]
    st.navigation(pages).run()


main()
