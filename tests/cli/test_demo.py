"""workbench/cli/demo.py: the ``demo`` command's defaults, what it passes to ``server.serve``, and
the error it reports when the port is taken."""

from __future__ import annotations

import socket

import pytest

from workbench.cli import demo
from workbench.cli.main import build_parser, main


def test_defaults_bind_locally():
    args = build_parser().parse_args(["demo"])
    assert (args.host, args.port, args.model, args.share, args.auth) == ("127.0.0.1", 7860, "latest", False, None)


def test_the_command_passes_its_input_to_serve(monkeypatch):
    calls = []
    monkeypatch.setattr(demo, "serve", lambda **kwargs: calls.append(kwargs))
    argv = ["demo", "--model", "r1", "--port", "7001", "--share", "--auth", "a:b", "--device", "cpu"]
    assert main([*argv, "--concurrency", "3"]) == 0
    assert calls == [
        {
            "model": "r1",
            "host": "127.0.0.1",
            "port": 7001,
            "share": True,
            "auth": "a:b",
            "device": "cpu",
            "concurrency": 3,
        }
    ]


def test_bad_auth_is_an_error_not_a_traceback(capsys):
    assert main(["demo", "--auth", "nopassword"]) == 1
    assert "workbench: error: --auth takes USER:PASS" in capsys.readouterr().err


@pytest.mark.slow
def test_a_port_in_use_is_reported(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["demo", "--port", str(port), "--device", "cpu"]) == 1
    assert f"workbench: error: cannot serve on 127.0.0.1:{port}" in capsys.readouterr().err
