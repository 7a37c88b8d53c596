"""Query-by-example latency of several indexes side by side, in one process, alternating query by query.

    .venv/bin/python scripts/bench_query.py --index DIR_A --index DIR_B [-n 40] [-k 10]

Each index answers the same n audio queries (a seeded sample of the first index's files) through `Index.search`,
end to end in-process: decode, embed (every part of the index's encoder), vector search, landmarks, results. One
warm-up query per index first; then for each query the indexes take turns, so load on the machine falls on all of
them alike. Prints a Markdown table: p50 / p95 in ms and the p50 ratio to the first index, plus each index's size.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simsearch import Index  # noqa: E402


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", action="append", required=True, help="an index folder (give two or more)")
    ap.add_argument("-n", type=int, default=40, help="queries")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    indexes = [Index.open(p, device="cpu") for p in args.index]
    paths = sorted(set(indexes[0].core_rows["path"]))
    queries = random.Random(args.seed).sample(paths, min(args.n, len(paths)))
    for index in indexes:
        index.search(audio=queries[0], k=args.k)  # loads the encoder and the tables
    times: list[list[float]] = [[] for _ in indexes]
    for q in queries:
        for i, index in enumerate(indexes):
            start = time.perf_counter()
            index.search(audio=q, k=args.k)
            times[i].append((time.perf_counter() - start) * 1000)
    base = statistics.median(times[0])
    print(f"{len(queries)} queries each, k={args.k}, alternating\n")
    print("| index | encoder | size | p50 ms | p95 ms | p50 / first |")
    print("|---|---|---:|---:|---:|---:|")
    for path, index, t in zip(args.index, indexes, times):
        p95 = statistics.quantiles(t, n=20)[-1] if len(t) > 1 else t[0]
        print(f"| {path} | {index.info['encoder']['name']} | {folder_bytes(Path(path)) / 1e6:.1f} MB | "
              f"{statistics.median(t):.1f} | {p95:.1f} | {statistics.median(t) / base:.2f} |")


if __name__ == "__main__":
    main()
