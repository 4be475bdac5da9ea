"""Background training jobs, recorded in ``<workspace>/jobs.sqlite``.

A job is one run (``models/<run>/``) trained by the worker ``python -m workbench.training.worker
RUN``, started by an executor (``executors``): a detached process on this machine (its own
session, so closing the browser tab or the terminal does not stop it), a Ray job, or a Slurm
job. Its states::

    queued -> running -> finished | failed | cancelled
                      -> interrupted   (the process vanished: kill -9, machine restart)

A local job waits in ``queued`` until it is its turn (``scheduler``): first in, first out, fewer
than ``scheduler.max_jobs()`` local jobs running (``$WORKBENCH_MAX_JOBS``; default one per GPU,
one on a CPU-only machine), and the GPUs it asks for free. ``scheduler.claim`` takes the turn in
one SQLite transaction, so two queued workers can never both start past the limit; ``enqueue``
reads the queue time under the same writer lock, so the order is the order of the commits. A
cluster's job takes its turn from the cluster.

``reap()`` runs at every listing and start: a queued/running job whose worker is gone is marked
``interrupted``. A local job's liveness is its pid plus its start time (``processes``), judged
only on the machine that started it (``host``), so a new process that reuses the pid is neither
taken for the job nor signalled by ``cancel_job``; a cluster job's is what its executor says.
``failed``, ``cancelled`` and ``interrupted`` jobs can be resumed from their last checkpoint.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from workbench.datasets.catalog import resolve_path
from workbench.errors import WorkbenchError
from workbench.formats import yolo_yaml
from workbench.locks import connect_sqlite, transaction
from workbench.paths import PATH_MAP_ENV, home, models_dir, to_shared
from workbench.training import processes, registry
from workbench.training.config import TrainConfig
from workbench.training.engines import get_engine
from workbench.training.executors import GONE, get_executor

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
    devices TEXT,
    executor TEXT,
    executor_options TEXT,
    engine_id TEXT,
    host TEXT
)
"""
# columns added after the first release, added to an older database on first use
ADDED_COLUMNS = {
    "queued": "REAL",
    "devices": "TEXT",
    "executor": "TEXT",
    "executor_options": "TEXT",
    "engine_id": "TEXT",
    "host": "TEXT",
}

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
    job["executor"] = job.get("executor") or "local"  # rows from before executors were local
    job["executor_options"] = json.loads(job.get("executor_options") or "{}")
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
    """Mark queued/running jobs whose worker is gone as ``interrupted``; return their runs.

    A local job is judged only on the machine that started it; a cluster job whose cluster cannot
    be reached now is left as it is.
    """
    gone = []
    message = "the job's process vanished (killed, or the machine restarted); resume it"
    with closing(connect()) as con:
        rows = [
            _row(r)
            for r in con.execute(
                "SELECT *, COALESCE(queued, created) AS since FROM jobs WHERE state IN ('queued', 'running')"
            ).fetchall()
        ]
    for job in rows:
        executor = get_executor(job["executor"])
        if executor.schedules_locally:
            if job["host"] not in (None, socket.gethostname()):
                continue  # another machine's process: only that machine can tell
            if job["pid"] is None and time.time() - job["since"] < 60:
                continue  # being started right now
        elif job["engine_id"] is None:
            if time.time() - job["since"] < 60:
                continue  # being submitted right now
        elif executor.status(job) != GONE:
            continue
        if executor.schedules_locally and processes.is_alive(job["pid"], job["start_token"]):
            continue
        # only if the row still names the worker found gone (it may have been claimed since)
        with closing(connect()) as con:
            changed = con.execute(
                "UPDATE jobs SET state = 'interrupted', ended = ?, message = ? WHERE run = ? AND "
                "state IN ('queued', 'running') AND pid IS ? AND start_token IS ? AND engine_id IS ?",
                (time.time(), message, job["run"], job["pid"], job["start_token"], job["engine_id"]),
            ).rowcount
        if changed:
            gone.append(job["run"])
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


def enqueue(
    run: str,
    *,
    config: dict[str, Any],
    folder: Path | str,
    executor: str = "local",
    executor_options: dict[str, Any] | None = None,
) -> bool:
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
                "INSERT INTO jobs (run, state, created, queued, config, folder, executor, executor_options) "
                "VALUES (?, 'queued', ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (run) DO UPDATE SET state = 'queued', queued = excluded.queued, config = excluded.config, "
                "executor = excluded.executor, executor_options = excluded.executor_options, "
                "pid = NULL, start_token = NULL, ended = NULL, message = NULL, cancel_requested = 0, devices = NULL, "
                "engine_id = NULL, host = NULL WHERE state NOT IN ('queued', 'running')",
                (run, now, now, json.dumps(config), str(folder), executor, json.dumps(executor_options or {})),
            ).rowcount
        )


