"""Spoken words on FSDD: text search for "zero" ... "nine" and zero-shot digits over copies whose names say nothing.

    .venv/bin/python scripts/spoken_table.py --n 1000 --cost-n 300

Copies N recordings (balanced over the digits) as clips/clip_NNNNN.wav under --work (the digit lives only in a
truth file beside, outside the indexed folder), indexes them with the offline default and --transcribe auto, then
prints: P@10 per digit query from spoken words alone and fused with the other fields; zero-shot accuracy over the ten
digit words; fused text query latency; and the indexing cost of transcription (the same --cost-n clips indexed with
--transcribe off and auto, side by side).
"""
from __future__ import annotations

import argparse
import csv
import random
import shutil
import statistics
import time
from pathlib import Path

from simsearch import Index
from simsearch.classify.label import classify
from simsearch.indexing.job import run_index
from simsearch.indexing.options import IndexOptions

DIGITS = "zero one two three four five six seven eight nine".split()


def neutral_copies(src: Path, work: Path, n: int, seed: int = 0) -> dict[str, int]:
    """n recordings, n/10 per digit, copied as clips/clip_NNNNN.wav in random order; returns {copy name: digit}."""
    by_digit: dict[int, list[Path]] = {}
    for f in sorted(src.glob("*.wav")):
        by_digit.setdefault(int(f.name.split("_")[0]), []).append(f)
    rng = random.Random(seed)
    chosen = [(d, f) for d, fs in sorted(by_digit.items()) for f in rng.sample(fs, min(len(fs), n // 10))]
    rng.shuffle(chosen)
    clips = work / "clips"
    shutil.rmtree(clips, ignore_errors=True)
    clips.mkdir(parents=True)
    truth = {}
    for i, (d, f) in enumerate(chosen):
        name = f"clip_{i:05d}.wav"
        shutil.copyfile(f, clips / name)
        truth[name] = d
    with open(work / "truth.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(sorted(truth.items()))
    return truth


def index_seconds(src: Path, out: Path, transcribe: str) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    run_index(src, out, IndexOptions(transcribe=transcribe, progress=False))
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fsdd", default="../shared/data/fsdd/recordings")
    ap.add_argument("--work", default="/tmp/fsdd_spoken")
    ap.add_argument("--n", type=int, default=1000, help="recordings in the table's index")
    ap.add_argument("--zeroshot-n", type=int, default=200, help="clips labelled zero-shot")
    ap.add_argument("--cost-n", type=int, default=300, help="recordings for the transcription cost (0: skip)")
    args = ap.parse_args()
    work = Path(args.work)
    if args.cost_n:
        cost = work / "cost"
        neutral_copies(Path(args.fsdd), cost, args.cost_n, seed=1)
        off = index_seconds(cost / "clips", cost / "ix_off", "off")
        auto = index_seconds(cost / "clips", cost / "ix_auto", "auto")
        print(f"indexing {args.cost_n} clips: transcribe off {args.cost_n / off:.1f} clips/s ({off:.1f} s), "
              f"auto {args.cost_n / auto:.1f} clips/s ({auto:.1f} s), ratio {auto / off:.2f}\n")
    truth = neutral_copies(Path(args.fsdd), work, args.n)
    secs = index_seconds(work / "clips", work / "ix", "auto")
    print(f"index: {len(truth)} clips, {secs:.0f} s with --transcribe auto\n")
    index = Index.open(work / "ix")
    print("| query | P@10 spoken | P@10 fused (all fields) |")
    print("|---|---:|---:|")
    totals = {"spoken": [], "all": []}
    latency = []
    for d, word in enumerate(DIGITS):
        row = []
        for fields in ("spoken", None):
            t = time.perf_counter()
            hits = index.search(text=word, k=10, fields=fields)
            if fields is None:
                latency.append(time.perf_counter() - t)
            p = sum(truth[Path(h["path"]).name] == d for h in hits) / 10
            totals["spoken" if fields else "all"].append(p)
            row.append(p)
        print(f"| {word} | {row[0]:.1f} | {row[1]:.1f} |")
    print(f"| **mean** | **{statistics.mean(totals['spoken']):.2f}** | **{statistics.mean(totals['all']):.2f}** |\n")
    for _ in range(3):  # warm, then timed
        for word in DIGITS:
            t = time.perf_counter()
            index.search(text=word, k=10)
            latency.append(time.perf_counter() - t)
    latency.sort()
    print(f"fused text query: p50 {1000 * latency[len(latency) // 2]:.1f} ms, "
          f"p95 {1000 * latency[int(0.95 * (len(latency) - 1))]:.1f} ms over {len(latency)} queries\n")
    names = sorted(truth)[: args.zeroshot_n]
    t = time.perf_counter()
    right = 0
    for name in names:
        best = classify(index, str(work / "clips" / name), method="zeroshot", labels=DIGITS)[0]["label"]
        right += best == DIGITS[truth[name]]
    print(f"zero-shot over the ten digit words: {right}/{len(names)} = {right / len(names):.3f} "
          f"({1000 * (time.perf_counter() - t) / len(names):.0f} ms a clip)")


if __name__ == "__main__":
    main()
