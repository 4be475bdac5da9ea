"""The layout's rules: layers and no circles (import-linter), a torch-free floor, readable files, the formatter's layout."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "workbench"
FLOOR = ["annotations", "boxes", "drawing", "errors", "fileio", "locks", "metrics", "paths", "splits"]
MAX_LINES = 420  # "about 400": a module a person reads in one sitting


def python_files() -> list[Path]:
    return [
        p
        for folder in ("workbench", "pages", "tests", "benchmarks")
        for p in sorted((ROOT / folder).rglob("*.py"))
        if ".venv" not in p.parts
    ] + [ROOT / "app.py"]


def test_import_contracts_hold():
    """The contracts of pyproject.toml's [tool.importlinter]: layers, a torch-free floor, Streamlit and Gradio kept
    where they belong, no import cycle between sibling modules."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "BROKEN" not in result.stdout


def test_imports_inside_functions_count():
    """grimp (what import-linter reads) sees an import made inside a function, so a lazy import cannot hide a
    layer violation or a circle."""
    graph = grimp.build_graph("workbench", cache_dir=None)
    source = (LIBRARY / "training" / "engines" / "__init__.py").read_text()
    inside = [
        f"{node.module}.{alias.name}"
        for fn in ast.walk(ast.parse(source))
        if isinstance(fn, ast.FunctionDef)
        for node in ast.walk(fn)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("workbench.")
        for alias in node.names
    ]
    assert inside, "the engines table imports its engines inside functions"
    for module in inside:
        assert graph.direct_import_exists(importer="workbench.training.engines", imported=module)


def test_no_import_cycle_between_any_two_modules():
    """Stricter than the acyclic_siblings contract, which leaves a package and its own modules out: no module
    reaches back, directly or through others, to a module that imports it (imports inside functions count)."""
    graph = grimp.build_graph("workbench", cache_dir=None)
    cycles = {
        tuple(sorted((module, imported)))
        for module in graph.modules
        for imported in graph.find_modules_directly_imported_by(module)
        if graph.find_shortest_chain(importer=imported, imported=module)
    }
    assert not cycles, sorted(cycles)


def test_floor_formats_and_datasets_load_without_torch():
    modules = [f"workbench.{m}" for m in FLOOR] + ["workbench.formats", "workbench.datasets.catalog"]
    code = (
        "import json, sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "print(json.dumps(sorted(m for m in ('torch', 'torchvision', 'gradio', 'fiftyone', 'streamlit') "
        "if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


def test_modules_are_read_in_one_sitting():
    long = {
        str(p.relative_to(ROOT)): n for p in LIBRARY.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


@pytest.mark.parametrize("marker", ["skip", "off", "on"])
def test_the_formatter_decides_layout(marker):
    offenders = [str(p.relative_to(ROOT)) for p in python_files() if f"# fmt: {marker}" in p.read_text()]
    assert not offenders, offenders


def test_no_section_banners_as_a_table_of_contents():
    banners = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in LIBRARY.rglob("*.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if line.lstrip().startswith("# ---") or line.lstrip().startswith("# ===")
    ]
    assert not banners, banners
