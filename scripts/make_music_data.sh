#!/usr/bin/env bash
# Render the music development sets (never committed): instrument notes, chords and drum one-shots.
#
#   scripts/make_music_data.sh [OUT]        (default OUT=/tmp/music_data; needs root for apt-get)
#
# Installs FluidSynth with two General MIDI SoundFonts (FluidR3_GM, TimGM6mb) and unpacks lmms-common's drum
# samples without installing LMMS, then runs scripts/render_music.py. About 1,300 WAV files, ~110 MB, a minute or
# two on 2 cores. Labels and fold keys are in the file names; scripts/music_table.sh evaluates the sets.
set -euo pipefail
OUT=${1:-/tmp/music_data}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-$HERE/../.venv/bin/python}
SF_DIR=/usr/share/sounds/sf2

need=()
command -v fluidsynth >/dev/null || need+=(fluidsynth)
[ -f "$SF_DIR/FluidR3_GM.sf2" ] || need+=(fluid-soundfont-gm)
[ -f "$SF_DIR/TimGM6mb.sf2" ] || need+=(timgm6mb-soundfont)
LMMS=/tmp/lmms-common
if [ ${#need[@]} -gt 0 ] || [ ! -d "$LMMS/usr/share/lmms/samples/drums" ]; then
  apt-get update -qq
fi
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if [ ! -d "$LMMS/usr/share/lmms/samples/drums" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download lmms-common >/dev/null && dpkg-deb -x lmms-common_*.deb "$LMMS")
  rm -rf "$tmp"
fi

rm -rf "$OUT/notes" "$OUT/chords" "$OUT/drums"
"$PY" "$HERE/render_music.py" --out "$OUT" --lmms-drums "$LMMS/usr/share/lmms/samples/drums"
for s in notes chords drums; do echo "$OUT/$s: $(ls "$OUT/$s" | wc -l) files"; done
