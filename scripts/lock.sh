#!/usr/bin/env bash
# Refresh requirements.lock on purpose: resolve pyproject's ranges (with the test and ray extras) to exact versions.
# Run the tests afterwards (bash scripts/test.sh) and commit the lock only when they pass.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP_VERSION=$(sed -n 's/^# pip==\(.*\)$/\1/p' requirements.lock 2>/dev/null || true)
# Weights-only packages (installed with --no-deps) keep their pins across refreshes.
NO_DEPS=$(grep '^# .*(installed with --no-deps' requirements.lock)
TOOLS=$(mktemp -d)
trap 'rm -rf "$TOOLS"' EXIT
"$PY" -m venv "$TOOLS/venv"
"$TOOLS/venv/bin/python" -m pip install -q "pip==${PIP_VERSION:-26.3}" "pip-tools==7.7.0"
# pip-compile resolves for this interpreter and platform (Python 3.11, Linux x86_64); the torch / torchaudio pair
# is pinned exactly in pyproject, so the resolver cannot split it. By default the current pins are kept and only
# what pyproject added or no longer allows is resolved anew; UPGRADE=1 takes the newest versions in range.
UPGRADE_FLAG=()
if [[ "${UPGRADE:-0}" == 1 ]]; then UPGRADE_FLAG=(--upgrade); else grep -v '^# ' requirements.lock > requirements.lock.new; fi
"$TOOLS/venv/bin/pip-compile" -q "${UPGRADE_FLAG[@]}" --strip-extras --allow-unsafe --no-emit-index-url \
    --no-emit-find-links --extra test --extra ray --output-file requirements.lock.new pyproject.toml
{
  echo "# Exact versions of every package simsearch installs (Python 3.11, Linux x86_64)."
  echo "# Made by scripts/lock.sh; scripts/install.sh installs from it. Do not edit by hand."
  echo "# pip==${PIP_VERSION:-26.3}"
  echo "$NO_DEPS"
  grep -v '^#' requirements.lock.new   # drop pip-compile's own header lines, keep its indented "# via" notes
} > requirements.lock
rm -f requirements.lock.new
echo "requirements.lock refreshed: $(grep -c '==' requirements.lock) packages. Now run: bash scripts/test.sh"
