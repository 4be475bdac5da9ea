"""Saving and the journal across real processes (``multiprocessing`` with "spawn"): four at once
append and save with unique ids and nothing lost; a save killed with SIGKILL at each step leaves
the file old or new and the journal consistent; two people on one COCO file or one VOC file.

Children get the test's workspace through ``WORKBENCH_HOME`` (inherited); fault injection is a
monkeypatch inside the child."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.app.conftest import SHARED, copy_voc
from workbench.datasets import health, index
from workbench.labelling import edits, saving

CTX = multiprocessing.get_context("spawn")
TIMEOUT = 120  # seconds for a child: generous, for a busy 2-core machine


def run_all(target, args_list: list[tuple]) -> list:
    """Run ``target(queue, *args)`` in one process per ``args``; their results, in that order."""
    queue = CTX.Queue()
    procs = [CTX.Process(target=target, args=(queue, n, *args)) for n, args in enumerate(args_list)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=TIMEOUT) for _ in procs)
    for p in procs:
        p.join(TIMEOUT)
        assert p.exitcode == 0, f"child exited with {p.exitcode}"
    return [results[n] for n in range(len(procs))]


def _append(queue, n: int, start, count: int) -> None:
    journal = saving.Journal(author=f"user{n}")
    start.wait(TIMEOUT)
    ids = [journal.append({"root": "/r", "message": f"{n}-{k}", "files": []}) for k in range(count)]
    queue.put((n, ids))


@pytest.mark.slow
def test_four_processes_append_every_entry_once_with_unique_ids():
    start = CTX.Event()
    queue = CTX.Queue()
    procs = [CTX.Process(target=_append, args=(queue, n, start, 50)) for n in range(4)]
    for p in procs:
        p.start()
    start.set()
    returned = dict(queue.get(timeout=TIMEOUT) for _ in procs)
    for p in procs:
        p.join(TIMEOUT)
        assert p.exitcode == 0
    entries = saving.Journal().entries()
    assert sorted(e["message"] for e in entries) == sorted(f"{n}-{k}" for n in range(4) for k in range(50))
    assert sorted(e["id"] for e in entries) == list(range(1, 201))
    assert sorted(i for ids in returned.values() for i in ids) == list(range(1, 201))
    assert {e["author"] for e in entries} == {f"user{n}" for n in range(4)}
    assert len({e["process"]["pid"] for e in entries}) == 4


def _save_many(queue, n: int, root: str, count: int) -> None:
    opened = index.open_dataset(root, use_cache=False)
    journal = saving.Journal(author=f"user{n}")
    ids = []
    for _ in range(count):
        record = opened.dataset.images[n].copy()
        edits.relabel_box(record, 0, 1 - int(record.class_ids[0]))
        ids.append(saving.save_record(opened, n, record, journal=journal).entry)
    queue.put((n, (ids, opened.dataset.class_name(int(record.class_ids[0])))))


@pytest.mark.slow
def test_four_processes_save_at_once_and_every_save_is_journalled_once(tmp_path):
    root = copy_voc(tmp_path / "voc", 4)
    images = index.open_dataset(root, use_cache=False).dataset.images
    owner = {r.annotation: f"user{n}" for n, r in enumerate(images)}
    returned = run_all(_save_many, [(str(root), 25)] * 4)
    journal = saving.Journal()
    entries = journal.entries(root)
    ids = [e["id"] for e in entries]
    assert len(ids) == len(set(ids)) == 100 and sorted(i for r, _ in returned for i in r) == sorted(ids)
    assert not any(e.get("pending") for e in entries)  # each one finished
    again = index.open_dataset(root, use_cache=False).dataset
    assert [again.class_name(int(r.class_ids[0])) for r in again.images] == [name for _, name in returned]
    assert all(e["author"] == owner[e["files"][0]["path"]] for e in entries)


STEPS = {
    "after the blob": ("append", "old"),
    "in the middle of the write": ("write", "old"),
    "before the replace": ("replace", "old"),
    "after the replace": ("replaced", "new"),
    "before the journal line": ("done", "new"),
}


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _save_and_die(queue, n: int, root: str, step: str) -> None:
    from workbench import fileio
    from workbench.labelling import files, journal

    where = STEPS[step][0]
    if where == "append":
        real_append = journal.Journal.append
        journal.Journal.append = lambda self, entry, **kw: (
            _die() if kw.get("pending") else real_append(self, entry, **kw)
        )
    elif where == "write":  # half the bytes reach the temp file, then the process dies
        real_fdopen = os.fdopen

        class HalfWriter:
            def __init__(self, file) -> None:
                self.file = file

            def __enter__(self):
                return self

            def __exit__(self, *exc) -> None:
                self.file.__exit__(*exc)

            def write(self, data: bytes) -> None:
                self.file.write(data[: len(data) // 2])
                self.file.flush()
                _die()

        def fdopen(fd, *args, **kwargs):
            file = real_fdopen(fd, *args, **kwargs)
            return HalfWriter(file) if os.readlink(f"/proc/self/fd/{fd}").startswith(root) else file

        fileio.os.fdopen = fdopen
    elif where == "replace":  # the temp file is written and synced, the rename never happens
        real_replace = os.replace
        fileio.os.replace = lambda src, dst: _die() if str(dst).startswith(root) else real_replace(src, dst)
    elif where == "replaced":
        real_write = files.atomic_write
        files.atomic_write = lambda path, data: (real_write(path, data), _die())
    else:
        journal.Journal.done = lambda self, entry_id: _die()
    opened = index.open_dataset(root, use_cache=False)
    record = opened.dataset.images[0].copy()
    edits.delete_box(record, 0)
    saving.save_record(opened, 0, record, journal=saving.Journal(author="killed"))
    queue.put((n, "not killed"))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("step", list(STEPS))
def test_a_save_killed_at_each_step_leaves_old_or_new_bytes_and_a_consistent_journal(tmp_path, step):
    root = copy_voc(tmp_path / "voc", 3)
    opened = index.open_dataset(root, use_cache=False)
    xml = root / opened.dataset.images[0].annotation
    old = xml.read_bytes()
    listed = sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))
    queue = CTX.Queue()  # kept referenced until the child has read it
    child = CTX.Process(target=_save_and_die, args=(queue, 0, str(root), step))
    child.start()
    child.join(TIMEOUT)
    assert child.exitcode == -signal.SIGKILL
    journal = saving.Journal()
    entries = journal.entries(root)
    outcome = STEPS[step][1]
    if outcome == "old":
        assert xml.read_bytes() == old
        assert journal.undoable(root) == []  # a save that never reached the disk is not offered
    else:
        (entry,) = entries
        assert entry["pending"] and sha(xml) == entry["files"][0]["after"]
        assert journal.get(entry["files"][0]["before"]) == old
        (offered,) = journal.undoable(root, author="killed")
        assert offered["id"] == entry["id"]
        saving.undo(root, entry=entry["id"])
        assert xml.read_bytes() == old
    # the folder the user sees: every file old or new, nothing added; the dataset tools skip the
    # hidden temp file a write killed before its rename left, and the health report lists it
    temps = [p.relative_to(root).as_posix() for p in root.rglob(".*.tmp")]
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if not p.name.startswith(".")) == listed
    if STEPS[step][0] in ("write", "replace"):
        (temp,) = temps
        assert Path(temp).name.startswith(f".{xml.name}.")
    else:
        assert temps == []
    again, report = health.check_folder(root)
    assert [r.path for r in again.images] == [r.path for r in opened.dataset.images] and not again.skipped
    assert [f.file for f in report.findings if f.kind == "temp_file"] == temps
    # the next save of the file goes ahead and removes that temp file
    opened = index.open_dataset(root, use_cache=False)
    record = opened.dataset.images[0].copy()
    edits.relabel_box(record, 0, 1 - int(record.class_ids[0]))
    saving.save_record(opened, 0, record, journal=journal)
    assert not [p for p in root.rglob("*.tmp")]
    assert not [f for f in health.check_folder(root)[1].findings if f.kind == "temp_file"]
    saving.undo(root, journal=journal)
    assert xml.read_bytes() == old


def _edit(queue, n: int, root: str, fmt: str, position: int, author: str, ready, go) -> None:
    opened = index.open_dataset(root, fmt, use_cache=False)
    record = opened.dataset.images[position].copy()
    if n == 0:  # Alice deletes a box (the boxes after it move up in a COCO file), Bob moves one
        edits.delete_box(record, 0)
    else:
        edits.move_box(record, 0, record.boxes[0] + [1, 1, 1, 1])
    ready.release()
    go.wait(TIMEOUT)
    try:
        saving.save_record(opened, position, record, journal=saving.Journal(author=author))
    except saving.ConflictError as e:
        queue.put((n, ("refused", str(e))))
    else:
        queue.put((n, ("saved", record.boxes.tolist())))


def two_people(root: Path, fmt: str, positions: tuple[int, int]) -> list:
    """Alice and Bob open the dataset, each edits the image at their position, and both save at once."""
    ready, go = CTX.Semaphore(0), CTX.Event()
    queue = CTX.Queue()
    procs = [
        CTX.Process(target=_edit, args=(queue, n, str(root), fmt, positions[n], name, ready, go))
        for n, name in enumerate(("alice", "bob"))
    ]
    for p in procs:
        p.start()
    for _ in procs:
        assert ready.acquire(timeout=TIMEOUT)
    go.set()
    results = dict(queue.get(timeout=TIMEOUT) for _ in procs)
    for p in procs:
        p.join(TIMEOUT)
        assert p.exitcode == 0
    return [results[0], results[1]]


@pytest.fixture
def coco_root(tmp_path) -> Path:
    shutil.copytree(SHARED / "roboflow-coco" / "valid", tmp_path / "coco" / "valid", copy_function=shutil.copyfile)
    return tmp_path / "coco"


def with_boxes(root: Path, fmt: str) -> list[int]:
    return [i for i, r in enumerate(index.open_dataset(root, fmt, use_cache=False).dataset.images) if len(r)]


def test_two_people_save_different_images_of_one_coco_file_and_both_land(coco_root):
    a, b = with_boxes(coco_root, "coco")[:2]
    results = two_people(coco_root, "coco", (a, b))
    assert [r[0] for r in results] == ["saved", "saved"]
    images = index.open_dataset(coco_root, "coco", use_cache=False).dataset.images
    assert images[a].boxes.tolist() == results[0][1]
    assert images[b].boxes.tolist() == results[1][1]
    assert {e["author"] for e in saving.Journal().entries(coco_root)} == {"alice", "bob"}


def test_two_people_save_the_same_coco_image_and_the_second_is_refused_naming_the_first(coco_root):
    a = with_boxes(coco_root, "coco")[0]
    results = two_people(coco_root, "coco", (a, a))
    outcomes = sorted(r[0] for r in results)
    assert outcomes == ["refused", "saved"]
    winner = ("alice", "bob")[[r[0] for r in results].index("saved")]
    refused = next(r[1] for r in results if r[0] == "refused")
    assert f"saved by {winner}" in refused
    saved = next(r[1] for r in results if r[0] == "saved")
    assert index.open_dataset(coco_root, "coco", use_cache=False).dataset.images[a].boxes.tolist() == saved


def test_two_people_save_the_same_voc_file_and_the_second_is_refused_naming_the_first(tmp_path):
    root = copy_voc(tmp_path / "voc", 3)
    results = two_people(root, "voc", (0, 0))
    assert sorted(r[0] for r in results) == ["refused", "saved"]
    winner = ("alice", "bob")[[r[0] for r in results].index("saved")]
    assert f"saved by {winner}" in next(r[1] for r in results if r[0] == "refused")
