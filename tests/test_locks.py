"""workbench.locks: one inter-process lock per file; the SQLite journal mode by file system."""

from __future__ import annotations

import multiprocessing
import os
from collections import namedtuple
from pathlib import Path

import pytest

from workbench import fileio, locks

Partition = namedtuple("Partition", "device mountpoint fstype opts")


def _increment(counter: str, home: str, times: int) -> None:
    os.environ["WORKBENCH_HOME"] = home
    for _ in range(times):
        with locks.locked(counter):
            value = int(Path(counter).read_text())
            fileio.atomic_write(Path(counter), str(value + 1))


@pytest.mark.slow
def test_processes_take_turns(tmp_path):
    """Four processes each add 1 fifty times to a number in a file: with the lock none of the 200 updates is lost."""
    counter = tmp_path / "counter.txt"
    counter.write_text("0")
    spawn = multiprocessing.get_context("spawn")
    workers = [
        spawn.Process(target=_increment, args=(str(counter), os.environ["WORKBENCH_HOME"], 50)) for _ in range(4)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
        assert w.exitcode == 0
    assert counter.read_text() == "200"


def test_lock_files_live_in_the_workspace_and_are_reentrant(tmp_path):
    dataset_file = tmp_path / "data" / "annotations" / "a.xml"
    where = locks.lock_file(dataset_file)
    assert where.parent == Path(os.environ["WORKBENCH_HOME"]) / "locks"
    assert locks.lock(dataset_file) is locks.lock(tmp_path / "data" / "annotations" / ".." / "annotations" / "a.xml")
    with locks.locked(dataset_file), locks.locked(dataset_file):
        assert locks.lock(dataset_file).is_locked
    assert not locks.lock(dataset_file).is_locked
    assert not where.is_relative_to(tmp_path / "data")  # no lock file inside the dataset


def test_a_held_lock_times_out_with_the_file_named(tmp_path):
    target = tmp_path / "store.json"
    spawn = multiprocessing.get_context("spawn")
    ready, release = spawn.Event(), spawn.Event()
    holder = spawn.Process(target=_hold, args=(str(target), os.environ["WORKBENCH_HOME"], ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with (
            pytest.raises(locks.LockTimeout, match=r"store\.json: another workbench process"),
            locks.locked(target, timeout=0.2),
        ):
            pass
    finally:
        release.set()
        holder.join(timeout=60)


def _hold(path: str, home: str, ready, release) -> None:
    os.environ["WORKBENCH_HOME"] = home
    with locks.locked(path):
        ready.set()
        release.wait(60)


def test_network_file_systems_get_no_wal(monkeypatch, tmp_path):
    parts = [Partition("/dev/sda1", "/", "ext4", ""), Partition("server:/export", str(tmp_path), "nfs4", "")]
    monkeypatch.setattr(locks.psutil, "disk_partitions", lambda all=True: parts)
    assert locks.file_system(tmp_path / "ws" / "jobs.sqlite") == "nfs4"
    assert locks.is_network(tmp_path) and not locks.is_network("/usr")
    assert locks.sqlite_journal_mode(tmp_path / "jobs.sqlite") == "DELETE"
    assert locks.sqlite_journal_mode("/var/jobs.sqlite") == "WAL"


def test_atomic_write_syncs_the_file_and_its_folder(monkeypatch, tmp_path):
    synced = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.path.isdir(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(fileio.os, "fsync", fsync)
    fileio.atomic_write(tmp_path / "a.txt", "hello")
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert synced == [False, True]  # the file's bytes, then the folder's entry
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
