#!/usr/bin/env bash
# Set up .venv with exactly the packages requirements.lock names, then simsearch itself (editable) on top.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOCK=requirements.lock
PIP_VERSION=$(sed -n 's/^# pip==\(.*\)$/\1/p' "$LOCK")
AISFX=$(sed -n 's/^# \(aisfx==[^ ]*\).*$/\1/p' "$LOCK")
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q "pip==$PIP_VERSION"
# Every dependency at its locked version (downgrades or upgrades what an older .venv holds).
.venv/bin/python -m pip install -q -r "$LOCK"
# The project itself, with no resolution of its own: its dependencies are all in the lock.
.venv/bin/python -m pip install -q --no-deps -e .
# aiSFX pins numpy 1.23 / librosa 0.9 that we do not use: install its weights without them.
.venv/bin/python -m pip install -q --no-deps "$AISFX"
echo "simsearch installed in $(pwd)/.venv from $LOCK ($(du -sh .venv | cut -f1))"
