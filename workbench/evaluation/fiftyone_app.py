"""FiftyOne for error analysis: a persistent FiftyOne dataset mirroring a workbench dataset, a run's
predictions and evaluation in it, ready views, the App, and tags that come back as a relabel queue.

(Named ``fiftyone_app`` so that it does not shadow the ``fiftyone`` package.)

    from workbench.evaluation import fiftyone_app as fa
    errors = fa.prepare_errors("latest", "datasets/facemask-sample")   # evaluate + load + views
    session = fa.launch(errors.dataset, port=5151); print(session.url)
    fa.relabel_queue("datasets/facemask-sample")                         # samples tagged "fix"

One persistent FiftyOne dataset per workbench folder and workspace (``dataset_name``), one
sample per image with ``ground_truth``, ``split``, ``source`` and ``wb_path`` (the workbench's
relative image path, the key back). Boxes are FiftyOne's relative ``[x, y, w, h]`` in ``[0, 1]``
(``to_fiftyone_box``); ignore regions carry ``iscrowd = 1``. Each run's predictions, at the
confusion matrix's score threshold, have their own field ``pred_<run>`` and evaluation keys
``eval_<run>`` (classwise) and ``eval_<run>_any`` (not classwise: the class confusions), so
loading one run keeps the others'; the saved views and the brain run follow the run loaded last.
The database, the names and the path mapping are ``fiftyone_db``'s. docs/evaluation.md
describes the fields, the brain runs and the database; docs/scale.md a shared MongoDB. No
Streamlit here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.annotations import Dataset, Detections, ImageRecord
from workbench.boxes import xywh_to_xyxy, xyxy_to_xywh
from workbench.evaluation.evaluate import Evaluation, evaluate_run
from workbench.evaluation.fiftyone_db import (
    database_uri,
    dataset_name,
    fiftyone,
    find_dataset,
    redacted,
    shared_root,
)
from workbench.paths import to_local, to_shared
from workbench.splits import is_ignore

log = logging.getLogger(__name__)

GT_FIELD = "ground_truth"
FIX_TAG = "fix"
LOW_IOU = 0.75  # a true positive below this IoU is a "low-IoU match"
DEFAULT_PORT = 5151

# The saved views each analysis (re)writes, by name, with what they show.
VIEWS = {
    "false-positives": "predictions that match no ground-truth box of their class (most FP first)",
    "false-negatives": "ground-truth boxes no prediction of their class found (most FN first)",
    "low-iou": f"true positives with IoU < {LOW_IOU}: loose boxes, in the labels or the model",
    "class-confusions": "predictions that overlap a ground-truth box of another class (IoU >= 0.5)",
    "most-mistaken": "samples by fiftyone-brain mistakenness (likely label errors first)",
    "to-fix": f"samples tagged '{FIX_TAG}': the workbench's relabel queue",
}


def to_fiftyone_box(box: np.ndarray | list[float], width: int, height: int) -> list[float]:
    """Workbench pixels ``x1, y1, x2, y2`` -> FiftyOne relative ``[x, y, w, h]``."""
    return (xyxy_to_xywh([box])[0] / [width, height, width, height]).tolist()


def from_fiftyone_box(box: list[float], width: int, height: int) -> list[float]:
    """FiftyOne relative ``[x, y, w, h]`` -> workbench pixels ``x1, y1, x2, y2``."""
    return (xywh_to_xyxy([box])[0] * [width, height, width, height]).tolist()


def ground_truth_detections(dataset: Dataset, record: ImageRecord):
    """A record's boxes as ``fo.Detections`` (every box, ignore regions with ``iscrowd = 1``)."""
    fo = fiftyone()
    detections = []
    for i in range(len(record)):
        det = fo.Detection(
            label=dataset.class_name(int(record.class_ids[i])),
            bounding_box=to_fiftyone_box(record.boxes[i], record.width, record.height),
        )
        if is_ignore(dataset, record, i):
            det["iscrowd"] = 1
        detections.append(det)
    return fo.Detections(detections=detections)


def prediction_detections(det: Detections, classes: list[str], width: int, height: int):
    """A model's detections as ``fo.Detections`` with ``confidence``."""
    fo = fiftyone()
    return fo.Detections(
        detections=[
            fo.Detection(
                label=classes[int(c)] if 0 <= int(c) < len(classes) else str(int(c)),
                bounding_box=to_fiftyone_box(b, width, height),
                confidence=float(s),
            )
            for b, s, c in zip(det.boxes, det.scores, det.class_ids, strict=True)
        ]
    )


def eval_key(run: str) -> str:
    """The evaluation key of a run: ``eval_<run>`` with every non-identifier character as ``_``."""
    return "eval_" + re.sub(r"\W", "_", run)


