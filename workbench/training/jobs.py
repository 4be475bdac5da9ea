"""Background training jobs, recorded in ``<workspace>/jobs.sqlite``.

A job is one run (``models/<run>/``) trained by a detached process
``python -m workbench.training.worker RUN`` (its own session, so closing the browser tab or
the terminal does not stop it). Its states::

    queued -> running -> finished | failed | cancelled
                      -> interrupted   (the process vanished: kill -9, machine restart)

A job waits in ``queued`` until it is its turn (``scheduler``): first in, first out, fewer
than ``scheduler.max_jobs()`` jobs running (``$WORKBENCH_MAX_JOBS``; default one per GPU, one on
a CPU-only machine), and the GPUs it asks for free. ``scheduler.claim`` takes the turn in one
SQLite transaction, so two queued workers can never both start past the limit; ``enqueue``
reads the queue time under the same writer lock, so the order is the order of the commits.

``reap()`` runs at every listing and start: a queued/running job whose process is gone is
marked ``interrupted``. Liveness is the pid plus its start time (``processes``), so a new
process that reuses the pid is neither taken for the job nor signalled by ``cancel_job``.
``failed``, ``cancelled`` and ``interrupted`` jobs can be resumed from their last checkpoint.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from workbench.datasets.catalog import resolve_path
from workbench.errors import WorkbenchError
from workbench.formats import yolo_yaml
from workbench.locks import connect_sqlite, transaction
from workbench.paths import PROJECT_ROOT, home
from workbench.training import processes, registry
from workbench.training.config import TrainConfig
from workbench.training.engines import get_engine

ACTIVE = ("queued", "running")
DONE = ("finished", "failed", "cancelled", "interrupted")
RESUMABLE = ("failed", "cancelled", "interrupted", "finished")
MAX_JOBS_ENV = "WORKBENCH_MAX_JOBS"
BUSY_TIMEOUT = 30.0  # seconds a statement waits for another process's transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    run TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    pid INTEGER,
    start_token TEXT,
    created REAL NOT NULL,
    started REAL,
    ended REAL,
    config TEXT NOT NULL,
    folder TEXT NOT NULL,
    message TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    queued REAL,
    devices TEXT
)
"""
# columns added after the first release, added to an older database on first use
ADDED_COLUMNS = {"queued": "REAL", "devices": "TEXT"}

_ready: set[str] = set()


def db_path() -> Path:
    return home() / "jobs.sqlite"


def connect() -> sqlite3.Connection:
    """A connection to the job database (created on first use); rows behave like dicts.

    Autocommit: each statement is its own transaction, ``transaction`` groups several. WAL on a
    local disk, the rollback journal on a network file system (``locks.sqlite_journal_mode``).
    """
    path = db_path()
    fresh = str(path) not in _ready or not path.exists()
    con = connect_sqlite(path, busy_timeout=BUSY_TIMEOUT)
    con.row_factory = sqlite3.Row
    if fresh:
        with transaction(con):  # two processes opening a new or older database at once: one migrates
            con.execute(SCHEMA)
            have = {row["name"] for row in con.execute("PRAGMA table_info(jobs)")}
            for column, kind in ADDED_COLUMNS.items():
                if column not in have:
                    con.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
        _ready.add(str(path))
    return con


