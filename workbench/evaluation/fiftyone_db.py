"""Which FiftyOne database the workbench uses, what its datasets are called there, and how
sample paths travel between machines.

* **Database**: FiftyOne's own local ``mongod`` (under ``~/.fiftyone``) unless
  ``WORKBENCH_FIFTYONE_URI`` or FiftyOne's ``FIFTYONE_DATABASE_URI`` names a MongoDB server
  (``mongodb://[user:password@]host:port/?authSource=admin``); the workbench's variable wins.
  ``configure`` sets either from the command line.
* **Names**: ``workbench-<folder>-<workspace id>-<dataset id>``. The workspace id is random,
  made once and kept in ``<workspace>/fiftyone.json``; so is each dataset's id, keyed by the
  dataset's shared root (below). No absolute path goes into a name, and two workspaces on one
  server never share a dataset; two machines that share a workspace folder (and map their
  paths to the same shared root) do.
* **Path mapping** (``workbench.paths``): ``WORKBENCH_PATH_MAP="/local/prefix=/shared/prefix"`` (several separated
  by ``os.pathsep``) rewrites a sample's local path to the path every machine can open when it
  is written (``to_shared``) and back when it is read (``to_local``); a path under no prefix
  is kept. docs/scale.md tells how to set one up.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from workbench.fileio import atomic_write
from workbench.locks import locked
from workbench.paths import PATH_MAP_ENV, home, parse_path_map, to_shared

URI_ENV = "WORKBENCH_FIFTYONE_URI"
STORE = "fiftyone.json"


def database_uri() -> str | None:
    """The MongoDB server to use (``WORKBENCH_FIFTYONE_URI``, else ``FIFTYONE_DATABASE_URI``);
    ``None``: FiftyOne's own local database."""
    return os.environ.get(URI_ENV) or os.environ.get("FIFTYONE_DATABASE_URI") or None


def configure(*, uri: str | None = None, path_map: list[str] | None = None) -> None:
    """Set the database and the path mapping for this process (the CLI's ``--database-uri`` and
    ``--path-map``); ``None`` leaves a setting as it is."""
    if path_map is not None:
        parse_path_map(os.pathsep.join(path_map))  # refuse a bad one now
        os.environ[PATH_MAP_ENV] = os.pathsep.join(path_map)
    if uri:
        os.environ[URI_ENV] = uri
        if "fiftyone" in sys.modules:
            _reconnect(uri)


def _reconnect(uri: str) -> None:
    import fiftyone as fo
    import fiftyone.core.odm.database as fodb

    if fo.config.database_uri != uri:
        fodb._disconnect()
        fo.config.database_uri = uri


def fiftyone():
    """The ``fiftyone`` module, imported with the workbench's defaults (no tracking, no progress
    bars) and connected to ``database_uri()``."""
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
    uri = os.environ.get(URI_ENV)
    if uri and "fiftyone" in sys.modules:
        _reconnect(uri)
    elif uri:
        os.environ["FIFTYONE_DATABASE_URI"] = uri
    import fiftyone as fo

    return fo


def redacted(uri: str | None) -> str:
    """The database for display: ``"local"``, or the URI with its password as ``***``."""
    if not uri:
        return "local"
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.netloc.rsplit('@', 1)[1]}"
    return urlunsplit(parts._replace(netloc=netloc))


def shared_root(root: Path | str) -> str:
    """A dataset folder resolved, then mapped: the key of its FiftyOne dataset."""
    return to_shared(Path(root).expanduser().resolve())


def _store() -> Path:
    return home() / STORE


def _ids(root: str | None = None) -> tuple[str, str | None]:
    """The workspace id and, when ``root`` (a shared root) is given, that dataset's id; made and
    saved on first use (under the store's lock: two processes agree)."""
    store = _store()
    current = _read(store)
    if current.get("workspace") and (root is None or root in current.get("datasets", {})):
        return current["workspace"], current["datasets"][root] if root else None
    with locked(store):
        data = _read(store)
        data.setdefault("workspace", secrets.token_hex(4))
        datasets = data.setdefault("datasets", {})
        if root is not None and root not in datasets:
            taken = set(datasets.values())
            while (new := secrets.token_hex(3)) in taken:
                pass
            datasets[root] = new
        atomic_write(store, json.dumps(data, indent=2) + "\n")
    return data["workspace"], datasets.get(root) if root else None


def _read(store: Path) -> dict:
    try:
        data = json.loads(store.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def workspace_id() -> str:
    """This workspace's id in FiftyOne dataset names (8 hex digits, made once)."""
    return _ids()[0]


def _folder(root: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", Path(root).name).strip("-") or "dataset"


def dataset_name(root: Path | str) -> str:
    """The FiftyOne dataset of a workbench dataset folder in this workspace:
    ``workbench-<folder>-<workspace id>-<dataset id>`` (stable, no path in it)."""
    shared = shared_root(root)
    workspace, key = _ids(shared)
    return f"workbench-{_folder(shared)}-{workspace}-{key}"


def legacy_name(root: Path | str) -> str:
    """The name earlier versions gave a folder (from its absolute path), for ``find_dataset``."""
    resolved = str(Path(root).expanduser().resolve())
    return f"workbench-{_folder(resolved)}-{hashlib.sha1(resolved.encode()).hexdigest()[:8]}"


def find_dataset(root: Path | str):
    """The FiftyOne dataset of ``root``, or ``None``. In FiftyOne's own local database a dataset
    under the old path-derived name is renamed to the new one (once)."""
    fo = fiftyone()
    name = dataset_name(root)
    if fo.dataset_exists(name):
        return fo.load_dataset(name)
    old = legacy_name(root)
    if database_uri() is None and fo.dataset_exists(old):
        ds = fo.load_dataset(old)
        ds.name = name
        return ds
    return None
