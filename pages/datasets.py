"""Datasets: add a dataset by path, pick one of those already added, and see its summary
(images, boxes, classes, box sizes, splits) and its health findings, each linking to the
image it concerns. Add images (upload or folder; new ones wait unlabelled in Annotate's review
queue), take a version of the labels and compare two versions box by box."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from pages.common import ui
from workbench.annotations import content_hash
from workbench.datasets import catalog, health, versions
from workbench.datasets.health import KINDS
from workbench.datasets.index import OpenDataset, get_open
from workbench.drawing import colour_map
from workbench.errors import WorkbenchError
from workbench.fileio import is_image
from workbench.formats import FORMATS, capabilities, detect_format, label
from workbench.formats.yolo_yaml import is_data_yaml
from workbench.labelling import suggestions

FINDINGS_WITH_LINKS = 25  # per kind; the rest are listed in a table


def open_image(image: str, box: int | None = None) -> None:
    st.session_state["image"] = image
    st.session_state["box_index"] = box or 0  # the box the finding is about, picked in the editor
    st.switch_page("pages/annotate.py")


def add_form() -> catalog.DatasetEntry | None:
    """The 'add a dataset' form. Shows the resolved path and the detected format before
    anything is added; returns the entry once added."""
    with st.container(border=True):
        st.markdown("**Add a dataset**")
        text = st.text_input(
            "Folder or data.yaml",
            placeholder="/path/to/dataset",
            key="add_path",
            help="A dataset folder, or an Ultralytics data.yaml (its train/val/test lists become the splits)",
        )
        choice = st.selectbox(
            "Format",
            ["detect", *sorted(FORMATS)],
            format_func=lambda f: f if f == "detect" else label(f),
            key="add_format",
        )
        if not text.strip():
            return None
        try:
            root = catalog.resolve_path(text)
        except WorkbenchError as e:
            st.error(str(e))
            return None
        if not root.is_dir() and not is_data_yaml(root):
            st.error(f"`{root}` is not a folder or a data.yaml.")
            return None
        fmt = None if choice == "detect" else choice
        try:
            found = fmt or detect_format(root)
        except WorkbenchError as e:
            st.warning(f"{e}")
            return None
        st.info(f"Will add `{root}` as **{label(found)}**.")
        if st.button("Add this dataset", type="primary", key="add_confirm"):
            entry = catalog.add_dataset(root, found)
            st.session_state["dataset"] = entry.path
            return entry
    return None


def chooser(entries: list[catalog.DatasetEntry], current: catalog.DatasetEntry | None) -> None:
    labels = {e.path: f"{e.name} ({label(e.format)}) — {e.path}" for e in entries}
    paths = list(labels)
    index = paths.index(current.path) if current and current.path in paths else 0
    picked = st.radio("Open dataset", paths, index=index, format_func=labels.get, key="dataset_choice")
    if picked != (current.path if current else None):
        st.session_state["dataset"] = picked
        catalog.set_current(picked)
        for key in ("image", "filter_classes", "filter_kinds", "filter_splits", "gallery_page"):
            st.session_state.pop(key, None)
        st.rerun()
    col1, col2 = st.columns(2)
    if col1.button("Reload from disk", key="reload"):
        entry = catalog.find_dataset(picked)
        get_open(entry.path, entry.format, reload=True)
        st.rerun()
    if col2.button("Forget this dataset", key="forget", help="Removes it from the list; no file is touched."):
        catalog.remove_dataset(picked)
        st.session_state.pop("dataset", None)
        st.rerun()


def summary(opened: OpenDataset) -> None:
    dataset = opened.dataset
    report = health.report(opened)
    cols = st.columns(5)
    cols[0].metric("Images", f"{len(dataset):,}")
    cols[1].metric("Boxes", f"{dataset.num_boxes:,}")
    cols[2].metric("Classes", len(dataset.classes))
    cols[3].metric("Findings", f"{len(report.findings):,}")
    cols[4].metric("Unreadable files", len(dataset.skipped))
    st.caption(
        f"`{dataset.root}` · {label(dataset.format)} · loaded in {opened.seconds:.2f} s"
        + (" from the index cache" if opened.from_cache else "")
    )
    left, right = st.columns(2)
    with left:
        st.markdown("**Boxes per class**")
        counts = pd.DataFrame({"class": list(report.classes), "boxes": list(report.classes.values())})
        colours = colour_map(list(report.classes))
        if len(counts):
            st.altair_chart(
                alt.Chart(counts)
                .mark_bar()
                .encode(
                    x=alt.X("boxes:Q"),
                    y=alt.Y("class:N", sort=None),
                    color=alt.Color(
                        "class:N",
                        scale=alt.Scale(domain=list(colours), range=list(colours.values())),
                        legend=None,
                    ),
                    tooltip=["class", "boxes"],
                ),
                width="stretch",
            )
        else:
            st.caption("No classes.")
    with right:
        st.markdown("**Box sizes** (√(w·h), px)")
        sizes = pd.DataFrame({"size": list(report.size_histogram), "boxes": list(report.size_histogram.values())})
        if len(sizes):
            st.altair_chart(
                alt.Chart(sizes)
                .mark_bar()
                .encode(x=alt.X("size:N", sort=None), y="boxes:Q", tooltip=["size", "boxes"]),
                width="stretch",
            )
        else:
            st.caption("No boxes.")
    if report.splits:
        st.markdown("**Splits:** " + ", ".join(f"{k} {v:,}" for k, v in report.splits.items()))

    st.subheader("Health")
    groups = report.by_kind()
    if not groups:
        st.success("No findings.")
    for kind, findings in groups.items():
        with st.expander(f"{KINDS.get(kind, kind)} — {len(findings):,}", expanded=kind == "bad_file"):
            for n, f in enumerate(findings[:FINDINGS_WITH_LINKS]):
                c1, c2 = st.columns([5, 1])
                c1.markdown(f"`{f.file}` — {f.detail}")
                if f.image and kind not in ("bad_file", "missing_image", "orphan_annotation"):
                    if c2.button("Open image", key=f"finding-{kind}-{n}", help=f.image):
                        open_image(f.image, f.box)
            if len(findings) > FINDINGS_WITH_LINKS:
                st.dataframe(
                    pd.DataFrame([{"file": f.file, "detail": f.detail} for f in findings]),
                    hide_index=True,
                    width="stretch",
                )


def add_images_form(opened: OpenDataset) -> None:
    """Upload images, or copy a folder's images, into the dataset; they arrive unlabelled."""
    with st.expander("Add images"):
        if not capabilities(opened.dataset.format).add_images:
            why = catalog.cannot_add_images(opened.dataset.format)
            st.info(why[0].upper() + why[1:] + ".")
            return
        folder = catalog.image_folder(opened.dataset)
        st.caption(f"Copied into `{folder or '.'}/`. With no label yet, they go first in Annotate's review queue.")
        uploads = st.file_uploader(
            "Image files",
            type=["jpg", "jpeg", "png", "bmp", "webp"],
            accept_multiple_files=True,
            key="add_images_upload",
        )
        source = st.text_input("…or a folder of images", placeholder="/path/to/new/images", key="add_images_folder")
        if st.button("Add to the dataset", key="add_images_confirm", disabled=not uploads and not source.strip()):
            try:
                written = catalog.add_images(opened.dataset, {u.name: u.getvalue() for u in uploads or []})
                if source.strip():
                    root = catalog.resolve_path(source)
                    if not root.is_dir():
                        raise WorkbenchError(f"{root}: not a folder")
                    written += catalog.add_images(opened.dataset, sorted(p for p in root.iterdir() if is_image(p.name)))
            except (WorkbenchError, OSError) as e:
                st.error(str(e))
                return
            get_open(opened.root, opened.dataset.format, reload=True)
            st.session_state["datasets_flash"] = (
                f"Added {len(written)} image(s). Run `workbench suggest --data {opened.root} --only-unlabelled` "
                "to pre-annotate them."
            )
            st.rerun()
        unlabelled = sum(1 for r in opened.dataset.images if not len(r))
        if st.button(
            f"Suggest boxes for the {unlabelled} unlabelled image(s) with this dataset's latest model",
            key="suggest_unlabelled",
            disabled=not unlabelled,
            help="`workbench suggest --only-unlabelled`: the newest run trained on this dataset; boxes wait in Annotate until accepted",
        ):
            with st.spinner("Running the model …"):
                try:
                    result = suggestions.suggest(opened.root, fmt=opened.dataset.format, only_unlabelled=True)
                except WorkbenchError as e:
                    st.error(str(e))
                    return
            st.session_state["datasets_flash"] = (
                f"{result.boxes} suggestion(s) on {result.images} image(s) from {result.run}: review them in Annotate."
            )
            st.rerun()


