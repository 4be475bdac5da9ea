"""Saves across processes and the journal's append, measured side by side in one run.

    .venv/bin/python benchmarks/concurrency.py [--saves 40] [--shared ../shared/datasets/andrewmvd-voc]

In a fresh workspace (``WORKBENCH_HOME`` in a temporary folder):

* saves per second with 1, 2 and 4 processes saving at once, each its own image of one VOC
  dataset (``saving.save_record``: file lock, conflict check, blobs, pending entry, atomic write,
  done line), started together ("spawn") and timed from the start signal to the last save;
* one ``Journal.append`` with 100 and with 10,000 entries in the journal: it reads the journal's
  tail only, so the two must stay level (target: the ratio under 2). For contrast, one full read
  of the 10,000 entries, which every append used to do.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

CTX = multiprocessing.get_context("spawn")


def saver(root: str, position: int, count: int, ready, go, done) -> None:
    from workbench.datasets import index
    from workbench.labelling import edits, saving

    opened = index.open_dataset(root, use_cache=False)
    journal = saving.Journal(author=f"bench{position}")
    ready.release()
    go.wait()
    for _ in range(count):
        record = opened.dataset.images[position].copy()
        edits.relabel_box(record, 0, 1 - int(record.class_ids[0]))
        saving.save_record(opened, position, record, journal=journal, message="benchmark")
    done.put(time.perf_counter())


def saves_per_second(root: Path, processes: int, count: int) -> float:
    ready, go, done = CTX.Semaphore(0), CTX.Event(), CTX.Queue()
    procs = [CTX.Process(target=saver, args=(str(root), n, count, ready, go, done)) for n in range(processes)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    start = time.perf_counter()
    go.set()
    end = max(done.get() for _ in procs)
    for p in procs:
        p.join()
        assert p.exitcode == 0
    return processes * count / (end - start)


def append_seconds(path: Path, entries: int, repeat: int = 50) -> tuple[float, float]:
    """Median seconds of one append to a journal of ``entries`` lines, and of one full read."""
    from workbench.labelling import saving

    line = {"root": "/bench", "format": "voc", "message": "edit annotations/x.xml: box 1 moved", "files": []}
    path.write_text("".join(json.dumps({"id": k, **line}) + "\n" for k in range(1, entries + 1)))
    journal = saving.Journal(path)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        journal.append(dict(line))
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    journal.entries()
    return statistics.median(times), time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--saves", type=int, default=40, help="saves per process")
    parser.add_argument("--shared", type=Path, default=PROJECT.parent / "shared" / "datasets" / "andrewmvd-voc")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="concurrency-bench-") as tmp:
        tmp = Path(tmp)
        os.environ["WORKBENCH_HOME"] = str(tmp / "home")
        sys.path.insert(0, str(PROJECT))
        from tests.app.conftest import copy_voc

        root = copy_voc(tmp / "voc", 4)
        rates = {n: saves_per_second(root, n, args.saves) for n in (1, 2, 4)}
        small, _ = append_seconds(tmp / "small.jsonl", 100)
        large, full_read = append_seconds(tmp / "large.jsonl", 10_000)

    print(f"\nconcurrency benchmark ({os.cpu_count()} CPUs, {args.saves} saves per process)")
    print(f"{'processes':>10s} {'saves/s':>9s} {'vs 1':>6s}")
    for n, rate in rates.items():
        print(f"{n:10d} {rate:9.1f} {rate / rates[1]:5.2f}x")
    print(f"\n{'journal append':34s} {'ms':>8s}")
    print(f"{'with 100 entries':34s} {small * 1000:8.2f}")
    print(f"{'with 10,000 entries':34s} {large * 1000:8.2f}")
    print(f"{'full read of 10,000 (old append)':34s} {full_read * 1000:8.2f}")
    ratio = large / small
    print(f"append at 10,000 / at 100: {ratio:.2f}x (target < 2){'' if ratio < 2 else ' SLOW'}")
    return 0 if ratio < 2 else 1


if __name__ == "__main__":
    raise SystemExit(main())