def _row(row: sqlite3.Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    job = dict(row)
    job["config"] = json.loads(job["config"])
    return job


def get_job(run: str) -> dict[str, Any]:
    with closing(connect()) as con:
        job = _row(con.execute("SELECT * FROM jobs WHERE run = ?", (run,)).fetchone())
    if job is None:
        raise WorkbenchError(f"no job {run!r} (see `workbench jobs`)")
    return job


def set_state(run: str, state: str, **fields: Any) -> None:
    """Set a job's state and any other columns (``ended`` is stamped for final states)."""
    if state in DONE:
        fields.setdefault("ended", time.time())
    columns = ", ".join(f"{k} = ?" for k in ["state", *fields])
    with closing(connect()) as con:
        con.execute(f"UPDATE jobs SET {columns} WHERE run = ?", (state, *fields.values(), run))


def reap() -> list[str]:
    """Mark queued/running jobs whose process is gone as ``interrupted``; return their runs."""
    gone = []
    message = "the job's process vanished (killed, or the machine restarted); resume it"
    with closing(connect()) as con:
        rows = con.execute(
            "SELECT run, pid, start_token, COALESCE(queued, created) AS since FROM jobs "
            "WHERE state IN ('queued', 'running')"
        ).fetchall()
        for row in rows:
            if row["pid"] is None and time.time() - row["since"] < 60:
                continue  # being started right now
            if processes.is_alive(row["pid"], row["start_token"]):
                continue
            # only if the row still names the process found dead (it may have been claimed since)
            changed = con.execute(
                "UPDATE jobs SET state = 'interrupted', ended = ?, message = ? "
                "WHERE run = ? AND state IN ('queued', 'running') AND pid IS ? AND start_token IS ?",
                (time.time(), message, row["run"], row["pid"], row["start_token"]),
            ).rowcount
            if changed:
                gone.append(row["run"])
    return gone


def list_jobs() -> list[dict[str, Any]]:
    """Every job, newest first, with its ``progress`` (``progress.json``) and last ``metrics``."""
    reap()
    with closing(connect()) as con:
        jobs = [_row(r) for r in con.execute("SELECT * FROM jobs ORDER BY created DESC").fetchall()]
    for job in jobs:
        folder = Path(job["folder"])
        job["progress"] = registry.read_json(folder / "progress.json", {}) or {}
        metrics = registry.read_jsonl(folder / "metrics.jsonl")
        job["metrics"] = metrics[-1] if metrics else {}
        job["best_ap"] = max((m.get("AP", 0.0) for m in metrics), default=None)
    return jobs


def _spawn(run: str, folder: Path, *, max_jobs: int | None = None) -> subprocess.Popen:
    """Start the detached worker process, its output appended to the run's ``train.log``.

    ``max_jobs`` (else ``$WORKBENCH_MAX_JOBS``, else one per GPU) is the limit its claim obeys.
    """
    env = dict(os.environ)
    if max_jobs is not None:
        if max_jobs < 1:
            raise WorkbenchError(f"max_jobs {max_jobs}: at least 1 job must be able to run")
        env[MAX_JOBS_ENV] = str(max_jobs)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(PROJECT_ROOT), env.get("PYTHONPATH", "")] if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    with open(folder / "train.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "workbench.training.worker", run],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(PROJECT_ROOT),
            env=env,
            start_new_session=True,  # survives the terminal, the browser tab and the CLI
        )


def enqueue(run: str, *, config: dict[str, Any], folder: Path | str) -> bool:
    """Queue ``run`` at the back: a new row, or an ended one queued again (``resume_job``);
    False, changing nothing, when it is queued or running already.

    The queue time is read under the writer lock, so queue times follow the commit order across
    processes: a job whose row commits later never sorts before one committed earlier.
    """
    with closing(connect()) as con, transaction(con):
        now = time.time()
        return (
            0
            < con.execute(
                "INSERT INTO jobs (run, state, created, queued, config, folder) VALUES (?, 'queued', ?, ?, ?, ?) "
                "ON CONFLICT (run) DO UPDATE SET state = 'queued', queued = excluded.queued, config = excluded.config, "
                "pid = NULL, start_token = NULL, ended = NULL, message = NULL, cancel_requested = 0, devices = NULL "
                "WHERE state NOT IN ('queued', 'running')",
                (run, now, now, json.dumps(config), str(folder)),
            ).rowcount
        )


