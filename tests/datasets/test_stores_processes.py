"""The workspace stores of ``workbench.datasets`` under real concurrent processes (spawned, not threads):
the dataset list, the versions and the index cache lose no update and give no name twice."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest

from tests.app.conftest import copy_voc
from workbench.annotations import Dataset, ImageRecord
from workbench.datasets import catalog, index, versions

WORKERS = 4
UPDATES = 50  # per worker
TIMEOUT = 120  # seconds per worker: generous for a busy 2-core machine

pytestmark = pytest.mark.slow  # each test races several processes


def _run(target, args_of) -> list:
    """Start ``WORKERS`` spawned processes of ``target(worker, *args, queue)`` and gather what each put."""
    spawn = multiprocessing.get_context("spawn")
    queue = spawn.Queue()
    start = spawn.Event()
    workers = [spawn.Process(target=target, args=(w, *args_of(w), start, queue)) for w in range(WORKERS)]
    for p in workers:
        p.start()
    start.set()  # all at once, as far as the machine allows
    results = [queue.get(timeout=TIMEOUT) for _ in workers]
    for p in workers:
        p.join(timeout=TIMEOUT)
        assert p.exitcode == 0
    errors = [r for r in results if isinstance(r, str)]
    assert not errors, errors
    return results


def _add_and_remove(worker: int, home: str, folders: list[str], start, queue) -> None:
    os.environ["WORKBENCH_HOME"] = home
    start.wait(TIMEOUT)
    try:
        for i, folder in enumerate(folders):
            catalog.add_dataset(folder, "voc", name=f"w{worker}-{i}")
            if i % 2:
                catalog.remove_dataset(str(Path(folder).resolve()))
            else:
                catalog.set_current(str(Path(folder).resolve()))
        queue.put([])
    except Exception as e:  # reported to the parent, which fails the test with it
        queue.put(f"worker {worker}: {e!r}")


def test_the_dataset_list_loses_no_update(tmp_path):
    """Four processes each add 50 datasets and remove every second one they added, at once:
    exactly the kept ones are listed, each once."""
    folders = {w: [str(tmp_path / f"w{w}" / f"d{i}") for i in range(UPDATES)] for w in range(WORKERS)}
    for folder in (f for fs in folders.values() for f in fs):
        Path(folder).mkdir(parents=True)
    _run(_add_and_remove, lambda w: (os.environ["WORKBENCH_HOME"], folders[w]))
    names = [e.name for e in catalog.list_datasets()]
    kept = {f"w{w}-{i}" for w in range(WORKERS) for i in range(0, UPDATES, 2)}
    assert len(names) == len(set(names)) and set(names) == kept
    assert catalog.current_dataset().name in kept
    json.loads((Path(os.environ["WORKBENCH_HOME"]) / "datasets.json").read_text())  # never half written


def _take_versions(worker: int, home: str, root: str, start, queue) -> None:
    os.environ["WORKBENCH_HOME"] = home
    start.wait(TIMEOUT)
    try:
        taken = []
        for i in range(UPDATES // 2):
            box = np.array([[0, 0, 5, 5]])
            record = ImageRecord(path=f"images/w{worker}-{i}.png", width=10, height=10, boxes=box, class_ids=[0])
            dataset = Dataset(root=Path(root), format="voc", classes=["a"], images=[record])
            entry = versions.take_version(dataset, reason=f"worker {worker}", run=f"run-{worker}-{i}")
            taken.append((entry["name"], entry["hash"]))
        queue.put(taken)
    except Exception as e:  # reported to the parent, which fails the test with it
        queue.put(f"worker {worker}: {e!r}")


def test_versions_taken_at_once_are_all_recorded_with_unique_names(tmp_path):
    root = tmp_path / "data"
    results = _run(_take_versions, lambda w: (os.environ["WORKBENCH_HOME"], str(root)))
    recorded = versions.list_versions(root)
    taken = [t for r in results for t in r]
    assert len(recorded) == len(taken) == WORKERS * (UPDATES // 2)
    assert sorted((v["name"], v["hash"]) for v in recorded) == sorted(taken)  # what each was told is what is kept
    assert sorted(v["name"] for v in recorded) == sorted(f"v{n}" for n in range(1, len(taken) + 1))
    assert len({v["hash"] for v in recorded}) == len(recorded)
    assert all(len(v["runs"]) == 1 for v in recorded)
    for v in recorded[:: len(recorded) // 4]:
        assert versions.load_snapshot(root, v)["classes"] == ["a"]


def _open_repeatedly(worker: int, home: str, root: str, start, queue) -> None:
    os.environ["WORKBENCH_HOME"] = home
    start.wait(TIMEOUT)
    try:
        counts = set()
        for i in range(10):
            if (i + worker) % 3 == 0:
                index.forget_index(root)
            opened = index.open_dataset(root)
            index.update_index(opened, [worker % len(opened.dataset)], {})
            counts.add(len(opened.dataset))
        queue.put(sorted(counts))
    except Exception as e:  # reported to the parent, which fails the test with it
        queue.put(f"worker {worker}: {e!r}")


def test_the_index_cache_is_shared_by_processes(tmp_path):
    """Four processes open, rewrite and forget one dataset's cache at once: no error, no busy
    database, and every open gives the whole dataset."""
    root = copy_voc(tmp_path / "voc", 6)
    results = _run(_open_repeatedly, lambda w: (os.environ["WORKBENCH_HOME"], str(root)))
    assert results == [[6]] * WORKERS
    assert index.open_dataset(root).from_cache


def _upload(worker: int, home: str, root: str, start, queue) -> None:
    os.environ["WORKBENCH_HOME"] = home
    start.wait(TIMEOUT)
    try:
        dataset = Dataset(root=Path(root), format="voc", images=[ImageRecord(path="images/x.png", width=1, height=1)])
        written = []
        for i in range(10):
            written += catalog.add_images(dataset, {f"same{i}.png": f"worker {worker} image {i}".encode()})
        queue.put(written)
    except Exception as e:  # reported to the parent, which fails the test with it
        queue.put(f"worker {worker}: {e!r}")


def test_uploads_of_the_same_names_at_once_overwrite_nothing(tmp_path):
    root = tmp_path / "voc"
    (root / "images").mkdir(parents=True)
    results = _run(_upload, lambda w: (os.environ["WORKBENCH_HOME"], str(root)))
    written = [p for r in results for p in r]
    assert len(written) == len(set(written)) == WORKERS * 10
    contents = sorted((root / p).read_bytes() for p in written)
    assert contents == sorted(f"worker {w} image {i}".encode() for w in range(WORKERS) for i in range(10))