def start_job(
    config: dict[str, Any],
    *,
    run: str | None = None,
    max_jobs: int | None = None,
    executor: str | None = None,
    executor_options: dict[str, Any] | None = None,
) -> str:
    """Record a new job for ``config`` (``TrainConfig`` fields; ``config.build_config`` makes them),
    start its worker, return the run name. The engine checks the config first (``Engine.prepare``).
    ``max_jobs``: a local job starts only while fewer jobs run (default ``$WORKBENCH_MAX_JOBS`` or
    one per GPU). ``executor`` (default local) runs it, with ``executor_options`` (its
    ``Executor.check`` completes them: the Ray address, the Slurm partition, ``nodes``)."""
    reap()
    executor = executor or "local"
    options = get_executor(executor).check(executor_options or {})
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
    enqueue(run, config=cfg.to_dict(), folder=folder, executor=executor, executor_options=options)
    _launch(run, folder, max_jobs=max_jobs)
    return run


def resume_job(
    run: str,
    *,
    max_jobs: int | None = None,
    executor: str | None = None,
    executor_options: dict[str, Any] | None = None,
    **overrides: Any,
) -> str:
    """Continue ``run`` from its last checkpoint (``overrides`` such as ``epochs`` change the config),
    on the executor it ran on unless ``executor`` names another (``executor_options`` change its
    options)."""
    reap()
    job = get_job(run)
    if job["state"] in ACTIVE:
        raise WorkbenchError(f"job {run} is {job['state']}; cancel it first or wait for it")
    config = {**job["config"], **{k: v for k, v in overrides.items() if v is not None}}
    TrainConfig.from_dict(config)
    name = executor or job["executor"]
    kept = job["executor_options"] if name == job["executor"] else {}
    changes = {k: v for k, v in (executor_options or {}).items() if v is not None}
    options = get_executor(name).check({**kept, **changes})
    if not enqueue(run, config=config, folder=job["folder"], executor=name, executor_options=options):
        raise WorkbenchError(f"job {run} was queued again by another process meanwhile")
    _launch(run, Path(job["folder"]), max_jobs=max_jobs)
    return run


def _launch(run: str, folder: Path, *, max_jobs: int | None = None) -> None:
    """Submit the queued job ``run`` to its executor and record the id the executor gave it.

    A cluster's worker is told the workspace and the models folder as the cluster names them
    (``paths.to_shared``: ``WORKBENCH_PATH_MAP``); a local one the limit its claim obeys.
    """
    job = get_job(run)
    executor = get_executor(job["executor"])
    with open(folder / "train.log", "a", encoding="utf-8") as log:
        where = "" if job["executor"] == "local" else f" on {job['executor']} {job['executor_options']}"
        log.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} job {run} queued{where}\n")
    env: dict[str, str] = {}
    if max_jobs is not None:
        if max_jobs < 1:
            raise WorkbenchError(f"max_jobs {max_jobs}: at least 1 job must be able to run")
        env[MAX_JOBS_ENV] = str(max_jobs)
    if not executor.schedules_locally:
        env.update(WORKBENCH_HOME=to_shared(home()), WORKBENCH_MODELS=to_shared(models_dir()))
        env[PATH_MAP_ENV] = os.environ.get(PATH_MAP_ENV, "")
    try:
        engine_id = executor.submit(job, folder, env=env)
    except BaseException as e:
        set_state(run, "failed", message=f"could not submit to {job['executor']}: {type(e).__name__}: {e}"[:500])
        raise
    with closing(connect()) as con:  # a local worker writes its pid too; whoever is first wins nothing
        if executor.schedules_locally:
            pid = int(engine_id)
            con.execute(
                "UPDATE jobs SET pid = COALESCE(pid, ?), start_token = COALESCE(start_token, ?), engine_id = ?, "
                "host = ?, attempts = attempts + 1 WHERE run = ?",
                (pid, processes.token(pid), engine_id, socket.gethostname(), run),
            )
        else:
            con.execute("UPDATE jobs SET engine_id = ?, attempts = attempts + 1 WHERE run = ?", (engine_id, run))


def cancel_job(run: str, *, timeout: float = 60.0) -> str:
    """Stop a queued or running job through its executor: SIGTERM (the loop stops at the next
    iteration), SIGKILL after ``timeout``.

    Returns the job's final state (``cancelled``, or the state it had already reached).
    """
    reap()
    job = get_job(run)
    if job["state"] not in ACTIVE:
        return job["state"]
    set_state(run, job["state"], cancel_requested=1)
    get_executor(job["executor"]).cancel(job, timeout=timeout)
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


def job_log(run: str) -> str:
    """The job's ``train.log``, followed by its executor's own log of it when it has one (a
    cluster's log holds what happened before the worker opened ``train.log``)."""
    job = get_job(run)
    path = Path(job["folder"]) / "train.log"
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    engine = get_executor(job["executor"]).logs(job)
    if engine.strip():
        text += f"\n==== {job['executor']}'s log of job {job['engine_id']}\n{engine}"
    return text


def eta_text(seconds: float | None) -> str:
    """An ETA as ``H:MM:SS`` (``-`` when unknown), as the CLI and the Train page show it."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
