"""Write changed copies of every clip of some folders (noise, MP3, band limit, pitch, tempo, ...): the largest real
collection this machine can make for ANN and scale tables (never committed; FLAC under OUT/CHANGE/SET/...).

    .venv/bin/python scripts/make_perturbed_set.py /tmp/real_set ../shared/data/fsdd/recordings \\
        ../shared/data/sonic-pi /tmp/music_data [--changes white20,pink10,...]

Originals are copied in as OUT/clean/SET/...; each copy is seeded by its file (simsearch.audio.perturb), so a re-run
writes the same files and skips those already there.
"""
from __future__ import annotations

import argparse
import shutil
import zlib
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from simsearch.audio.decode import AUDIO_EXTENSIONS, decode
from simsearch.audio.perturb import PERTURBATIONS, perturb
from simsearch.errors import AudioError

SR = 16000  # the default encoder's rate: copies are made and stored at it


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("sources", nargs="+", help="folders of audio (searched recursively)")
    ap.add_argument("--changes", default="white20,pink10,mp3-64k,lowpass4k,crop60,pitch+1,pitch-2,tempo+5,tempo-10,speed+5")
    args = ap.parse_args()
    changes = args.changes.split(",")
    unknown = [c for c in changes if c not in PERTURBATIONS or PERTURBATIONS[c].background]
    if unknown:
        raise SystemExit(f"unknown or mixing changes: {unknown}")
    out = Path(args.out)
    files = [(Path(src).name, f, f.relative_to(src)) for src in args.sources
             for f in sorted(Path(src).rglob("*")) if f.name.lower().endswith(AUDIO_EXTENSIONS)]
    bad = 0
    for set_name, f, rel in tqdm(files, desc="copies", unit="file"):
        targets = {c: (out / c / set_name / rel).with_suffix(".flac") for c in changes}
        clean = out / "clean" / set_name / rel
        if clean.exists() and all(t.exists() for t in targets.values()):
            continue
        try:
            x = decode(f, SR)
        except AudioError:
            bad += 1
            continue
        clean.parent.mkdir(parents=True, exist_ok=True)
        if not clean.exists():
            shutil.copyfile(f, clean)
        seed = zlib.crc32(str(rel).encode())
        for c, t in targets.items():
            if not t.exists():
                t.parent.mkdir(parents=True, exist_ok=True)
                sf.write(t, perturb(c, x, SR, seed), SR)
    print(f"{len(files)} originals x {len(changes)} changes under {out} ({bad} unreadable skipped)")


if __name__ == "__main__":
    main()
