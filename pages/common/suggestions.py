"""The Annotate page's model suggestions (the canvas draws them dashed; accepted or rejected
here or with A and X on the canvas), its review queue and FiftyOne's relabel queue in the sidebar."""

from __future__ import annotations

import streamlit as st

from pages.common import ui
from pages.common.work import label_list, start_work
from workbench.datasets.index import OpenDataset, get_open
from workbench.errors import WorkbenchError
from workbench.labelling import edits, review, saving, suggestions


def after_save(opened: OpenDataset, work: dict) -> None:
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


def accept_suggestions(opened: OpenDataset, work: dict, **chosen) -> None:
    """Accept suggestions (``ids=``, ``min_score=``, ``edited=``) into the working copy and save it."""
    try:
        result = suggestions.accept(
            opened,
            work["path"],
            record=work["record"],
            classes=work["classes"],
            expected=work["expected"],
            journal=ui.journal(),
            notes=work["changes"],
            **chosen,
        )
    except saving.ConflictError as e:
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


def suggestion_command(opened: OpenDataset, work: dict, items: list[dict], command: dict) -> None:
    """The canvas's A (accept) or X (reject) on the suggestion ``command["suggestion"]``."""
    chosen = [s for s in items if s["id"] == command.get("suggestion")]
    if not chosen:
        return
    if command["action"] == "reject":
        suggestions.reject(opened.root, work["path"], [chosen[0]["id"]])
        st.rerun()
    allowed = bool(suggestions.load(opened.root).get("new_classes", True))
    add_classes = bool(st.session_state.get("sugg_new_classes", allowed))
    accept_suggestions(opened, work, ids=[chosen[0]["id"]], add_classes=add_classes)


def new_classes_choice(opened: OpenDataset, work: dict, items: list[dict]) -> bool:
    """Whether accepting may add the suggestions' class names that the dataset lacks: a checkbox,
    shown only when there are such names, ticked when the suggestions were made with
    ``--any-classes`` (or for a dataset without classes)."""
    names = label_list(work)
    foreign = sorted({s["label"] for s in items if s["label"] not in names})
    allowed = bool(suggestions.load(opened.root).get("new_classes", True))
    if not foreign:
        return allowed
    return st.checkbox(
        f"Add the model's class(es) {', '.join(foreign)} to this dataset",
        value=allowed,
        key="sugg_new_classes",
        help="The model was trained on other classes; unticked, its boxes of these classes are refused",
    )


def suggestion_panel(opened: OpenDataset, work: dict, items: list[dict]) -> None:
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
    add_classes = new_classes_choice(opened, work, items)
    c1, c2 = st.columns(2)
    if c1.button("Accept", key="sugg_accept", type="primary", shortcut="A", width="stretch"):
        accept_suggestions(opened, work, ids=[chosen["id"]], add_classes=add_classes)
    if c2.button("Reject", key="sugg_reject", shortcut="X", width="stretch"):
        suggestions.reject(opened.root, work["path"], [chosen["id"]])
        st.rerun()
    floor = st.slider("Accept all scoring at least", 0.0, 1.0, 0.5, 0.05, key="sugg_floor")
    above = [s for s in items if s["score"] >= floor]
    c1, c2 = st.columns(2)
    if c1.button(f"Accept {len(above)} ≥ {floor:.2f}", key="sugg_accept_all", disabled=not above, width="stretch"):
        accept_suggestions(opened, work, min_score=floor, add_classes=add_classes)
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
            edited = {chosen["id"]: {"box": box, "label": label}}
            accept_suggestions(opened, work, ids=[chosen["id"]], edited=edited, add_classes=add_classes)


@st.cache_data(ttl=30, show_spinner=False)
def fiftyone_queue(root: str) -> list[dict]:
    from workbench.evaluation import fiftyone_app

    return fiftyone_app.relabel_queue(root)


@st.cache_data(ttl=30, show_spinner=False)
def fiftyone_mistakenness(root: str) -> dict[str, float]:
    return review.fiftyone_mistakenness(root)


@st.cache_data(ttl=10, show_spinner=False)
def review_queue(root: str, fmt: str, revision: int, store_mtime: float, use_fiftyone: bool) -> list[dict]:
    opened = get_open(root, fmt)
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


def sidebar(opened: OpenDataset, work: dict) -> None:
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