def versions_section(opened: OpenDataset) -> None:
    """The dataset's versions (taken when training starts, or here), and the diff of two."""
    st.subheader("Versions")
    found = versions.list_versions(opened.root)
    current = content_hash(opened.dataset)
    c1, c2 = st.columns([3, 1])
    name = c1.text_input("Name", placeholder="e.g. after-review (default v1, v2, …)", key="version_name")
    c2.write("")
    if c2.button("Take a version now", key="version_take", width="stretch"):
        try:
            entry = versions.take_version(opened.dataset, name=name.strip() or None)
        except WorkbenchError as e:
            st.error(str(e))
        else:
            st.session_state["datasets_flash"] = f"Version {entry['name']} ({entry['hash'][:12]})."
            st.rerun()
    if not found:
        st.caption("No version yet: one is taken automatically when training starts.")
        return
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "name": v["name"],
                    "hash": v["hash"][:12],
                    "created": v["created"],
                    "images": v["images"],
                    "boxes": v["boxes"],
                    "reason": v["reason"],
                    "runs": ", ".join(v.get("runs", [])),
                    "is current": v["hash"] == current,
                }
                for v in found
            ]
        ),
        hide_index=True,
        width="stretch",
    )
    names = [v["name"] for v in found]
    c1, c2 = st.columns(2)
    old = c1.selectbox("Compare", names, index=len(names) - 1, key="diff_old")
    new = c2.selectbox("with", [versions.CURRENT, *names], key="diff_new")
    try:
        result = versions.diff(opened.root, old, new, current=opened.dataset)
    except WorkbenchError as e:
        st.error(str(e))
        return
    totals = result.totals()
    st.markdown(f"**{old} → {new}**: " + ", ".join(f"{v} {k}" for k, v in totals.items()))
    notes = [
        f"{label}: {', '.join(items[:10])}" + (" …" if len(items) > 10 else "")
        for label, items in (
            ("images added", result.images_added),
            ("images removed", result.images_removed),
            ("classes added", result.classes_added),
            ("classes removed", result.classes_removed),
        )
        if items
    ]
    if notes:
        st.caption(" · ".join(notes))
    if result.per_class:
        st.dataframe(
            pd.DataFrame(
                [{"class": k, **{t: c.get(t, 0) for t in totals}} for k, c in sorted(result.per_class.items())]
            ),
            hide_index=True,
            width="stretch",
        )
    for n, d in enumerate(result.images[:FINDINGS_WITH_LINKS]):
        a, b = st.columns([5, 1])
        a.markdown(f"`{d.path}`: " + "; ".join(d.changes))
        if d.path in {r.path for r in opened.dataset.images} and b.button("Open image", key=f"diff-open-{n}"):
            open_image(d.path)
    if len(result.images) > FINDINGS_WITH_LINKS:
        st.caption(f"… and {len(result.images) - FINDINGS_WITH_LINKS} more images (`workbench diff` lists them all).")


def main() -> None:
    ui.through_app()
    st.title("Datasets")
    added = add_form()
    if added is not None:
        st.success(f"Added {added.name} ({label(added.format)}).")
    entries = catalog.list_datasets()
    if not entries:
        st.info("No dataset yet: add a folder above.")
        return
    current = ui.current_entry()
    chooser(entries, current)
    current = ui.current_entry()
    if current is None:
        return
    opened = ui.open_entry(current, spinner=True)
    if opened is None:
        return
    if flash := st.session_state.pop("datasets_flash", None):
        st.success(flash)
    summary(opened)
    add_images_form(opened)
    versions_section(opened)


main()