def pred_field(run: str) -> str:
    """The field of a run's predictions: ``pred_<run>`` (the same characters as ``eval_key``)."""
    return "pred_" + re.sub(r"\W", "_", run)


def runs(ds) -> list[str]:
    """The runs whose predictions the dataset holds, the one loaded last at the end."""
    names = list(ds.info.get("runs") or ([ds.info["run"]] if ds.info.get("run") else []))
    schema = ds.get_field_schema()
    return [r for r in names if pred_field(r) in schema]


def _source(dataset: Dataset, record: ImageRecord) -> str:
    if record.annotation:
        return record.annotation
    files = dataset.extra.get("files") if isinstance(dataset.extra, dict) else None
    return str(files[0]) if isinstance(files, list) and files else ""


def _sample_fields(dataset: Dataset, record: ImageRecord) -> dict[str, Any]:
    fo = fiftyone()
    return {
        GT_FIELD: ground_truth_detections(dataset, record),
        "split": record.split,
        "source": _source(dataset, record),
        "wb_path": record.path,
        "metadata": fo.ImageMetadata(width=int(record.width), height=int(record.height)),
    }


def refresh(dataset: Dataset, *, name: str | None = None, reevaluate: bool = True):
    """Create or update the persistent FiftyOne dataset of ``dataset``; return it.

    New images are added, removed ones deleted, and every sample's ground truth, split and
    source rewritten from the workbench dataset. Sample and label tags set in the App stay
    (label tags on ground truth survive only where the box is unchanged). Sample paths are
    stored as ``to_shared`` maps them. When the dataset holds runs' predictions and
    ``reevaluate`` is true, their evaluations are run again on the new ground truth.
    """
    fo = fiftyone()
    root = Path(dataset.root).resolve()
    records = {to_shared(root / r.path): r for r in dataset.images}
    if name:
        ds = fo.load_dataset(name) if fo.dataset_exists(name) else None
    else:
        ds = find_dataset(root)
        name = dataset_name(root)
    if ds is None:
        ds = fo.Dataset(name, persistent=True)
        for key in ("split", "source", "wb_path"):  # declared: a field that is None everywhere is not created
            ds.add_sample_field(key, fo.StringField)
    ds.info["workbench_root"] = shared_root(root)
    have = set(ds.values("filepath"))
    gone = have - set(records)
    if gone:
        ds.delete_samples(ds.select_by("filepath", sorted(gone)))
    new = [p for p in records if p not in have]
    if new:
        ds.add_samples([fo.Sample(filepath=p, **_sample_fields(dataset, records[p])) for p in new])
    old = [p for p in records if p in have]
    if old:
        tags = _ground_truth_label_tags(ds)
        fields = {p: _sample_fields(dataset, records[p]) for p in old}
        for p, values in fields.items():
            _restore_label_tags(values[GT_FIELD], tags.get(p, {}))
        for key in (GT_FIELD, "split", "source", "wb_path", "metadata"):
            ds.set_values(key, {p: values[key] for p, values in fields.items()}, key_field="filepath")
    ds.info["workbench_format"] = dataset.format
    ds.save()
    loaded = runs(ds)
    if reevaluate and old:
        for run in loaded:  # the last one loaded last: the views and the brain are its
            evaluate(ds, run, brain=run == loaded[-1])
    return ds


def _ground_truth_label_tags(ds) -> dict[str, dict[tuple, list[str]]]:
    """``filepath -> {(label, rounded box): tags}`` of the tagged ground-truth boxes."""
    out: dict[str, dict[tuple, list[str]]] = {}
    if not len(ds) or not ds.distinct(f"{GT_FIELD}.detections.tags"):
        return out
    for path, dets in zip(*ds.values(["filepath", GT_FIELD]), strict=True):
        for d in dets.detections if dets else []:
            if d.tags:
                out.setdefault(path, {})[(d.label, *np.round(d.bounding_box, 6))] = list(d.tags)
    return out


def _restore_label_tags(detections, tags: dict[tuple, list[str]]) -> None:
    for d in detections.detections:
        found = tags.get((d.label, *np.round(d.bounding_box, 6)))
        if found:
            d.tags = list(found)


