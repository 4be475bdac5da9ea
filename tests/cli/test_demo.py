"""workbench/cli/demo.py: the ``demo`` command's defaults, what it passes to ``server.serve``, and
the error it reports when the port is taken."""

from __future__ import annotations

import socket

import pytest

from workbench.cli import demo
from workbench.cli.main import build_parser, main


def test_defaults_bind_locally():
    args = build_parser().parse_args(["demo"])
    # no --model: the run is chosen for the current dataset (``latest`` when there is none)
    assert (args.host, args.port, args.model, args.share, args.auth) == ("127.0.0.1", 7860, None, False, None)
    assert (args.data, args.any_classes) == (None, False)


def test_without_a_dataset_the_demo_serves_latest(monkeypatch):
    calls = []
    monkeypatch.setattr(demo, "serve", lambda **kwargs: calls.append(kwargs))
    assert main(["demo"]) == 0
    assert calls[0]["model"] == "latest"


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


def test_the_demo_serves_the_current_datasets_run_and_refuses_other_classes(voc8, tmp_path, monkeypatch, capsys):
    from tests.training.test_registry import trained
    from workbench.datasets import catalog
    from workbench.formats import voc

    calls = []
    monkeypatch.setattr(demo, "serve", lambda **kwargs: calls.append(kwargs["model"]))
    catalog.add_dataset(voc8)
    (tmp_path / "cars").mkdir()
    trained("cars", tmp_path / "cars", ["car"])
    assert main(["demo"]) == 1
    err = capsys.readouterr().err
    assert "model cars was not trained on the classes" in err and "only the model has car" in err
    assert "--any-classes" in err
    assert main(["demo", "--model", "latest", "--any-classes"]) == 0
    trained("masks", voc8, voc.load(voc8).classes)
    trained("cars-2", tmp_path / "cars", ["car"])  # the newest run overall, of another dataset
    assert main(["demo"]) == 0
    assert main(["demo", "--data", str(tmp_path / "cars")]) == 1  # not a dataset: reported, not a traceback
    assert calls == ["latest", f"latest:{voc8.resolve()}"]
