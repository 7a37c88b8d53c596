#!/usr/bin/env bash
# The music table: kNN / probe / leave-one-out P@1 of encoders and fusions on the rendered music sets, FSDD and
# Sonic Pi (2-core CPU: about 20 minutes the first time, a minute once the embeddings are cached).
#
#   scripts/make_music_data.sh /tmp/music_data       # once: renders notes/, chords/, drums/
#   scripts/music_table.sh [DATA] [WORK]             # DATA=/tmp/music_data WORK=/tmp/music_eval
#
# Sets, labels and folds (5 folds, from file names; see scripts/music_eval.py):
#   notes   15 instruments, folds by MIDI pitch (test pitches never in training)
#   chords  24 classes (12 roots x major/minor), folds by instrument (test instrument never in training)
#   drums   9 drum types, folds by kit (a kit's velocity layers never on both sides)
#   fsdd    600 FSDD files (takes 0-9), folds by take; sonicpi: 165 Sonic Pi samples, stratified 5-fold
#
# Once basic-pitch and onset-envelope are in simsearch.encoders.SPECS the same numbers come from `simsearch eval`:
#   simsearch eval DATA/drums --label-regex '^([a-z_]+)-' --fold-regex '^[a-z_]+-([a-z0-9]+)-' \
#       --encoders yamnet+whisper-tiny-offline,aisfx+spectral+onset-envelope
#   simsearch eval DATA/notes --label-regex '^([a-z]+)-' --fold-regex '-p(\d+)-' \
#       --encoders yamnet+whisper-tiny-offline,yamnet+whisper-tiny-offline+basic-pitch
#   simsearch eval DATA/chords --label-regex '^([A-G]s?(?:maj|min))-' --fold-regex '^[A-Za-z]+-([a-z]+)-' \
#       --encoders yamnet+whisper-tiny-offline,yamnet+whisper-tiny-offline+basic-pitch
set -euo pipefail
DATA=${1:-/tmp/music_data}
WORK=${2:-/tmp/music_eval}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-$HERE/../.venv/bin/python}
ENCODERS="spectral,aisfx,yamnet+whisper-tiny-offline,basic-pitch,onset-envelope"
ENCODERS+=",yamnet+whisper-tiny-offline+basic-pitch,yamnet+whisper-tiny-offline+basic-pitch*2"
ENCODERS+=",yamnet+aisfx+basic-pitch,aisfx+spectral+basic-pitch,aisfx+spectral+onset-envelope"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$PY" "$HERE/music_eval.py" --data "$DATA" --work "$WORK" --sets notes,chords,drums,fsdd,sonicpi \
    --encoders "$ENCODERS" --json "$WORK/table.jsonl"
