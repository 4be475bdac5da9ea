#!/usr/bin/env bash
# Set up (with the browser for UI tests), lint (ruff, import contracts), and run the test suite.
# Extra arguments go to pytest, e.g.: scripts/test.sh -k formats -x
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --test

export FIFTYONE_DO_NOT_TRACK=true

echo "[test] ruff check ."
ruff_rc=0
.venv/bin/ruff check . || ruff_rc=$?

echo "[test] ruff format --check (the formatter decides layout)"
.venv/bin/ruff format --check --exclude '*.md' . || ruff_rc=$?

echo "[test] lint-imports (layers, torch-free floor, no cycles; pyproject.toml [tool.importlinter])"
lint_rc=0
.venv/bin/lint-imports || lint_rc=$?

echo "[test] pytest"
rc=0
.venv/bin/python -m pytest -q "$@" || rc=$?

if [ "$rc" -eq 5 ]; then
    echo "[test] FAIL: pytest collected no tests" >&2
    exit 1
fi
if [ "$rc" -ne 0 ]; then
    exit "$rc"
fi
if [ "$lint_rc" -ne 0 ]; then
    echo "[test] FAIL: lint-imports found broken contracts" >&2
    exit "$lint_rc"
fi
if [ "$ruff_rc" -ne 0 ]; then
    echo "[test] FAIL: ruff check found problems" >&2
    exit "$ruff_rc"
fi
