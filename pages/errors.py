"""Errors: what a trained run gets wrong on the current dataset.

Pick a run and an evaluation (or run one), then: the COCO metrics table, AP per class as bars,
the confusion matrix as a heat map, precision-recall curves, and the worst images (most false
positives plus false negatives) with the ground truth drawn solid and the predictions dashed; a
click opens the image in Annotate. The FiftyOne App (started on 127.0.0.1) shows the same
evaluation with ready views; images tagged ``fix`` there are listed as the relabel queue.
Two runs' per-class AP side by side, each named with the dataset version it trained on.
"""

from __future__ import annotations

import io
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from pages.common import ui
from workbench.datasets.catalog import DatasetEntry
from workbench.datasets.index import OpenDataset, get_open
from workbench.datasets.versions import run_version
from workbench.drawing import class_colour, open_rgb, placeholder
from workbench.errors import WorkbenchError
from workbench.evaluation import fiftyone_app as fa
from workbench.evaluation.evaluate import evaluate_run, load_evaluation
from workbench.evaluation.plots import draw_evaluated
from workbench.evaluation.report import (
    METRICS_JSON,
    EvalReport,
    compare_per_class,
    list_reports,
    load_report,
    read_detections,
)
from workbench.paths import models_dir
from workbench.training.registry import latest_name, latest_of, runs_with_weights

WORST = 12  # images in the grid
COLUMNS = 4
TILE = 360  # px, the longer side of a grid image


def open_in_annotate(entry: DatasetEntry, image: str) -> None:
    st.session_state["dataset"] = entry.path
    st.session_state["image"] = image
    st.switch_page("pages/annotate.py")


@st.cache_data(show_spinner=False)
def runs(models: str) -> list[str]:
    """Names of the runs with weights, newest first (``models`` keys the cache)."""
    return runs_with_weights()


@st.cache_data(show_spinner=False)
def cached_report(out_dir: str, mtime: float) -> EvalReport:
    return load_report(Path(out_dir))


def reports_of(run_dir: Path) -> tuple[list[Path], list[EvalReport]]:
    """The evaluation folders of a run and their reports (cached by file time), newest first."""
    found = list_reports(run_dir)
    return found, [cached_report(str(p), (p / METRICS_JSON).stat().st_mtime) for p in found]


def pick_run(entry: DatasetEntry) -> Path | None:
    """The run to look at: the latest one trained on the current dataset first, else the newest."""
    root = models_dir()
    names = runs(str(root))
    if not names:
        st.info("No trained model yet: train one on the Train page (or `workbench train --data DATASET`).")
        return None
    latest = latest_of(entry.path) or latest_name()
    index = names.index(latest) if latest in names else 0
    name = st.selectbox(
        "Run", names, index=index, key="errors_run", format_func=lambda n: f"{n} (latest)" if n == latest else n
    )
    return root / name


def evaluate_form(run_dir: Path, entry: DatasetEntry, dataset) -> None:
    """Split and threshold choice and the Evaluate button (predicts, computes, saves into the run)."""
    with st.expander("Evaluate this run on the current dataset", expanded=not list_reports(run_dir)):
        c1, c2, c3 = st.columns([2, 1, 1])
        choices = ["default (the run's validation images on its own dataset, else all)", "all", *dataset.splits]
        split = c1.selectbox("Images", choices, key="errors_split")
        score = c2.number_input(
            "Score threshold", 0.0, 1.0, 0.25, 0.05, key="errors_score", help="of the confusion matrix and the grid"
        )
        c3.write("")
        if c3.button("Evaluate", type="primary", key="errors_evaluate", width="stretch"):
            with st.spinner("Predicting and computing the metrics …"):
                try:
                    evaluate_run(
                        run_dir,
                        entry.path,
                        fmt=entry.format,
                        split=None if split == choices[0] else split,
                        score_threshold=float(score),
                    )
                except WorkbenchError as e:
                    st.error(str(e))
                    return
            st.cache_data.clear()
            st.rerun()


def pick_report(run_dir: Path, entry: DatasetEntry) -> EvalReport | None:
    found, reports = reports_of(run_dir)
    if not found:
        st.info("This run has no evaluation yet: evaluate it above (or `workbench eval --model RUN --data DATASET`).")
        return None
    here = [i for i, r in enumerate(reports) if r.is_of(entry.path)]
    choice = st.selectbox(
        "Evaluation",
        range(len(reports)),
        index=here[0] if here else 0,
        key="errors_report",
        format_func=lambda i: f"{found[i].name}: {reports[i].split}, {len(reports[i].images)} images",
    )
    report = reports[choice]
    if not report.is_of(entry.path):
        st.warning(f"This evaluation is of `{report.dataset}`, not of the current dataset `{entry.path}`.")
    return report


def fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def metrics_section(report: EvalReport) -> None:
    keys = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"]
    table = pd.DataFrame([{k: fmt(report.metrics.get(k)) for k in keys}])
    st.dataframe(table, hide_index=True, width="stretch")
    per_class = pd.DataFrame(
        [
            {"class": name, "AP": v["AP"], "AP50": v["AP50"], "ground-truth boxes": v["gt"]}
            for name, v in report.per_class.items()
        ]
    )
    left, right = st.columns(2)
    with left:
        st.markdown("**AP per class** (pycocotools)")
        bars = per_class.dropna(subset=["AP"]).melt(
            id_vars=["class"], value_vars=["AP", "AP50"], var_name="metric", value_name="value"
        )
        chart = (
            alt.Chart(bars)
            .mark_bar()
            .encode(
                x=alt.X("value:Q", scale=alt.Scale(domain=[0, 1]), title="average precision"),
                y=alt.Y("class:N", title=None),
                yOffset="metric:N",
                color=alt.Color("metric:N", scale=alt.Scale(range=["#3182bd", "#9ecae1"])),
                tooltip=["class", "metric", alt.Tooltip("value:Q", format=".3f")],
            )
        )
        st.altair_chart(chart, width="stretch")
        st.dataframe(per_class, hide_index=True, width="stretch")
    with right:
        conf = report.confusion
        st.markdown(f"**Confusion matrix** (IoU {conf['iou']:g}, score ≥ {conf['score_threshold']:g})")
        names = conf["classes"]
        cells = pd.DataFrame(
            [
                {"ground truth": g, "predicted": p, "count": conf["matrix"][i][j]}
                for i, g in enumerate(names)
                for j, p in enumerate(names)
            ]
        )
        base = alt.Chart(cells).encode(
            x=alt.X("predicted:N", sort=names), y=alt.Y("ground truth:N", sort=names), tooltip=list(cells.columns)
        )
        heat = base.mark_rect().encode(color=alt.Color("count:Q", scale=alt.Scale(type="symlog", scheme="blues")))
        text = base.mark_text().encode(text="count:Q")
        st.altair_chart(heat + text, width="stretch")


