from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

WORKBENCH = str(Path(sys.executable).parent / "workbench")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_help_lists_every_job():
    result = subprocess.run([WORKBENCH, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for command in (
        "convert",
        "check",
        "ui",
        "train",
        "jobs",
        "cancel",
        "predict",
        "eval",
        "errors",
        "demo",
        "suggest",
        "versions",
        "diff",
    ):
        assert command in result.stdout, command


def test_ui_serves_the_workbench_on_localhost(shared, tmp_path):
    port = _free_port()
    proc = subprocess.Popen(
        [WORKBENCH, "ui", "--port", str(port), "--data", str(shared / "andrewmvd-voc")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    assert r.status == 200 and r.read() == b"ok"
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.time() < deadline, "streamlit did not answer in 90 s"
                time.sleep(0.5)
        # bound to 127.0.0.1 only: no other address of this machine answers
        with socket.socket() as s:
            s.settimeout(1)
            host = socket.gethostbyname(socket.gethostname())
            if host != "127.0.0.1" and not host.startswith("127."):
                assert s.connect_ex((host, port)) != 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
