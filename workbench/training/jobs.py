"""Background training jobs, recorded in ``<workspace>/jobs.sqlite``.

A job is one run (``models/<run>/``) trained by a detached process
``python -m workbench.training.worker RUN`` (its own session, so closing the browser tab or
the terminal does not stop it). Its states::

    queued -> running -> finished | failed | cancelled
                      -> interrupted   (the process vanished: kill -9, machine restart)

A job waits in ``queued`` while another job is running (one job at a time per workspace).
``reap()`` runs at every listing and start: a queued/running job whose process is gone is
marked ``interrupted``. Liveness is the pid plus its start time (``/proc/<pid>/stat``
field 22), so a new process that reuses the pid is not mistaken for the job.
``failed``, ``cancelled`` and ``interrupted`` jobs can be resumed from their last checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
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
from workbench.paths import PROJECT_ROOT, home
from workbench.training import registry
from workbench.training.config import TrainConfig
from workbench.training.engines import get_engine

ACTIVE = ("queued", "running")
DONE = ("finished", "failed", "cancelled", "interrupted")
RESUMABLE = ("failed", "cancelled", "interrupted", "finished")

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
    cancel_requested INTEGER NOT NULL DEFAULT 0
)
"""


def db_path() -> Path:
    return home() / "jobs.sqlite"


def connect() -> sqlite3.Connection:
    """A connection to the job database (created on first use); rows behave like dicts."""
    con = sqlite3.connect(db_path(), timeout=30, isolation_level=None)  # autocommit; each statement atomic
    con.row_factory = sqlite3.Row
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(SCHEMA)
    return con


def process_token(pid: int) -> str | None:
    """A token that identifies process ``pid`` for its lifetime (its start time), or ``None`` if it is gone.

    A zombie (exited, not yet reaped by its parent) counts as gone.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            stat = f.read()
    except OSError:
        if sys.platform.startswith("linux"):
            return None
        try:  # no /proc (macOS): liveness only
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "alive"
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces and ')'
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]  # field 22 of the line: start time in clock ticks after boot


def is_alive(pid: int | None, token: str | None) -> bool:
    if not pid:
        return False
    now = process_token(pid)
    return now is not None and (token is None or now == token)


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
    with closing(connect()) as con:
        rows = con.execute("SELECT run, pid, start_token, created FROM jobs WHERE state IN ('queued', 'running')")
        for row in rows.fetchall():
            if row["pid"] is None and time.time() - row["created"] < 60:
                continue  # being started right now
            if not is_alive(row["pid"], row["start_token"]):
                gone.append(row["run"])
        for run in gone:
            con.execute(
                "UPDATE jobs SET state = 'interrupted', ended = ?, message = ? WHERE run = ? AND state IN ('queued', 'running')",
                (time.time(), "the job's process vanished (killed, or the machine restarted); resume it", run),
            )
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


def _spawn(run: str, folder: Path) -> subprocess.Popen:
    """Start the detached worker process, its output appended to the run's ``train.log``."""
    env = dict(os.environ)
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


def start_job(config: dict[str, Any], *, run: str | None = None) -> str:
    """Record a new job for ``config`` (``TrainConfig`` fields; ``config.build_config`` makes them),
    start its worker, return the run name. The engine checks the config first (``Engine.prepare``)."""
    reap()
    cfg = TrainConfig.from_dict(config)
    data = resolve_path(cfg.data)
    if not data.is_dir():
        raise WorkbenchError(f"{cfg.data}: not a dataset folder")
    cfg.data = str(data)
    short = get_engine(cfg.engine).prepare(cfg)
    run = registry.check_run_name(run) if run else registry.new_run_name(cfg.recipe or short)
    folder = registry.run_dir(run)
    if folder.exists():
        raise WorkbenchError(f"run {run!r} exists already: {folder}")
    folder.mkdir(parents=True)
    registry.write_json(folder / "config.json", {**cfg.to_dict(), "run": run})
    with closing(connect()) as con:
        con.execute(
            "INSERT INTO jobs (run, state, created, config, folder) VALUES (?, 'queued', ?, ?, ?)",
            (run, time.time(), json.dumps(cfg.to_dict()), str(folder)),
        )
    _launch(run, folder)
    return run


def resume_job(run: str, **overrides: Any) -> str:
    """Continue ``run`` from its last checkpoint (``overrides`` such as ``epochs`` change the config)."""
    reap()
    job = get_job(run)
    if job["state"] in ACTIVE:
        raise WorkbenchError(f"job {run} is {job['state']}; cancel it first or wait for it")
    config = {**job["config"], **{k: v for k, v in overrides.items() if v is not None}}
    TrainConfig.from_dict(config)
    fields = {"pid": None, "start_token": None, "ended": None, "message": None, "cancel_requested": 0}
    set_state(run, "queued", config=json.dumps(config), **fields)
    _launch(run, Path(job["folder"]))
    return run


def _launch(run: str, folder: Path) -> None:
    with open(folder / "train.log", "a", encoding="utf-8") as log:
        log.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} job {run} queued\n")
    proc = _spawn(run, folder)
    token = process_token(proc.pid)
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
    pid, token = job["pid"], job["start_token"]
    if is_alive(pid, token):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and is_alive(pid, token):
            time.sleep(0.2)
        if is_alive(pid, token):
            try:
                os.killpg(pid, signal.SIGKILL)  # the worker leads its own session: takes loaders and ranks too
            except ProcessLookupError:
                pass
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


def other_running(run: str) -> list[str]:
    """Runs other than ``run`` that are running now (the queue waits for them)."""
    reap()
    with closing(connect()) as con:
        rows = con.execute("SELECT run FROM jobs WHERE state = 'running' AND run != ?", (run,)).fetchall()
    return [r["run"] for r in rows]


def eta_text(seconds: float | None) -> str:
    """An ETA as ``H:MM:SS`` (``-`` when unknown), as the CLI and the Train page show it."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
