"""workbench.paths: one workspace folder and one registry, from a checkout, from a wheel, and from the environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from workbench import paths

ROOT = Path(__file__).resolve().parent.parent


def test_checkout_defaults(monkeypatch):
    monkeypatch.delenv("WORKBENCH_HOME", raising=False)
    monkeypatch.delenv("WORKBENCH_MODELS", raising=False)
    assert paths.is_checkout()
    assert paths.PROJECT_ROOT == ROOT
    assert paths.home() == ROOT / ".workbench"
    assert paths.models_dir() == ROOT / "models"


def test_tilde_in_the_environment_is_the_home_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("WORKBENCH_HOME", "~/wb")
    monkeypatch.setenv("WORKBENCH_MODELS", "~/runs")
    monkeypatch.chdir(tmp_path)
    assert paths.home() == tmp_path / "user" / "wb"
    assert paths.models_dir() == tmp_path / "user" / "runs"
    assert not (tmp_path / "~").exists()


def test_every_store_follows_a_tilde_workspace(tmp_path):
    """``WORKBENCH_HOME='~/wb'``: the dataset list, the job database and the demo's state file all go to
    ``$HOME/wb``, none to a ``./~/wb`` under the folder the process runs in (each used to decide on its own)."""
    user = tmp_path / "user"
    env = {**os.environ, "HOME": str(user), "WORKBENCH_HOME": "~/wb", "WORKBENCH_MODELS": str(tmp_path / "models")}
    code = (
        "from workbench.datasets import catalog\n"
        "from workbench.training import jobs\n"
        "from workbench.demo import server\n"
        "import json\n"
        f"catalog.add_dataset({str(ROOT / 'datasets' / 'facemask-sample')!r})\n"
        "jobs.list_jobs()\n"
        "print(json.dumps([str(jobs.db_path()), str(server.state_path())]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert (user / "wb" / "datasets.json").is_file()
    assert (user / "wb" / "jobs.sqlite").is_file()
    assert out.strip() == f'["{user / "wb" / "jobs.sqlite"}", "{user / "wb" / "demo.json"}"]'
    assert not (tmp_path / "~").exists()


@pytest.mark.slow
def test_installed_from_a_wheel_uses_the_user_data_folder(tmp_path):
    """Built as a wheel and installed into a fresh virtual environment (not editable), the default workspace and
    registry are in the user's data folder, not inside site-packages; the environment still overrides them."""
    source = tmp_path / "source"  # built from a copy, so that no build/ folder lands in the checkout
    shutil.copytree(ROOT / "workbench", source / "workbench", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("workbench-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
        check=True,
        capture_output=True,
    )
    # The workbench's dependencies come from this environment; the workbench itself only from the wheel.
    site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    user = tmp_path / "user"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_") and k != "PYTHONPATH"}
    env.update(HOME=str(user), XDG_DATA_HOME="")
    code = "from workbench import paths; print(paths.__file__); print(paths.home()); print(paths.models_dir())"
    run = [str(python), "-c", code]
    where, home, models = subprocess.check_output(run, cwd=tmp_path, env=env, text=True).split()
    assert Path(where).is_relative_to(site), where
    assert Path(home) == user / ".local" / "share" / "workbench" / "workspace"
    assert Path(models) == user / ".local" / "share" / "workbench" / "models"

    env.update(WORKBENCH_HOME="~/wb", WORKBENCH_MODELS=str(tmp_path / "runs"))
    _, home, models = subprocess.check_output(run, cwd=tmp_path, env=env, text=True).split()
    assert (Path(home), Path(models)) == (user / "wb", tmp_path / "runs")
    help_text = subprocess.run(
        [str(venv / "bin" / "workbench"), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "convert" in help_text and "train" in help_text