def start_job(config: dict[str, Any], *, run: str | None = None, max_jobs: int | None = None) -> str:
    """Record a new job for ``config`` (``TrainConfig`` fields; ``config.build_config`` makes them),
    start its worker, return the run name. The engine checks the config first (``Engine.prepare``).
    ``max_jobs``: it starts only while fewer jobs run (default ``$WORKBENCH_MAX_JOBS`` or one per GPU)."""
    reap()
    cfg = TrainConfig.from_dict(config)
    data = resolve_path(cfg.data)
    if yolo_yaml.is_data_yaml(data):
        yolo_yaml.parse(data)  # a bad data.yaml is refused now, not in the worker
    elif not data.is_dir():
        raise WorkbenchError(f"{cfg.data}: not a dataset folder or data.yaml")
    cfg.data = str(data)
    short = get_engine(cfg.engine).prepare(cfg)
    run = registry.check_run_name(run) if run else registry.new_run_name(cfg.recipe or short)
    folder = registry.run_dir(run)
    if folder.exists():
        raise WorkbenchError(f"run {run!r} exists already: {folder}")
    folder.mkdir(parents=True)
    registry.write_json(folder / "config.json", {**cfg.to_dict(), "run": run})
    enqueue(run, config=cfg.to_dict(), folder=folder)
    _launch(run, folder, max_jobs=max_jobs)
    return run


def resume_job(run: str, *, max_jobs: int | None = None, **overrides: Any) -> str:
    """Continue ``run`` from its last checkpoint (``overrides`` such as ``epochs`` change the config)."""
    reap()
    job = get_job(run)
    if job["state"] in ACTIVE:
        raise WorkbenchError(f"job {run} is {job['state']}; cancel it first or wait for it")
    config = {**job["config"], **{k: v for k, v in overrides.items() if v is not None}}
    TrainConfig.from_dict(config)
    if not enqueue(run, config=config, folder=job["folder"]):
        raise WorkbenchError(f"job {run} was queued again by another process meanwhile")
    _launch(run, Path(job["folder"]), max_jobs=max_jobs)
    return run


def _launch(run: str, folder: Path, *, max_jobs: int | None = None) -> None:
    with open(folder / "train.log", "a", encoding="utf-8") as log:
        log.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} job {run} queued\n")
    proc = _spawn(run, folder, max_jobs=max_jobs)
    token = processes.token(proc.pid)
    with closing(connect()) as con:  # the worker writes the same; whoever is first wins nothing
        con.execute(
            "UPDATE jobs SET pid = ?, start_token = ?, attempts = attempts + 1 WHERE run = ?",
            (proc.pid, token, run),
        )
    # reap it when it ends, so that a long-lived parent (the Streamlit server) keeps no zombie
    threading.Thread(target=proc.wait, name=f"reap-{run}", daemon=True).start()


def cancel_job(run: str, *, timeout: float = 60.0) -> str:
    """Stop a queued or running job: SIGTERM (the loop stops at the next iteration), SIGKILL after ``timeout``.

    Returns the job's final state (``cancelled``, or the state it had already reached).
    """
    reap()
    job = get_job(run)
    if job["state"] not in ACTIVE:
        return job["state"]
    set_state(run, job["state"], cancel_requested=1)
    # the pid is signalled only while it is still the job's process (same start time); SIGKILL goes
    # to the worker's process group (it leads its own session): its loaders and ranks too
    processes.stop(job["pid"], job["start_token"], timeout=timeout, group=True)
    job = get_job(run)
    if job["state"] in ACTIVE:
        set_state(run, "cancelled", message="cancelled")
    return get_job(run)["state"]


def wait_job(
    run: str, *, poll: float = 1.0, timeout: float | None = None, on_progress: Callable[[dict], None] | None = None
) -> str:
    """Block until ``run`` leaves queued/running; return its final state."""
    start = time.monotonic()
    while True:
        reap()
        job = get_job(run)
        if on_progress:
            on_progress({**job, "progress": registry.read_json(Path(job["folder"]) / "progress.json", {}) or {}})
        if job["state"] not in ACTIVE:
            return job["state"]
        if timeout is not None and time.monotonic() - start > timeout:
            raise TimeoutError(f"job {run} still {job['state']} after {timeout:.0f} s")
        time.sleep(poll)


def eta_text(seconds: float | None) -> str:
    """An ETA as ``H:MM:SS`` (``-`` when unknown), as the CLI and the Train page show it."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
