"""The review queue: which images a person should look at next, and why.

Order (``build_queue``):

1. unlabelled images (no box), with how many suggestions wait on each;
2. images where the model disagrees most with the labels: FiftyOne's mistakenness when it has
   run (passed in as ``mistakenness``), else false positives plus false negatives of the last
   evaluation of the latest run trained on this dataset (else of ``latest``) on it (``last_evaluation``);
3. images with pending suggestions, least confident first (mean suggestion score).

Every entry is ``{"path", "tier", "reasons": [str, ...]}``. No Streamlit here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.datasets.catalog import resolve_path
from workbench.datasets.index import OpenDataset, open_dataset
from workbench.evaluation import fiftyone_app as fa
from workbench.evaluation.report import list_reports, load_report
from workbench.labelling import suggestions
from workbench.training.registry import latest_name, latest_of, list_runs

TIERS = ("unlabelled", "disagreement", "low confidence")


def last_evaluation(root: Path | str) -> tuple[str, dict[str, tuple[int, int]]] | None:
    """``(run, {path: (fp, fn)})`` of the newest evaluation on the dataset in ``root`` of the
    latest run trained on it (else of ``latest``, else of any run), or ``None``."""
    try:
        runs = list_runs()
    except OSError:
        return None
    latest = latest_of(root) or latest_name()
    runs.sort(key=lambda r: r["run"] != latest)  # the dataset's latest run first, then newest first
    resolved = resolve_path(root)
    for run in runs:
        for out_dir in list_reports(Path(run["path"])):
            try:
                report = load_report(out_dir)
                same = resolve_path(report.dataset) == resolved
            except Exception:  # an unreadable report is skipped, never fatal
                continue
            if same:
                return report.run, {im["path"]: (int(im["fp"]), int(im["fn"])) for im in report.images}
    return None


def fiftyone_mistakenness(root: Path | str) -> dict[str, float]:
    """``{path: mistakenness}`` from FiftyOne when its brain run exists (this starts FiftyOne's
    database: call it only when the user asked for FiftyOne); ``{}`` otherwise."""
    fo = fa.fiftyone()
    name = fa.dataset_name(root)
    if not fo.dataset_exists(name):
        return {}
    ds = fo.load_dataset(name)
    if "mistakenness" not in ds.get_field_schema():
        return {}
    view = ds.exists("mistakenness")
    return {p: float(m) for p, m in zip(*view.values(["wb_path", "mistakenness"]), strict=True)}


def build_queue(
    opened: OpenDataset,
    *,
    pending: dict[str, list[dict[str, Any]]] | None = None,
    mistakenness: dict[str, float] | None = None,
    evaluation: tuple[str, dict[str, tuple[int, int]]] | None = None,
) -> list[dict[str, Any]]:
    """The review queue of ``opened`` (see the module docstring). ``pending`` defaults to the
    stored suggestions; pass ``mistakenness`` (FiftyOne) or ``evaluation`` (``last_evaluation``)
    for the disagreement tier: mistakenness wins when given and not empty."""
    dataset = opened.dataset
    pending = suggestions.pending(dataset.root) if pending is None else pending
    entries: list[tuple[tuple, dict[str, Any]]] = []
    for r in dataset.images:
        waiting = pending.get(r.path) or []
        note = f"{len(waiting)} suggestion(s) waiting" if waiting else "no suggestion yet (run `workbench suggest`)"
        if not len(r):
            entries.append(((0, 0.0, r.path), {"path": r.path, "tier": TIERS[0], "reasons": ["no labels", note]}))
            continue
        if mistakenness:
            value = mistakenness.get(r.path)
            if value is not None and value > 0:
                entries.append(
                    (
                        (1, -value, r.path),
                        {"path": r.path, "tier": TIERS[1], "reasons": [f"FiftyOne mistakenness {value:.2f}"]},
                    )
                )
                continue
        elif evaluation:
            fp, fn = evaluation[1].get(r.path, (0, 0))
            if fp + fn:
                reason = f"{fp} false positive(s) + {fn} false negative(s) in the last evaluation ({evaluation[0]})"
                entries.append(((1, -(fp + fn), r.path), {"path": r.path, "tier": TIERS[1], "reasons": [reason]}))
                continue
        if waiting:
            confidence = suggestions.score_summary(waiting) or 0.0
            reason = f"{len(waiting)} suggestion(s), mean score {confidence:.2f}"
            entries.append(((2, confidence, r.path), {"path": r.path, "tier": TIERS[2], "reasons": [reason]}))
    entries.sort(key=lambda e: e[0])
    return [e for _, e in entries]


def queue_of(root: Path | str, fmt: str | None = None) -> list[dict[str, Any]]:
    """The review queue of the dataset in ``root`` (format ``fmt``, default detected), its
    disagreement tier from the last evaluation; what ``workbench review`` prints."""
    opened = open_dataset(root, fmt)
    return build_queue(opened, evaluation=last_evaluation(opened.root))


__all__ = ["TIERS", "build_queue", "fiftyone_mistakenness", "last_evaluation", "queue_of"]
