"""Landmark postings on a real index: how skewed the hashes are, how many postings a query reads, and the fused
search latency (embedding excluded) with changed copies of the index's own clean originals as queries.

    .venv/bin/python scripts/make_perturbed_set.py /tmp/real_set ../shared/data/fsdd/recordings \\
        ../shared/data/sonic-pi /tmp/music_data
    simsearch index /tmp/real_set --out /tmp/real_idx --transcribe off -q
    .venv/bin/python scripts/bench_landmarks_real.py /tmp/real_idx --queries 60

A query is a copy of a clean original under a change the set does not hold (white10, pink20, pitch+2, tempo+10,
speed-5, delay0.5, in turn); "first hit same source" counts a hit on the original or on any of its stored copies.
"""
from __future__ import annotations

import argparse
import random
import time

import numpy as np

from simsearch.audio import fingerprint, landmark_kinds
from simsearch.audio.decode import decode
from simsearch.audio.perturb import perturb
from simsearch.search.index import Index
from simsearch.search.landmarks import search_with_marks

CHANGES = ["white10", "pink20", "pitch+2", "tempo+10", "speed-5", "delay0.5"]
SR = 16000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("index")
    ap.add_argument("--queries", type=int, default=60)
    args = ap.parse_args()
    ix = Index.open(args.index, device="cpu")
    if ix.postings is None or landmark_kinds.kind_of(ix.info.get("fingerprint")) != "pairs":
        raise SystemExit("needs an index with pair landmarks in on-disk postings (simsearch rebuild makes them)")
    hashes = np.concatenate([np.asarray(s.hashes) for s in ix.postings.segments])
    uniq, counts = np.unique(hashes, return_counts=True)
    print(f"rows {len(ix)}, postings {len(hashes)} ({len(hashes) / len(ix):.0f} a row), distinct hashes {len(uniq)}")
    print("postings per hash: " + ", ".join(f"p{q} {np.percentile(counts, q):.0f}" for q in (50, 90, 99, 99.9, 100)))
    clean = sorted(p for p in ix.core_rows["path"].unique() if "/clean/" in p)
    random.Random(0).shuffle(clean)
    read, touched, latency, first = [], [], [], []
    for i, path in enumerate(clean[: args.queries]):
        y = perturb(CHANGES[i % len(CHANGES)], decode(path, SR), SR, seed=i)
        vector = ix.embed_query({"array": y, "sampling_rate": SR})
        marks = fingerprint.query_landmarks(y, SR)
        _, ids, _ = ix.postings.lookup(marks[0])
        read.append(len(ids))
        touched.append(len(np.unique(ids)))
        t = time.perf_counter()
        hits = search_with_marks(ix, vector, marks, 10, None, False)
        latency.append(time.perf_counter() - t)
        first.append(path.split("/clean/")[1].rsplit(".", 1)[0] in hits[0]["path"])
    print(f"postings read per query: median {np.median(read):.0f}, p95 {np.percentile(read, 95):.0f}; "
          f"rows touched median {np.median(touched):.0f}")
    print(f"fused search, embedding excluded: p50 {1000 * np.median(latency):.1f} ms, "
          f"p95 {1000 * np.percentile(latency, 95):.1f} ms; first hit same source {np.mean(first):.3f}")


if __name__ == "__main__":
    main()
