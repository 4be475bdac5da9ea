"""workbench/demo_cli.py: --auth parsing, the state file of a running demo, stop."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from workbench.cli.main import build_parser
from workbench.demo import server as demo_cli
from workbench.errors import WorkbenchError


@pytest.mark.parametrize(
    ("text", "expected"),
    [(None, None), ("", None), ("ann:pw", ("ann", "pw")), ("ann:p:w", ("ann", "p:w"))],
)
def test_parse_auth(text, expected):
    assert demo_cli.parse_auth(text) == expected


@pytest.mark.parametrize("text", ["ann", ":pw", "ann:"])
def test_parse_auth_rejects(text):
    with pytest.raises(WorkbenchError, match="USER:PASS"):
        demo_cli.parse_auth(text)


def test_defaults_bind_locally():
    args = build_parser().parse_args(["demo"])
    assert (args.host, args.port, args.model, args.share, args.auth) == ("127.0.0.1", 7860, "latest", False, None)


def test_state_of_a_dead_process_is_stale():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    demo_cli.state_path().write_text(json.dumps({"pid": process.pid, "local_url": "http://127.0.0.1:1/"}))
    assert demo_cli.read_state() is None
    assert not demo_cli.state_path().exists()
    assert demo_cli.status() is None
    assert demo_cli.stop() is False


def test_stop_a_running_process():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        demo_cli._write_state({"pid": process.pid, "local_url": "http://127.0.0.1:1/"})
        state = demo_cli.status()
        assert state["pid"] == process.pid and state["responding"] is False
        assert demo_cli.stop() is True
        assert process.wait(10) != 0
        assert demo_cli.read_state() is None
    finally:
        if process.poll() is None:
            process.kill()
