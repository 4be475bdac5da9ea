"""``workbench train`` as a user runs it, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT
from tests.formats.test_yolo_yaml import ultra  # noqa: F401 (the fixture: nine shared images in Ultralytics' layout)


def train(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, WORKBENCH_OFFLINE="1")  # no probe of the network for weights
    command = [sys.executable, "-m", "workbench.cli", "train", *args]
    return subprocess.run(command, env=env, cwd=PROJECT, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_train_on_a_data_yaml_uses_its_splits_and_names(ultra: Path) -> None:  # noqa: F811
    (ultra / "val.txt").write_text(
        "".join(f"./{p.relative_to(ultra).as_posix()}\n" for p in sorted((ultra / "images" / "val").iterdir()))
    )
    data = {"path": ".", "train": ["images/train", "images/extra"], "val": "val.txt", "names": {0: "bare", 1: "masked"}}
    yml = ultra / "data.yaml"
    yml.write_text(yaml.safe_dump(data))
    result = train(
        "--data",
        str(yml),
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
        "--name",
        "yaml-run",
        "--wait",
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    run = Path(os.environ["WORKBENCH_MODELS"]) / "yaml-run"
    split = json.loads((run / "split.json").read_text())
    images = lambda folder: sorted(f"images/{folder}/{p.name}" for p in (ultra / "images" / folder).iterdir())  # noqa: E731
    assert sorted(split["val"]) == images("val")
    assert sorted(split["train"]) == sorted(images("train") + images("extra"))
    config = json.loads((run / "config.json").read_text())
    assert config["classes"] == ["bare", "masked"] and config["data"] == str(yml.resolve())


def test_train_refuses_a_bad_data_yaml_at_once(tmp_path: Path) -> None:
    result = train("--data", str(tmp_path / "data.yaml"))
    assert result.returncode != 0 and "data.yaml: no such file" in result.stderr
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"train": "images", "val": "images", "names": ["a"]}))
    result = train("--data", str(tmp_path / "data.yaml"))
    assert result.returncode != 0 and "'train': 'images' does not exist" in result.stderr
