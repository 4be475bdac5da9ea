"""Where a job's worker runs: this machine (``local``), a Ray cluster (``ray``) or Slurm (``slurm``).

Every executor starts the same worker, ``python -m workbench.training.worker RUN``, and every
worker records its job in the workspace's ``jobs.sqlite`` and writes the run's files in
``models/<run>/``; the job list, progress, logs, cancel and resume are therefore the same on
every executor. A job's row keeps the executor's name (``executor``), what it was given
(``executor_options``: the Ray address, the Slurm partition, the node count) and the id the
engine knows the job by (``engine_id``: a pid, a Ray submission id, a Slurm job id).

The two sides of an executor:

* **Where the job is submitted** (``jobs`` calls these): ``submit`` starts the worker and
  returns its engine id; ``status`` tells whether it is still queued or running there
  (``ACTIVE``), gone (``GONE``) or cannot be told now (``None``: the cluster is unreachable, so
  the job is left as it is); ``cancel`` stops it; ``logs`` is the engine's own log of it (what
  ``train.log`` cannot hold: a worker that never started).
* **Where the job runs** (``worker`` calls it): ``run_ranks`` runs the DDP ranks, ``per_node``
  processes on each of ``nodes`` nodes, as one process group.

Local jobs take their turn from ``scheduler`` (at most ``max_jobs`` on this machine, the GPUs
they need free); a cluster's jobs take theirs from the cluster, so their worker starts at once.
On a cluster the workspace and the models folder must be a folder both sides see:
``WORKBENCH_PATH_MAP`` (``paths.to_shared``) names them as the cluster does. docs/scale.md.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError

ACTIVE = "active"
GONE = "gone"
EXECUTOR_ENV = "WORKBENCH_EXECUTOR"  # set for the worker: which executor started it

# name -> (module, summary); modules load on first use (Ray and submitit are big imports)
EXECUTORS: dict[str, tuple[str, str]] = {
    "local": ("workbench.training.executors.local", "a detached process on this machine (default)"),
    "ray": ("workbench.training.executors.ray", "a Ray cluster, through its Job Submission API"),
    "slurm": ("workbench.training.executors.slurm", "a Slurm cluster, through submitit"),
}
DEFAULT_EXECUTOR = "local"


class Executor:
    """The interface; ``local``, ``ray`` and ``slurm`` implement it (one module each)."""

    name = ""
    # True: jobs wait for their turn on this machine (``scheduler.claim``'s limits)
    schedules_locally = False
    # the options it takes (``address``, ``partition``, ``nodes``, ``time``)
    options: tuple[str, ...] = ()

    def check(self, options: dict[str, Any]) -> dict[str, Any]:
        """The options this executor keeps for a job, checked and completed (a ``WorkbenchError``
        names a bad or missing one before anything is submitted). Here: refuses options it does
        not take; executors extend it."""
        other = sorted(k for k, v in options.items() if v is not None and k not in self.options)
        if other:
            raise WorkbenchError(f"the {self.name} executor takes no {', '.join(other)} option")
        return {k: v for k, v in options.items() if v is not None}

    def submit(self, job: dict[str, Any], folder: Path, *, env: dict[str, str]) -> str:
        """Start the worker for ``job`` (its row in ``jobs.sqlite``: ``run``, ``config``,
        ``attempts``, ``executor_options``), ``folder`` its run folder, ``env`` extra environment
        variables it needs; the job's id in this engine."""
        raise NotImplementedError

    def status(self, job: dict[str, Any]) -> str | None:
        """``ACTIVE``, ``GONE``, or ``None`` when it cannot be told now."""
        raise NotImplementedError

    def cancel(self, job: dict[str, Any], *, timeout: float) -> None:
        """Stop the job (SIGTERM first: the training loop stops at its next iteration)."""
        raise NotImplementedError

    def logs(self, job: dict[str, Any]) -> str:
        """The engine's own log of the job (``""`` when it has none)."""
        return ""

    def run_ranks(
        self, job: dict[str, Any], folder: Path, *, nodes: int, per_node: int, should_stop: Callable[[], bool]
    ) -> int:
        """Run the DDP ranks of ``job`` (``python -m workbench.training.worker --rank RUN``) as one
        group, ``folder`` its run folder as this machine names it; their exit code (0 when all
        finished)."""
        raise NotImplementedError


_cache: dict[str, Executor] = {}


def get_executor(name: str | None) -> Executor:
    """The executor called ``name`` (``None``: local); a ``WorkbenchError`` for an unknown one or
    one whose package is not installed."""
    name = name or DEFAULT_EXECUTOR
    if name not in EXECUTORS:
        raise WorkbenchError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
    if name not in _cache:
        try:
            module = importlib.import_module(EXECUTORS[name][0])
        except ImportError as e:
            raise WorkbenchError(
                f"the {name} executor needs {e.name or 'a package'} (pip install -r requirements.txt): {e}"
            ) from e
        _cache[name] = module.EXECUTOR
    return _cache[name]
