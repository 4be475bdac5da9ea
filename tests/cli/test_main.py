"""workbench/cli/main.py: the entry point lists every job, ``ui`` serves the app, every command
stays a short function that calls the library, and no page imports a CLI module."""

from __future__ import annotations

import ast
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import listening_addresses
from workbench.cli import main as cli

ROOT = Path(__file__).resolve().parents[2]
WORKBENCH = str(Path(sys.executable).parent / "workbench")
MAX_COMMAND_LINES = 40  # a command collects input, calls one library function and prints its answer


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
        "export",
        "demo",
        "suggest",
        "versions",
        "diff",
    ):
        assert command in result.stdout, command


def test_train_help_names_every_model(capsys):
    from workbench.training.models import MODELS

    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
    for name in MODELS:
        assert name in text, name


@pytest.mark.slow
@pytest.mark.parametrize(("extra", "bound"), [([], {"127.0.0.1"}), (["--address", "0.0.0.0"], {"0.0.0.0"})])
def test_ui_serves_the_workbench_on_the_address_asked_for(shared, extra, bound):
    """By default on 127.0.0.1 only (this machine), else on the address given: checked by the
    listening socket itself, so a server bound to every interface cannot pass."""
    port = _free_port()
    proc = subprocess.Popen(
        [WORKBENCH, "ui", "--port", str(port), "--data", str(shared / "andrewmvd-voc"), *extra],
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
                time.sleep(0.5)  # poll again: the condition is the health check answering
        assert listening_addresses(port) == bound
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_python_dash_m_runs_the_same_parser():
    result = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "convert" in result.stdout and "demo" in result.stdout


def test_every_group_registers_its_commands():
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices  # the one sub-parsers action
    for name, command in commands.items():
        func = command.get_default("func")
        assert func is not None and func.__name__.startswith("cmd_"), name
        group = func.__module__.rsplit(".", 1)[-1]
        assert group in {g.__name__.rsplit(".", 1)[-1] for g in cli.GROUPS}, (name, func.__module__)


def test_a_library_error_is_one_line_and_exit_1(tmp_path, capsys):
    assert cli.main(["check", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("workbench: error: ") and "Traceback" not in err


def command_functions() -> list[tuple[str, ast.FunctionDef]]:
    found = []
    for path in sorted((ROOT / "workbench" / "cli").glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("cmd_"):
                found.append((f"{path.name}:{node.name}", node))
    return found


def test_every_command_is_short():
    """No command holds a pipeline: each ``cmd_*`` stays under ``MAX_COMMAND_LINES`` lines."""
    functions = command_functions()
    assert len(functions) >= 15, [name for name, _ in functions]
    long = {name: n for name, node in functions if (n := node.end_lineno - node.lineno + 1) > MAX_COMMAND_LINES}
    assert not long, f"commands over {MAX_COMMAND_LINES} lines (move the work into the library): {long}"


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def test_no_page_imports_a_cli_module():
    """Pages call the library, never a command (imports inside functions count)."""
    pages = [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py")), *sorted((ROOT / "pages" / "common").glob("*.py"))]
    assert len(pages) > 5
    offenders = {
        str(p.relative_to(ROOT)): sorted(
            m for m in imported_modules(p) if m == "workbench.cli" or m.startswith("workbench.cli.")
        )
        for p in pages
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_the_page_import_check_sees_a_cli_import(tmp_path):
    page = tmp_path / "page.py"
    page.write_text("def f():\n    from workbench.cli.common import progress_bars\n\nfrom workbench import cli\n")
    assert {"workbench.cli.common", "workbench.cli"} <= imported_modules(page)
