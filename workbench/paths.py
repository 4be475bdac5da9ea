"""Where the workbench keeps its state: the project root, the workspace folder, the model registry.

* From a checkout (``pyproject.toml`` beside the package), the workspace is
  ``<project>/.workbench/`` and the registry ``<project>/models/``.
* Installed as a package (a wheel in site-packages), both live in the user's data folder
  (``platformdirs``: ``~/.local/share/workbench/`` on Linux), never inside site-packages.
* ``WORKBENCH_HOME`` (the workspace: the dataset list, the index cache, thumbnails, the
  journal, ``jobs.sqlite``, ``demo.json``) and ``WORKBENCH_MODELS`` (the registry, one folder
  per run) override both; ``~`` in them is the user's home folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

PACKAGE_ROOT = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_ROOT.parent
SAMPLE_DATASET = PROJECT_ROOT / "datasets" / "facemask-sample"


def is_checkout() -> bool:
    """True when the package runs from the project's own folder, not from an installed wheel."""
    return (PROJECT_ROOT / "pyproject.toml").is_file() and (PROJECT_ROOT / "app.py").is_file()


def _folder(variable: str, in_checkout: str, installed: str) -> Path:
    env = os.environ.get(variable)
    if env:
        path = Path(env).expanduser()
    elif is_checkout():
        path = PROJECT_ROOT / in_checkout
    else:
        path = platformdirs.user_data_path("workbench") / installed
    path.mkdir(parents=True, exist_ok=True)
    return path


def home() -> Path:
    """The workspace folder (created on first use)."""
    return _folder("WORKBENCH_HOME", ".workbench", "workspace")


def models_dir() -> Path:
    """The model registry root (created on first use)."""
    return _folder("WORKBENCH_MODELS", "models", "models")
