"""Where the workbench keeps its state: the project root, the workspace folder, the model registry.

Both folders are overridable through the environment so that tests and CI never touch the real ones:

* ``WORKBENCH_HOME``: the workspace folder (default ``<project root>/.workbench/``): the dataset
  list, the index cache, thumbnails, the journal, ``jobs.sqlite``, ``demo.json``.
* ``WORKBENCH_MODELS``: the registry root (default ``<project root>/models/``), one folder per run.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DATASET = PROJECT_ROOT / "datasets" / "facemask-sample"


def home() -> Path:
    """The workspace folder (created on first use)."""
    env = os.environ.get("WORKBENCH_HOME")
    path = Path(env).expanduser() if env else PROJECT_ROOT / ".workbench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    """The model registry root (created if missing)."""
    env = os.environ.get("WORKBENCH_MODELS")
    path = Path(env).expanduser() if env else PROJECT_ROOT / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path