def pr_section(report: EvalReport) -> None:
    st.markdown("**Precision–recall per class** (IoU 0.50; pycocotools' 101 recall points)")
    rows = []
    for name, curve in report.pr_curves.items():
        if report.per_class.get(name, {}).get("AP") is None:
            continue
        rows += [
            {"class": name, "recall": r, "precision": p}
            for r, p in zip(curve["recall"], curve["precision50"], strict=True)
        ]
    if not rows:
        st.info("No class with ground truth in these images.")
        return
    names = list(dict.fromkeys(r["class"] for r in rows))
    colours = [class_colour(report.classes.index(n)) for n in names]
    chart = (
        alt.Chart(pd.DataFrame(rows))
        .mark_line()
        .encode(
            x=alt.X("recall:Q", scale=alt.Scale(domain=[0, 1])),
            y=alt.Y("precision:Q", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("class:N", scale=alt.Scale(domain=names, range=colours)),
        )
    )
    st.altair_chart(chart, width="stretch")


@st.cache_data(max_entries=200, show_spinner=False)
def comparison_tile(root: str, fmt_name: str, revision: int, out_dir: str, path: str, score: float) -> bytes:
    """The image with ground truth (solid) and predictions at ``score`` (dashed), as JPEG bytes."""
    dataset = get_open(root, fmt_name).dataset
    try:
        record = dataset.record(path)
        image = open_rgb(Path(root) / path)
    except (KeyError, WorkbenchError) as e:
        image = placeholder(TILE, str(e)[:50])
    else:
        image = draw_evaluated(
            image,
            dataset=dataset,
            record=record,
            detections=read_detections(Path(out_dir)).get(path),
            classes=load_report(Path(out_dir)).classes,
            score_threshold=score,
        )
        image.thumbnail((TILE * 2, TILE * 2))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def worst_section(report: EvalReport, entry: DatasetEntry, opened: OpenDataset) -> None:
    worst = report.worst_images(WORST)
    score = report.confusion["score_threshold"]
    st.markdown(
        f"**Worst images**: most false positives + false negatives at score ≥ {score:g}. "
        "Ground truth solid, predictions dashed with their score."
    )
    if not worst:
        st.success("No false positive or false negative in these images.")
        return
    known = {r.path for r in opened.dataset.images}
    for row in range(0, len(worst), COLUMNS):
        cols = st.columns(COLUMNS)
        for col, item in zip(cols, worst[row : row + COLUMNS], strict=False):
            with col:
                st.image(
                    comparison_tile(
                        str(opened.root),
                        opened.dataset.format,
                        opened.revision,
                        str(report.out_dir),
                        item["path"],
                        score,
                    ),
                    width="stretch",
                )
                name = item["path"].rsplit("/", 1)[-1]
                label = f"{name} · {item['fp']} FP · {item['fn']} FN"
                if st.button(
                    label, key=f"errors-open-{item['path']}", width="stretch", disabled=item["path"] not in known
                ):
                    open_in_annotate(entry, item["path"])


def version_name(run_dir: Path) -> str:
    """The dataset version a run trained on, as text."""
    found = run_version(run_dir)
    if not found:
        return "unknown dataset version"
    return f"dataset version {found['name']} ({found['hash'][:12]}) of `{Path(found.get('dataset') or '').name}`"


def compare_section(report: EvalReport, run_dir: Path, entry: DatasetEntry) -> None:
    """Per-class AP of this run beside another run's, on evaluations of the same dataset."""
    others = [n for n in runs(str(run_dir.parent)) if n != run_dir.name]
    with st.expander("Compare with another run (per-class AP)"):
        if not others:
            st.caption("No other run to compare with.")
            return
        other = st.selectbox("Other run", others, key="errors_compare_run")
        other_dir = run_dir.parent / other
        same = [r for r in reports_of(other_dir)[1] if r.is_of(report.dataset)]
        if not same:
            st.info(f"{other} has no evaluation on `{report.dataset}` yet: evaluate it above (pick it as the run).")
            return
        theirs = next((r for r in same if r.split == report.split), same[0])
        columns = {"ours": f"AP {run_dir.name}", "theirs": f"AP {other}"}
        rows = pd.DataFrame(compare_per_class(report, theirs)).rename(columns=columns)
        st.dataframe(rows, hide_index=True, width="stretch")
        st.caption(
            f"**{run_dir.name}**: {version_name(run_dir)}; evaluated on {report.split}.  \n"
            f"**{other}**: {version_name(other_dir)}; evaluated on {theirs.split}."
        )


@st.cache_resource(show_spinner=False)
def fiftyone_session(port: int):
    """One FiftyOne App per Streamlit server; its dataset is switched on later launches."""
    return {"session": None, "url": None}


def fiftyone_section(report: EvalReport, entry: DatasetEntry, opened: OpenDataset) -> None:
    st.markdown(
        "**FiftyOne**: the same evaluation with ready views (false positives, false negatives, low-IoU "
        "matches, class confusions, most mistaken). Tag images `fix` there to queue them for relabelling."
    )
    holder = fiftyone_session(fa.DEFAULT_PORT)
    c1, c2 = st.columns(2)
    if c1.button("Open in the FiftyOne App", key="errors_fiftyone", type="primary", width="stretch"):
        with st.spinner("Loading the dataset and the predictions into FiftyOne …"):
            try:
                errors = fa.errors_from_evaluation(
                    load_evaluation(report.out_dir, opened.dataset),
                    score_threshold=report.confusion["score_threshold"],
                )
                if holder["session"] is None:
                    holder["session"] = fa.launch(errors.dataset, port=fa.DEFAULT_PORT)
                else:
                    holder["session"].dataset = errors.dataset
                holder["url"] = fa.view_url(holder["session"], errors.dataset)
                st.session_state["errors_brain"] = errors.summary.get("brain")
            except Exception as e:  # the database or the App may fail to start: say so, keep the page
                st.error(f"FiftyOne could not start: {e}")
    if holder["url"]:
        st.markdown(f"FiftyOne App: [{holder['url']}]({holder['url']})")
        brain = st.session_state.get("errors_brain") or {}
        if brain:
            st.caption(" · ".join(f"{k}: {v}" for k, v in brain.items()))
    if c2.button("Show the relabel queue", key="errors_queue", width="stretch"):
        try:
            st.session_state["errors_queue_items"] = fa.relabel_queue(entry.path)
        except Exception as e:
            st.error(f"FiftyOne could not be read: {e}")
    queue = st.session_state.get("errors_queue_items")
    if queue is not None:
        if not queue:
            st.info("No image is tagged `fix` in FiftyOne.")
        for item in queue:
            a, b = st.columns([3, 1])
            a.markdown(f"`{item['path']}`: " + "; ".join(item["reasons"]))
            if b.button("Open in Annotate", key=f"errors-queue-{item['path']}", width="stretch"):
                open_in_annotate(entry, item["path"])


def main() -> None:
    st.title("Errors")
    found = ui.open_current()
    if found is None:
        return
    entry, opened = found
    run_dir = pick_run(entry)
    if run_dir is None:
        return
    evaluate_form(run_dir, entry, opened.dataset)
    report = pick_report(run_dir, entry)
    if report is None:
        return
    st.caption(f"Run `{report.run}` scored {report.scored()}.")
    st.caption(f"`{run_dir.name}` trained on {version_name(run_dir)}.")
    metrics_section(report)
    compare_section(report, run_dir, entry)
    pr_section(report)
    worst_section(report, entry, opened)
    fiftyone_section(report, entry, opened)


main()
