#!/usr/bin/env bash
# Install, then build a demo index of real sounds with the offline default (YAMNet + Whisper tiny.en) and query it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
SRC=${1:-}
if [ -z "$SRC" ]; then
  for cand in ../shared/data/sonic-pi /usr/share/sonic-pi/samples; do
    [ -d "$cand" ] && SRC=$cand && break
  done
fi
if [ -z "$SRC" ]; then
  echo "No demo audio found. Pass a folder of audio: bash scripts/demo.sh /path/to/sounds"
  echo "(Debian/Ubuntu: 'apt-get install sonic-pi-samples' puts real samples in /usr/share/sonic-pi/samples)"
  exit 1
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
S=.venv/bin/simsearch
if [ -f indexes/demo/index.json ] && ! .venv/bin/python -c "import json, sys; from simsearch.encoders import DEFAULT_ENCODER; \
    info = json.load(open('indexes/demo/index.json')); \
    sys.exit(info['encoder']['name'] != DEFAULT_ENCODER or 'fingerprint' not in info)"; then
  echo "indexes/demo was built with an older default (encoder or no landmark fingerprints); rebuilding it"
  rm -rf indexes/demo
fi
$S index "$SRC" --out indexes/demo --label-regex '^([a-z]+)_'
$S info indexes/demo
QUERY=$(find "$SRC" -type f \( -name '*.flac' -o -name '*.wav' \) | sort | head -n 40 | tail -n 1)
echo; echo "== sounds like $QUERY"
$S search indexes/demo --audio "$QUERY" -k 5
echo; echo "== text: \"drum\""
$S search indexes/demo --text "drum" -k 5
