"""Where training keeps its state: the workspace (job database) and the model registry.

Both are overridable through the environment so that tests and CI never touch the real ones:

* ``WORKBENCH_HOME``: the workspace folder (default ``<project root>/.workbench/``), holding ``jobs.sqlite``.
* ``WORKBENCH_MODELS``: the registry root (default ``<project root>/models/``), one folder per run.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent


def workspace_dir() -> Path:
    """The workspace folder (created if missing)."""
    path = Path(os.environ.get("WORKBENCH_HOME") or PROJECT_ROOT / ".workbench")
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    """The model registry root (created if missing)."""
    path = Path(os.environ.get("WORKBENCH_MODELS") or PROJECT_ROOT / "models")
    path.mkdir(parents=True, exist_ok=True)
    return path
