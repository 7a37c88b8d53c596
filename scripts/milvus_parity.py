"""Export an index to Milvus and compare its answers with the FAISS index's: vectors, filters, noisy copies by landmarks.

    .venv/bin/python scripts/milvus_parity.py --index /tmp/fsdd_yamnet [--db /tmp/parity.db] [-n 100] [--filter label=3]

Exports the index (dropping an old collection of the same name) into a milvus-lite file with a FLAT (exact) vector
index, then for n rows: top-10 by vector through Index (exact FAISS on flat indexes) and MilvusIndex, with and
without the filter; and for n clips, a noisy late copy (white noise at --snr dB, first 0.3 s or fifth cut) searched by
audio both ways (cosine + landmark bonus). Prints export rate, agreement and query latency as Markdown.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simsearch.audio.decode import decode  # noqa: E402
from simsearch.search.filters import parse_cli  # noqa: E402
from simsearch.search.index import Index  # noqa: E402
from simsearch.search.milvus_index import MilvusIndex  # noqa: E402
from simsearch.store.folder import IndexDir  # noqa: E402
from simsearch.store.milvus_store import MilvusStore, collection_name  # noqa: E402


def noisy_copy(path: str, sr: int, rng: np.random.Generator, snr_db: float) -> dict:
    x = decode(path, sr)
    x = x[min(int(0.3 * sr), len(x) // 5):]  # a late start (short clips lose a fifth)
    n = rng.standard_normal(len(x)).astype(np.float32) * np.sqrt(np.mean(x**2) / 10 ** (snr_db / 10))
    return {"array": x + n, "sampling_rate": sr}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", required=True, type=Path)
    p.add_argument("--db", default="/tmp/milvus_parity.db")
    p.add_argument("-n", type=int, default=100)
    p.add_argument("--filter", action="append", help="KEY=VALUE for the filtered comparison")
    p.add_argument("--snr", type=float, default=20.0, help="white noise level of the copies, dB under the clip")
    args = p.parse_args()

    store = MilvusStore(args.db, collection_name(str(args.index)))
    store.drop()
    t = time.perf_counter()
    summary = store.export(IndexDir(args.index), "FLAT")
    export_s = time.perf_counter() - t
    ix, mv = Index.open(args.index), MilvusIndex.open(args.index, args.db)
    rows = ix.rows.sample(min(args.n, len(ix)), random_state=0)
    vecs = ix.embeddings()[ix.rows.index.get_indexer(rows.index)]
    spec = parse_cli(args.filter) or {"label": [str(rows["label"].dropna().iloc[0])]}
    same = {"plain": 0, "filtered": 0}
    times: dict[str, list[float]] = {"faiss": [], "milvus": []}
    for q in vecs:
        for name, f in (("plain", None), ("filtered", spec)):
            t = time.perf_counter()
            a = [r["id"] for r in ix.search_vector(q, 10, f)]
            times["faiss"].append(time.perf_counter() - t)
            t = time.perf_counter()
            b = [r["id"] for r in mv.search_vector(q, 10, f)]
            times["milvus"].append(time.perf_counter() - t)
            same[name] += a == b
    print(f"index {args.index}: {len(ix)} rows, {ix.info['dim']}-d, landmarks {'yes' if 'fingerprint' in ix.info else 'no'}")
    print(f"\nexport: {summary['added']} rows in {export_s:.1f} s = {summary['added'] / export_s:.0f} rows/s\n")
    print("| comparison | queries | same top-10 (ids, in order) | FAISS p50 ms | Milvus p50 ms |\n|---|---:|---:|---:|---:|")
    fm, mm = np.median(times["faiss"]) * 1000, np.median(times["milvus"]) * 1000
    print(f"| vector | {len(vecs)} | {same['plain']} | {fm:.1f} | {mm:.1f} |")
    print(f"| vector, filter {spec} | {len(vecs)} | {same['filtered']} | | |")
    if "fingerprint" in ix.info:
        rng = np.random.default_rng(0)
        hits = {"faiss": 0, "milvus": 0, "same": 0}
        lat: dict[str, list[float]] = {"faiss": [], "milvus": []}
        paths = rows["path"].drop_duplicates().tolist()
        for path in paths:
            q = noisy_copy(path, ix.encoder.sample_rate, rng, args.snr)
            out = {}
            for name, index in (("faiss", ix), ("milvus", mv)):
                t = time.perf_counter()
                out[name] = index.search(audio=q, k=10)
                lat[name].append(time.perf_counter() - t)
                hits[name] += out[name][0]["path"] == path
            hits["same"] += [r["id"] for r in out["faiss"]] == [r["id"] for r in out["milvus"]]
        print(f"| noisy copy ({args.snr:g} dB SNR, late start) by audio, rank-1 FAISS {hits['faiss']}/{len(paths)}, "
              f"Milvus {hits['milvus']}/{len(paths)} | {len(paths)} | {hits['same']} | "
              f"{np.median(lat['faiss']) * 1000:.0f} | {np.median(lat['milvus']) * 1000:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
