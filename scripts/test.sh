#!/usr/bin/env bash
# Set up (with the browser for UI tests), lint, and run the test suite.
# Extra arguments go to pytest, e.g.: scripts/test.sh -k formats -x
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --test

export FIFTYONE_DO_NOT_TRACK=true

echo "[test] ruff check ."
ruff_rc=0
.venv/bin/ruff check . || ruff_rc=$?

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
if [ "$ruff_rc" -ne 0 ]; then
    echo "[test] FAIL: ruff check found problems" >&2
    exit "$ruff_rc"
fi