def load_predictions(
    ds, dataset: Dataset, records: list[ImageRecord], detections: list[Detections], classes: list[str], *, run: str
) -> None:
    """Put run ``run``'s detections into its field ``pred_<run>`` (samples not in ``records`` get
    ``None``). Only this run's old evaluations are deleted: every other run's stay."""
    fo = fiftyone()
    root = Path(dataset.root).resolve()
    for key in (eval_key(run), eval_key(run) + "_any"):
        if ds.has_evaluation(key):
            ds.delete_evaluation(key)
    field_name = pred_field(run)
    if field_name not in ds.get_field_schema():
        ds.add_sample_field(field_name, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    by_path = {
        to_shared(root / r.path): prediction_detections(d, classes, r.width, r.height)
        for r, d in zip(records, detections, strict=True)
    }
    values = {p: by_path.get(p) for p in ds.values("filepath")}
    ds.set_values(field_name, values, key_field="filepath")
    ds.info["runs"] = [r for r in runs(ds) if r != run] + [run]
    ds.info["run"] = run
    ds.save()


def evaluate(ds, run: str, *, iou: float = 0.5, brain: bool = True) -> dict[str, Any]:
    """Run FiftyOne's COCO-style ``evaluate_detections`` on the samples with ``run``'s predictions
    (keys ``eval_<run>`` and ``eval_<run>_any``), fiftyone-brain's mistakenness, and save the
    ready views (of this run).

    Returns ``{"eval_key", "samples", "tp", "fp", "fn", "brain": {"mistakenness": ..., "hardness": ...}}``.
    """
    fiftyone()
    key, preds = eval_key(run), pred_field(run)
    view = ds.exists(preds)
    for k in (key, key + "_any"):
        if ds.has_evaluation(k):
            ds.delete_evaluation(k)
    view.evaluate_detections(preds, gt_field=GT_FIELD, eval_key=key, method="coco", iou=iou, classwise=True)
    view.evaluate_detections(preds, gt_field=GT_FIELD, eval_key=key + "_any", method="coco", iou=iou, classwise=False)
    brain_done = run_brain(ds, view, preds) if brain else {"mistakenness": "not run", "hardness": "not run"}
    ds.info["eval_key"] = key
    ds.info["brain"] = brain_done
    ds.save()
    save_views(ds, run)
    counts = {t: int(sum(view.values(f"{key}_{t}"))) for t in ("tp", "fp", "fn")}
    log.info("FiftyOne evaluation %s on %d samples: %s", key, len(view), counts)
    return {"eval_key": key, "samples": len(view), **counts, "brain": brain_done}


def run_brain(ds, view, preds: str) -> dict[str, str]:
    """fiftyone-brain methods that run offline on detections (predictions ``preds``); says what
    ran and why not."""
    import fiftyone.brain as fob

    done: dict[str, str] = {}
    try:
        if "mistakenness" in ds.list_brain_runs():
            ds.delete_brain_run("mistakenness")
        fob.compute_mistakenness(view, preds, label_field=GT_FIELD, use_logits=False)
        done["mistakenness"] = "ran (from prediction confidences)"
    except Exception as e:  # a brain failure must not lose the evaluation
        log.warning("mistakenness failed: %s", e)
        done["mistakenness"] = f"failed: {e}"
    done["hardness"] = "skipped: needs per-sample classification logits; detections have none"
    return done


def make_views(ds, run: str) -> dict[str, Any]:
    """The ready views of run ``run``'s evaluation (see ``VIEWS``)."""
    from fiftyone import ViewField as F

    key, preds = eval_key(run), pred_field(run)
    evaluated = ds.exists(preds)
    views = {
        "false-positives": evaluated.filter_labels(preds, F(key) == "fp").sort_by(f"{key}_fp", reverse=True),
        "false-negatives": evaluated.filter_labels(GT_FIELD, F(key) == "fn").sort_by(f"{key}_fn", reverse=True),
        "low-iou": evaluated.filter_labels(preds, (F(key) == "tp") & (F(f"{key}_iou") < LOW_IOU)),
        "class-confusions": evaluated.filter_labels(
            preds, (F(f"{key}_any") == "fp") & (F(f"{key}_any_id") != "")
        ).filter_labels(GT_FIELD, (F(f"{key}_any") == "fn") & (F(f"{key}_any_id") != "")),
        "to-fix": ds.match_tags(FIX_TAG),
    }
    if "mistakenness" in ds.get_field_schema():
        views["most-mistaken"] = evaluated.exists("mistakenness").sort_by("mistakenness", reverse=True)
    return views


def save_views(ds, run: str) -> list[str]:
    """Save run ``run``'s ready views in the dataset (the App lists them under saved views)."""
    names = []
    for name, view in make_views(ds, run).items():
        ds.save_view(name, view, description=VIEWS[name], overwrite=True)
        names.append(name)
    return names


def launch(ds, *, view: Any = None, address: str = "127.0.0.1", port: int = DEFAULT_PORT):
    """Start the FiftyOne App on ``address:port`` (no browser is opened); return the session.

    ``session.url`` is the link. The App lives as long as this process.
    """
    fo = fiftyone()
    return fo.launch_app(ds, view=view, address=address, port=port, remote=True, auto=False)


def view_url(session, ds, view_name: str | None = None) -> str:
    """The App's link, opening saved view ``view_name`` when given."""
    base = session.url.rstrip("/")
    if not view_name:
        return f"{base}/datasets/{ds.name}"
    return f"{base}/datasets/{ds.name}?view={view_name}"


def relabel_queue(dataset_root: Path | str, *, tag: str = FIX_TAG) -> list[dict[str, Any]]:
    """Images tagged ``tag`` in FiftyOne (on the sample or on any of its labels), for Annotate.

    Returns ``[{"path": relative image path, "file": the image on this machine (``to_local``),
    "reasons": [str, ...]}]`` in path order; ``[]`` when the folder has no FiftyOne dataset yet.
    """
    ds = find_dataset(dataset_root)
    if ds is None:
        return []
    key = ds.info.get("eval_key")
    reasons: dict[str, list[str]] = {}
    files: dict[str, str] = {}
    for path, file in zip(*ds.match_tags(tag).values(["wb_path", "filepath"]), strict=True):
        reasons.setdefault(path, []).append(f"tagged '{tag}' in FiftyOne")
        files[path] = file
    for field_name in (GT_FIELD, *map(pred_field, runs(ds))):
        view = ds.select_labels(tags=tag, fields=field_name)
        for path, file, dets in zip(*view.values(["wb_path", "filepath", field_name]), strict=True):
            files[path] = file
            for d in dets.detections if dets else []:
                what = "box" if field_name == GT_FIELD else "prediction"
                reasons.setdefault(path, []).append(f"{what} '{d.label}' tagged '{tag}'")
    if key and ds.has_evaluation(key) and reasons:
        counts = ds.select_by("wb_path", sorted(reasons)).values(["wb_path", f"{key}_fp", f"{key}_fn"])
        for path, fp, fn in zip(*counts, strict=True):
            if fp or fn:
                reasons[path].append(f"{fp or 0} false positive(s), {fn or 0} false negative(s)")
    return [{"path": p, "file": to_local(files[p]), "reasons": reasons[p]} for p in sorted(reasons)]


def clear_tag(dataset_root: Path | str, paths: list[str], *, tag: str = FIX_TAG) -> int:
    """Remove ``tag`` from the samples (and their labels) of the given relative image paths; return how many."""
    ds = find_dataset(dataset_root)
    if ds is None:
        return 0
    view = ds.select_by("wb_path", list(paths))
    view.untag_samples(tag)
    view.untag_labels(tag)
    return len(view)


@dataclass
class Errors:
    """What ``prepare_errors`` built: the FiftyOne dataset, the evaluation, the views."""

    dataset: Any
    eval_key: str
    run: str
    summary: dict[str, Any] = field(default_factory=dict)
    views: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The ``workbench errors --json`` object: the FiftyOne dataset's name, ``summary`` and
        the samples in each saved view."""
        views = {name: len(self.dataset.load_saved_view(name)) for name in self.views}
        database = redacted(database_uri())
        return {"fiftyone_dataset": self.dataset.name, "database": database, **self.summary, "views": views}


def prepare_errors(
    run: str | Path,
    data: str | Path,
    *,
    fmt: str | None = None,
    split: str | None = None,
    score_threshold: float = 0.25,
    device: str = "auto",
    on_progress: Callable[[int, int], None] | None = None,
) -> Errors:
    """Evaluate run ``run`` on ``data`` (``evaluation.evaluate_run``, saved into the run), then
    refresh the FiftyOne dataset, load the predictions, evaluate there and save the views."""
    ev = evaluate_run(
        run, data, fmt=fmt, split=split, score_threshold=score_threshold, device=device, on_progress=on_progress
    )
    return errors_from_evaluation(ev, score_threshold=score_threshold)


def errors_from_evaluation(ev: Evaluation, *, score_threshold: float = 0.25) -> Errors:
    """The FiftyOne half of ``prepare_errors`` for an evaluation already computed (or loaded)."""
    ds = refresh(ev.dataset, reevaluate=False)  # evaluated below, with the new predictions
    kept = [d[d.scores >= score_threshold] for d in ev.detections]
    load_predictions(ds, ev.dataset, ev.records, kept, ev.classes, run=ev.run)
    summary = evaluate(ds, ev.run)
    return Errors(
        dataset=ds, eval_key=summary["eval_key"], run=ev.run, summary=summary, views=sorted(ds.list_saved_views())
    )
