"""Shared fixtures: the real datasets in ../shared/datasets, small copies of them, and a tiny
model trained once per session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from workbench.inference.video import write_video

PROJECT = Path(__file__).resolve().parents[1]
SHARED = PROJECT.parent / "shared" / "datasets"

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")

# 8 images of the shared VOC set with all three classes between them
TINY_STEMS = [f"maksssksksss{i}" for i in (0, 1, 2, 3, 4, 6, 8, 13)]
CLIP_STEMS = [f"maksssksksss{i}" for i in (0, 1, 10, 101)]  # the frames of ``clip``


def listening_addresses(port: int) -> set[str]:
    """The local addresses some process of this machine listens on at TCP ``port``, read from the
    kernel's socket table: what a server is reachable on, whatever it printed or was told."""
    return {
        c.laddr.ip
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
    }


@pytest.fixture(scope="session")
def shared() -> Path:
    assert SHARED.is_dir(), f"{SHARED} is missing: the tests read the real datasets from ../shared/datasets"
    return SHARED


@pytest.fixture(autouse=True)
def _isolated_workspace(tmp_path_factory, monkeypatch):
    """No test writes into the real workspace or model registry."""
    home = tmp_path_factory.mktemp("workspace")
    monkeypatch.setenv("WORKBENCH_HOME", str(home / "home"))
    monkeypatch.setenv("WORKBENCH_MODELS", str(home / "models"))


def copy_voc_subset(shared: Path, dst: Path, stems: list[str]) -> Path:
    """Copy a few images and XMLs of the shared VOC set into ``dst`` (same layout)."""
    for sub in ("images", "annotations"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
    for stem in stems:
        shutil.copy2(shared / "andrewmvd-voc" / "images" / f"{stem}.png", dst / "images")
        shutil.copy2(shared / "andrewmvd-voc" / "annotations" / f"{stem}.xml", dst / "annotations")
    return dst


@pytest.fixture
def voc8(tmp_path) -> Path:
    """A fresh copy of 8 shared VOC images (``TINY_STEMS``) per test: the tests edit it."""
    return copy_voc_subset(SHARED, tmp_path / "voc8", TINY_STEMS)


@dataclass(frozen=True)
class TinyModel:
    """The session's tiny model: the data it trained on, its run folder, and the workspace and
    model registry its training used (``models/latest`` is the run)."""

    data: Path
    run: Path
    home: Path
    models: Path


def pytest_collection_modifyitems(items) -> None:
    """A test that needs the session's trained model is ``slow`` (it trains one the first time),
    wherever it is: ``-m "not slow"`` then trains nothing."""
    for item in items:
        if "tiny_model" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, shared) -> TinyModel:
    """A model trained for 2 iterations at 160 px through ``workbench train`` on 8 shared VOC
    images, once per session, for the evaluation, labelling and demo tests. It lives in a session
    folder: ``_isolated_workspace`` gives every test a fresh workspace and registry. A test that
    writes into the run or the registry works on ``copy_run``; none keeps a change to ``data``."""
    root = tmp_path_factory.mktemp("tiny-model")
    data = copy_voc_subset(shared, root / "data", TINY_STEMS)
    model = TinyModel(data=data, run=root / "models" / "tiny", home=root / "home", models=root / "models")
    env = dict(os.environ, WORKBENCH_HOME=str(model.home), WORKBENCH_MODELS=str(model.models))
    command = [
        sys.executable,
        "-m",
        "workbench.cli",
        "train",
        "--data",
        str(data),
        "--model",
        "fasterrcnn_mobilenet_v2",
        "--epochs",
        "1",
        "--imgsz",
        "160",
        "--batch",
        "2",
        "--max-iters",
        "2",
        "--workers",
        "0",
        "--max-val-images",
        "1",
        "--name",
        "tiny",
        "--wait",
    ]
    result = subprocess.run(command, env=env, cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert (model.run / "model_best.pth").is_file() or (model.run / "checkpoint.pth").is_file()
    assert (model.models / "latest").resolve() == model.run.resolve(), "training did not set models/latest"
    return model


def copy_run(model: TinyModel, models: Path) -> Path:
    """A copy of the tiny model's run folder in the registry folder ``models``, set as its
    ``latest``: for tests that write into the run (evaluations) or serve a registry."""
    models.mkdir(parents=True, exist_ok=True)
    run = Path(shutil.copytree(model.run, models / model.run.name))
    os.symlink(run.name, models / "latest")  # relative, as registry.set_latest makes it
    return run


def write_image(path: Path, width: int, height: int, *, exif_orientation: int | None = None) -> Path:
    """A small real image file (JPEG or PNG by suffix) of the given size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        image.save(path, exif=exif)
    else:
        image.save(path)
    return path


@pytest.fixture(scope="session")
def clip(tmp_path_factory, shared) -> Path:
    """A 4-frame 320x240 MPEG-4 clip made from shared images (the demo and inference tests)."""
    frames = [
        np.asarray(Image.open(shared / "andrewmvd-voc" / "images" / f"{stem}.png").convert("RGB").resize((320, 240)))
        for stem in CLIP_STEMS
    ]
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames, fps=4, codecs=((".mp4", "mp4v"),))
