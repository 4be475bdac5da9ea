"""Reading VOC files over the cores (``formats.parallel``) gives exactly what the loop gives."""

from __future__ import annotations

import os

import pytest

from tests.conftest import SHARED, TINY_STEMS, copy_voc_subset
from workbench.datasets import index_rows
from workbench.errors import DatasetReadError, ReadError
from workbench.formats import parallel, voc


def _state(dataset) -> tuple:
    return (
        dataset.classes,
        [index_rows.dump_record(r) for r in dataset.images],
        [(e.file, e.reason, e.record) for e in dataset.skipped],
    )


@pytest.fixture
def forked(monkeypatch):
    """Every read_many forks three readers, whatever the machine's load and cores."""
    monkeypatch.setattr(parallel, "workers_for", lambda count: 3 if count > 2 else 1)


def test_a_forked_load_of_the_shared_voc_set_is_the_loop_s(forked, monkeypatch):
    forked_state = _state(voc.load(SHARED / "andrewmvd-voc"))
    monkeypatch.setattr(parallel, "workers_for", lambda count: 1)
    assert forked_state == _state(voc.load(SHARED / "andrewmvd-voc"))
    assert len(forked_state[1]) == 689 and len(forked_state[0]) == 3


def test_bad_files_in_every_slice_are_reported_in_order(forked, tmp_path):
    root = copy_voc_subset(SHARED, tmp_path / "voc", TINY_STEMS)
    ann = root / "annotations"
    (ann / "maksssksksss0.xml").write_text("<annotation><object>")  # first slice
    dtd = '<?xml version="1.0"?><!DOCTYPE annotation [<!ENTITY e "x">]><annotation>&e;</annotation>'
    (ann / "maksssksksss13.xml").write_text(dtd)  # the last slice: read by this process
    (ann / "maksssksksss3.xml").write_text("<annotations/>")  # a child's slice
    with pytest.raises(DatasetReadError) as caught:
        voc.load(root)
    assert [e.file for e in caught.value.errors] == [
        "annotations/maksssksksss0.xml",
        "annotations/maksssksksss3.xml",
        "annotations/maksssksksss13.xml",
    ]
    assert "refused unsafe XML" in caught.value.errors[2].reason
    assert "expected <annotation>" in caught.value.errors[1].reason
    lenient = voc.load(root, strict=False)
    assert len([r for r in lenient.images if r.annotation]) == len(TINY_STEMS) - 3


def test_another_error_in_a_child_is_raised_as_the_loop_raises_it(forked):
    def read(item: int) -> int:
        if item == 1:
            raise ValueError("not a ReadError")
        if item == 5:
            raise ReadError("f5", "bad", "object 2")
        return item * 10

    with pytest.raises(ValueError, match="not a ReadError"):
        parallel.read_many(read, list(range(9)))
    out = parallel.read_many(lambda i: read(i) if i != 1 else os.getpid(), list(range(9)))
    assert out[0] == 0 and out[1] != os.getpid() and out[8] == 80  # item 1 was read in a child
    assert isinstance(out[5], ReadError) and (out[5].file, out[5].reason, out[5].record) == ("f5", "bad", "object 2")


def test_a_busy_or_threaded_process_reads_in_one_loop(monkeypatch):
    import threading

    # an earlier test may have left a thread behind (a server's, a pool's): one thread, as a CLI has
    monkeypatch.setattr(parallel.threading, "active_count", lambda: 1)
    assert parallel.workers_for(parallel.PARALLEL_FROM - 1) == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    assert parallel.workers_for(100_000) == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    cores = len(os.sched_getaffinity(0))
    assert parallel.workers_for(100_000) == min(cores, parallel.MAX_WORKERS)
    monkeypatch.undo()  # the real count, with one more thread for sure
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert threading.active_count() > 1 and parallel.workers_for(100_000) == 1
    finally:
        stop.set()
        thread.join()


@pytest.mark.parametrize("workers", [1, 3])
def test_progress_is_reported_as_the_files_are_read(monkeypatch, workers):
    monkeypatch.setattr(parallel, "workers_for", lambda count: workers)
    calls = []
    out = parallel.read_many(lambda i: i, list(range(30)), lambda done, total: calls.append((done, total)))
    assert out == list(range(30))
    assert calls[-1] == (30, 30) and all(total == 30 for _, total in calls)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls) and len(calls) >= 10
