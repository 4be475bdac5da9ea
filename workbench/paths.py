"""Where the workbench keeps its state: the project root, the workspace folder, the model registry.

* From a checkout (``pyproject.toml`` beside the package), the workspace is
  ``<project>/.workbench/`` and the registry ``<project>/models/``.
* Installed as a package (a wheel in site-packages), both live in the user's data folder
  (``platformdirs``: ``~/.local/share/workbench/`` on Linux), never inside site-packages.
* ``WORKBENCH_HOME`` (the workspace: the dataset list, the index cache, thumbnails, the
  journal, ``jobs.sqlite``, ``demo.json``) and ``WORKBENCH_MODELS`` (the registry, one folder
  per run) override both; ``~`` in them is the user's home folder.
* ``WORKBENCH_PATH_MAP="/local/prefix=/shared/prefix"`` (several separated by ``os.pathsep``)
  names this machine's paths as other machines see them (``to_shared``) and back
  (``to_local``): the FiftyOne samples on a shared MongoDB, the workspace of a cluster job.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import platformdirs

from workbench.errors import WorkbenchError

PACKAGE_ROOT = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_ROOT.parent
SAMPLE_DATASET = PROJECT_ROOT / "datasets" / "facemask-sample"
PATH_MAP_ENV = "WORKBENCH_PATH_MAP"


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


def parse_path_map(text: str | None = None) -> list[tuple[str, str]]:
    """``[(local prefix, shared prefix)]`` of ``text`` (default ``WORKBENCH_PATH_MAP``), longest
    local prefix first."""
    text = os.environ.get(PATH_MAP_ENV, "") if text is None else text
    pairs = []
    for item in re.split(rf"[{re.escape(os.pathsep)}\n]", text):
        if not item.strip():
            continue
        local, sep, shared = item.strip().partition("=")
        local, shared = local.strip().rstrip("/"), shared.strip().rstrip("/")
        if not sep or not local or not shared:
            raise WorkbenchError(f"{PATH_MAP_ENV}: {item.strip()!r} is not LOCAL=SHARED (two absolute prefixes)")
        pairs.append((local, shared))
    return sorted(pairs, key=lambda pair: -len(pair[0]))


def _swap(path: str, pairs: list[tuple[str, str]]) -> str:
    for old, new in pairs:
        if path == old or path.startswith(old + "/"):
            return new + path[len(old) :]
    return path


def to_shared(path: str | Path) -> str:
    """A local path as every machine names it (the first mapped prefix it starts with, whole
    folder names only); unmapped paths are kept."""
    return _swap(str(path), parse_path_map())


def to_local(path: str | Path) -> str:
    """A shared path back as this machine names it (``to_shared`` reversed)."""
    pairs = sorted(((s, loc) for loc, s in parse_path_map()), key=lambda pair: -len(pair[0]))
    return _swap(str(path), pairs)
