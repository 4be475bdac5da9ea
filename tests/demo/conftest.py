"""Fixtures of the demo tests: a ``DetectorDemo`` over a fake predictor (``app``), and real demo
servers (``workbench demo`` subprocesses) on free ports of 127.0.0.1, one of them serving a copy
of the session's tiny model (``demo_setup``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import PROJECT, SHARED, TinyModel, copy_run
from workbench.annotations import Detections
from workbench.demo.detector import DemoLimits, DetectorDemo, ModelSource
from workbench.inference.video import write_video
from workbench.paths import models_dir

CLIP_STEMS = [f"maksssksksss{i}" for i in (0, 1, 10, 101)]  # the frames of ``clip``
AUTH = ("tester", "s3cret-pass")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def workbench(*args: str, env: dict[str, str], timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "workbench.cli", *args],
        env=env,
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"workbench {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


@dataclass
class Server:
    """A ``workbench demo`` subprocess; ``url`` once ``wait()`` returned."""

    process: subprocess.Popen
    port: int
    log: Path
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait(self, timeout: float = 120) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "workbench demo: serving on" in self.output():
                return self
            if self.process.poll() is not None:
                raise AssertionError(f"demo exited with {self.process.returncode}:\n{self.output()[-3000:]}")
            time.sleep(0.3)
        raise AssertionError(f"demo did not start in {timeout} s:\n{self.output()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_server(tmp: Path, env: dict[str, str], *extra: str) -> Server:
    port = free_port()
    log = tmp / f"demo-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "workbench.cli", "demo", "--port", str(port), *extra],
            env=env,
            cwd=PROJECT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Server(process=process, port=port, log=log, env=env)


def session_env(root: Path) -> dict[str, str]:
    (root / "models").mkdir(parents=True, exist_ok=True)
    return dict(
        os.environ,
        WORKBENCH_MODELS=str(root / "models"),
        WORKBENCH_HOME=str(root / "home"),
        GRADIO_ANALYTICS_ENABLED="False",
        PYTHONUNBUFFERED="1",
    )


@dataclass
class DemoSetup:
    model_env: dict[str, str]
    run_dir: Path
    server: Server  # serves the trained model
    empty: Server  # no model yet, --auth and --share


@pytest.fixture(scope="session")
def demo_setup(tmp_path_factory, request) -> Iterator[DemoSetup]:
    root = tmp_path_factory.mktemp("demo")
    # The no-model server starts first, so that its start-up overlaps the training of the tiny model.
    empty_env = session_env(root / "empty")
    empty_env["WORKBENCH_DEMO_AUTH"] = f"{AUTH[0]}:{AUTH[1]}"
    empty = start_server(root, empty_env, "--share")
    servers = [empty]
    try:
        model: TinyModel = request.getfixturevalue("tiny_model")
        env = session_env(root / "trained")
        run = copy_run(model, Path(env["WORKBENCH_MODELS"]))  # the server's registry: latest is the copy
        server = start_server(root, env)
        servers.append(server)
        yield DemoSetup(model_env=env, run_dir=run.resolve(), server=server.wait(), empty=empty.wait())
    finally:
        for s in servers:
            s.stop()


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    """A 4-frame 320x240 MPEG-4 clip made from shared images."""
    frames = [
        np.asarray(Image.open(SHARED / "andrewmvd-voc" / "images" / f"{stem}.png").convert("RGB").resize((320, 240)))
        for stem in CLIP_STEMS
    ]
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames, fps=4, codecs=((".mp4", "mp4v"),))


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


CLASSES = ["with_mask", "without_mask"]


class FakePredictor:
    """A stand-in for ``Predictor``: one box per class at fixed pixels; remembers the thresholds it was called with."""

    def __init__(self, folder: Path) -> None:
        self.run_dir = folder
        self.classes = list(CLASSES)
        self.card = {"run": folder.name, "model": "fake", "classes": self.classes}
        self.device = torch.device("cpu")
        self.calls: list[tuple[float, float]] = []

    def predict(self, image: np.ndarray, score_threshold: float = 0.25, iou_threshold: float = 0.5) -> Detections:
        self.calls.append((score_threshold, iou_threshold))
        det = Detections(boxes=[[10, 20, 60, 90], [100, 5, 140, 45]], scores=[0.9, 0.4], class_ids=[0, 1])
        return det[det.scores >= score_threshold]


def make_run(name: str) -> Path:
    folder = models_dir() / name
    folder.mkdir(parents=True)
    (folder / "model_best.pth").write_bytes(b"fake")
    return folder


@pytest.fixture
def loads() -> list[Path]:
    return []


@pytest.fixture
def source(loads) -> ModelSource:
    def loader(folder: Path, device: str = "auto") -> FakePredictor:
        loads.append(folder)
        return FakePredictor(folder)

    return ModelSource("latest", loader=loader)


@pytest.fixture
def app(source, tmp_path) -> DetectorDemo:
    return DetectorDemo(source, out_dir=tmp_path / "out", limits=DemoLimits(max_side=500, max_pixels=200_000))
