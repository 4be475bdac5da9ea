"""Fixtures of the evaluation tests: an isolated FiftyOne database, the session's tiny model
evaluated, and hand-made datasets and detections.

FiftyOne reads its configuration when it is first imported, so the database folder is set
here, when pytest loads this file, before any test imports ``fiftyone``: a fresh temporary
folder per test session, never ``~/.fiftyone``. The ``mongod`` FiftyOne starts there is stopped
(and checked gone) when the session ends.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TinyModel, copy_run
from workbench.annotations import Dataset, Detections, ImageRecord
from workbench.evaluation.evaluate import compute_report, evaluate_run

FIFTYONE_TMP = Path(tempfile.mkdtemp(prefix="wb-fiftyone-"))
os.environ["FIFTYONE_DATABASE_DIR"] = str(FIFTYONE_TMP / "db")
os.environ["FIFTYONE_CONFIG_PATH"] = str(FIFTYONE_TMP / "config.json")  # not the user's config
os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"
os.environ["FIFTYONE_SHOW_PROGRESS_BARS"] = "false"
for _name in (
    "FIFTYONE_DATABASE_URI",
    "FIFTYONE_PRIVATE_DATABASE_PORT",
    "FIFTYONE_DATABASE_NAME",
    "WORKBENCH_FIFTYONE_URI",
    "WORKBENCH_PATH_MAP",
):
    os.environ.pop(_name, None)


def _mongod_processes() -> list:
    """Running ``mongod`` processes serving the temporary folder (an exited one left as a zombie,
    when this container's init does not reap it, is not running)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["name", "cmdline", "status"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
        except psutil.Error:
            continue
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if "mongod" in (proc.info["name"] or "") and str(FIFTYONE_TMP) in cmdline:
            found.append(proc)
    return found


@pytest.fixture(scope="session")
def fiftyone_db():
    """The ``fiftyone`` module connected to a ``mongod`` in a temporary folder; stopped afterwards."""
    if "fiftyone" in sys.modules:
        import fiftyone as fo

        assert fo.config.database_dir == str(FIFTYONE_TMP / "db"), "fiftyone was imported before the test isolation"
    import fiftyone as fo
    import fiftyone.constants as foc

    foc.WELCOME_PATH = str(FIFTYONE_TMP / "welcome.json")  # the App's first-launch marker, else under ~
    assert fo.config.database_uri is None
    assert fo.list_datasets() == []  # starts mongod in FIFTYONE_TMP; a fresh database
    assert _mongod_processes(), "expected a mongod serving the temporary database folder"
    yield fo
    import fiftyone.core.odm.database as fodb

    fodb._disconnect()
    if fodb._db_service is not None:
        fodb._db_service.stop()
        fodb._db_service = None
    deadline = time.monotonic() + 20
    while _mongod_processes() and time.monotonic() < deadline:
        time.sleep(0.25)
    left = _mongod_processes()
    for proc in left:  # ours: started for this session
        proc.kill()
    shutil.rmtree(FIFTYONE_TMP, ignore_errors=True)
    assert not left, f"mongod still running after the tests: {left}"


def pytest_sessionfinish(session, exitstatus):
    """The temporary folder goes even when no test used the database."""
    shutil.rmtree(FIFTYONE_TMP, ignore_errors=True)


@pytest.fixture(scope="session")
def voc8(tiny_model: TinyModel) -> Path:
    """The 8 shared VOC images the tiny model trained on (the session's: tests must not change them)."""
    return tiny_model.data


@pytest.fixture(scope="session")
def tiny_run(tiny_model: TinyModel, tmp_path_factory) -> Path:
    """The tiny model's run folder, copied (the only run of its registry): evaluations are saved into it."""
    return copy_run(tiny_model, tmp_path_factory.mktemp("evaluation-models"))


@pytest.fixture(scope="session")
def evaluated(tiny_run, voc8):
    """The tiny run evaluated on all 8 images (saved into the run's ``eval/`` folder)."""
    return evaluate_run(tiny_run, voc8, split="all")


CLASSES = ["a", "b", "c"]
TWO_IMAGES = [
    ([[10, 10, 60, 80], [100, 50, 200, 150]], [0, 1]),
    ([[30, 40, 90, 100], [200, 20, 380, 280], [5, 5, 25, 25]], [1, 0, 2]),
]


def make_dataset(tmp_path, images: list[tuple[list[list[float]], list[int]]], classes=CLASSES) -> Dataset:
    """A dataset of 400 x 300 images ``images/<i>.png`` (no files) with the given boxes and class ids."""
    records = [
        ImageRecord(
            path=f"images/{i}.png", width=400, height=300, boxes=np.array(b, dtype=float).reshape(-1, 4), class_ids=c
        )
        for i, (b, c) in enumerate(images)
    ]
    return Dataset(root=tmp_path, format="voc", classes=list(classes), images=records)


def perfect(dataset: Dataset) -> list[Detections]:
    """Every ground-truth box found, with its class, at score 0.9."""
    return [Detections(r.boxes, np.full(len(r), 0.9), r.class_ids) for r in dataset.images]


def report_of(dataset, detections, classes=CLASSES, **kwargs):
    return compute_report(dataset, dataset.images, detections, classes, **kwargs)
