"""Session fixtures for the demo tests: real demo servers (``workbench demo`` subprocesses) on
free ports of 127.0.0.1, one of them serving a copy of the session's tiny model."""

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

import pytest

from tests.conftest import PROJECT, SHARED, TinyModel, copy_run

CLIP_STEMS = [f"maksssksksss{i}" for i in (0, 1, 10, 101)]  # the frames of ``clip``
AUTH = ("tester", "s3cret-pass")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def workbench(*args: str, env: dict[str, str], timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "workbench.cli", *args],
        env=env, cwd=PROJECT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
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
            env=env, cwd=PROJECT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
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
    import numpy as np
    from PIL import Image

    from workbench.inference.video import write_video

    frames = [
        np.asarray(Image.open(SHARED / "andrewmvd-voc" / "images" / f"{stem}.png").convert("RGB").resize((320, 240)))
        for stem in CLIP_STEMS
    ]
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames, fps=4, codecs=((".mp4", "mp4v"),))


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))
