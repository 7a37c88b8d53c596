#!/usr/bin/env bash
# The fine-tuned rung: `simsearch eval --finetune` on the Sonic Pi samples (14 prefix labels, stratified
# 5-fold) and FSDD (folds by take), spectral and frozen ENC (kNN, probe) beside ENC fine-tuned on each fold's training
# files only. Prints each report's table and decision note; per-fold numbers, wall time and peak RSS of every
# fine-tuning run are in WORK/*/report.json and WORK/*/finetune/ENC/fold-N/checkpoint/finetune.json.
# Re-runs reuse the cached embeddings and finished folds (a killed fold resumes from its last epoch).
#
#   scripts/finetune_table.sh [DATA] [WORK]          # DATA=../shared/data WORK=/tmp/finetune_eval
#   FT_ENCODER=whisper-tiny-torch FSDD_TAKES=50 DEVICE=cuda scripts/finetune_table.sh
#
# FSDD_TAKES=10 (default) keeps takes 0-9: 600 files, every digit and speaker, 2 takes per fold; 50 = all 3000.
# On this project's 2-core CPU (shared): about 15 minutes for Sonic Pi and 20 for 600 FSDD files with yamnet-torch.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DATA=$(cd "${1:-$HERE/../../shared/data}" && pwd)
WORK=${2:-/tmp/finetune_eval}
ENC=${FT_ENCODER:-yamnet-torch}
TAKES=${FSDD_TAKES:-10}
DEVICE=${DEVICE:-cpu}
SETS=${SETS:-sonic-pi,fsdd}
PY=${PYTHON:-$HERE/../.venv/bin/python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$WORK"

run() {  # name, then the eval arguments
  local name=$1; shift
  echo "== $name: spectral, $ENC frozen, $ENC fine-tuned ($DEVICE)"
  nice -n 19 "$PY" -m simsearch eval "$@" --encoders "spectral,$ENC" --finetune "$ENC" --device "$DEVICE" \
      --out "$WORK/$name-$ENC" -q
  sed -n '/^## Decision/,/^## Per-class/p' "$WORK/$name-$ENC/report.md" | grep '^- '
}

if [[ ",$SETS," == *",sonic-pi,"* ]]; then
  run sonic-pi "$DATA/sonic-pi" --label-regex '^([a-z]+)_' --folds 5
fi
if [[ ",$SETS," == *",fsdd,"* ]]; then
  manifest="$WORK/fsdd-takes$TAKES.csv"
  { echo path; find "$DATA/fsdd/recordings" -name '*.wav' | sort |
      awk -F/ -v t="$TAKES" '{ split($NF, p, /[_.]/); if (p[3] + 0 < t) print }'; } > "$manifest"
  run "fsdd$TAKES" "$manifest" --label-regex '^(\d)_' --fold-regex '_(\d+)\.wav$' --folds 5
fi
