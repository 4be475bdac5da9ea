#!/usr/bin/env bash
# Mutation testing of the core with mutmut 3 (config: [tool.mutmut] in pyproject.toml), then
# benchmarks/results/mutation.json. Slow, so not part of CI: docs/mutation.md says how long it takes.
#
#   scripts/mutation.sh                      every module in only_mutate
#   scripts/mutation.sh boxes formats.voc    only these (workbench.<MODULE>); their results are
#                                            rerun, the others' kept from the last run
#   scripts/mutation.sh --survivors          only the mutants the last run left alive (after
#                                            adding tests: a full run would redo every mutant)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

# mutmut copies the code and tests into mutants/ and runs pytest there; tests/conftest.py finds
# the datasets at <project>/../shared/datasets from the resolved path of the tests, so mutants/ is
# a link to a sibling folder of the checkout (<checkout>-mutants), whose parent holds shared/.
work="$(cd .. && pwd)/$(basename "$PWD")-mutants"
if [ ! -e mutants ]; then
    mkdir -p "$work"
    ln -s "$work" mutants
fi

names=()
if [ "${1:-}" = "--survivors" ]; then
    # those listed as equivalent in benchmarks/mutation_equivalent.txt are not rerun
    mapfile -t names < <("$VENV/bin/mutmut" results | sed -n 's/^ *\([^ ]*\): \(survived\|no tests\|suspicious\)$/\1/p' |
        grep -vxF -f <(grep -v '^#' benchmarks/mutation_equivalent.txt | cut -d' ' -f1) || true)
    echo "rerunning ${#names[@]} mutants left alive"
    [ "${#names[@]}" -gt 0 ] || exit 0
else
    for module in "$@"; do
        names+=("workbench.${module#workbench.}.*")
    done
fi

start=$(date +%s)
"$VENV/bin/mutmut" run --max-children "${MUTATION_CHILDREN:-2}" "${names[@]}"
seconds=$(( $(date +%s) - start ))
echo "mutmut took ${seconds}s"
if [ "$#" -eq 0 ]; then
    "$VENV/bin/python" benchmarks/mutation_report.py --seconds "$seconds"  # a full run: its time is kept
else
    "$VENV/bin/python" benchmarks/mutation_report.py --partial-seconds "$seconds"
fi
