#!/usr/bin/env bash
# Start the workbench (Streamlit) on http://127.0.0.1:8501.
# Extra arguments go to app.py, e.g.: scripts/start.sh --dataset path/to/data
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

export FIFTYONE_DO_NOT_TRACK=true
export STREAMLIT_BROWSER_GATHER_USAGE_STATS=false
exec .venv/bin/streamlit run app.py \
    --server.address 127.0.0.1 --server.headless true -- "$@"
