"""Fixtures of the labelling tests: a copy of 8 shared VOC images and a tiny model trained once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED, copy_voc_subset

# 8 images of the shared VOC set with all three classes between them
STEMS = [f"maksssksksss{i}" for i in (0, 1, 2, 3, 4, 6, 8, 13)]


@pytest.fixture
def voc8(tmp_path) -> Path:
    """A fresh copy per test: the tests edit it."""
    return copy_voc_subset(SHARED, tmp_path / "voc8", STEMS)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A model trained for 2 iterations at 160 px through ``workbench train``; its run folder.
    Its workspace (where the training hook records the dataset version) is ``<run>/../../home``."""
    root = tmp_path_factory.mktemp("labelling-train")
    data = copy_voc_subset(SHARED, root / "data", STEMS)
    env = dict(os.environ, WORKBENCH_HOME=str(root / "home"), WORKBENCH_MODELS=str(root / "models"))
    command = [
        sys.executable, "-m", "workbench.cli", "train", "--data", str(data), "--model", "fasterrcnn_mobilenet_v2",
        "--epochs", "1", "--imgsz", "160", "--batch", "2", "--max-iters", "2", "--workers", "0",
        "--max-val-images", "1", "--name", "tiny", "--wait",
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    run = root / "models" / "tiny"
    assert (run / "model_best.pth").is_file() or (run / "checkpoint.pth").is_file()
    return run
