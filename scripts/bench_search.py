"""Recall@10 and queries/s of flat, HNSW and IVF-PQ on clustered random vectors, built with simsearch's own code.

    .venv/bin/python scripts/bench_search.py --n 1000000 --dims 512,1024 --hnsw-n 100000
    .venv/bin/python scripts/bench_search.py --from-index indexes/real --queries 500   # an index's real embeddings

With --from-index the collection is the stored rows of one or more index folders (same encoder); a seeded sample of
--queries rows is held out of it as the queries, so they are new to the index as a user's clips are.

Vectors: Gaussian clusters around random unit centres, each spread in its own low-rank subspace plus a little
isotropic noise, L2-normalised (so the neighbourhoods look like embeddings', not like uniform noise). Queries
are fresh draws from the same clusters. Exact search (the brute-force kernel IndexFlatIP runs) is the ground
truth and the speed baseline; every index is built by simsearch.store.faiss_ops with the parameters planner.choose
picks, its knobs tuned by planner.tune, and then measured at a few other settings too. Memory is the size of the
serialised index. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from simsearch.store import faiss_ops, planner


def clustered(n: int, dim: int, groups: int = 100, clusters: int = 10_000, rank: int = 24, spread: float = 0.35,
              noise: float = 0.15, seed: int = 0) -> np.ndarray:
    """n unit vectors: `clusters` Gaussian clusters whose centres gather around `groups` broader ones (two levels,
    as sound classes and their variants do), each cluster spread in its own rank-`rank` subspace plus noise."""
    rng = np.random.default_rng(seed)
    tops = rng.standard_normal((groups, dim), dtype=np.float32)
    tops /= np.linalg.norm(tops, axis=1, keepdims=True)
    jitter = rng.standard_normal((clusters, dim), dtype=np.float32) / np.sqrt(dim)
    centres = tops[rng.integers(0, groups, clusters)] + 0.6 * jitter
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    which = rng.integers(0, clusters, n)
    order = np.argsort(which, kind="stable")
    bounds = np.searchsorted(which[order], np.arange(clusters + 1))
    out = np.empty((n, dim), np.float32)
    for c in range(clusters):
        rows = order[bounds[c]:bounds[c + 1]]
        if not len(rows):
            continue
        basis = rng.standard_normal((rank, dim), dtype=np.float32) / np.sqrt(dim)
        z = rng.standard_normal((len(rows), rank), dtype=np.float32) * (spread / np.sqrt(rank))
        eps = rng.standard_normal((len(rows), dim), dtype=np.float32) * (noise / np.sqrt(dim))
        out[rows] = centres[c] + z @ basis + eps
    faiss.normalize_L2(out)
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def bench_dim(n: int, dim: int, nq: int, hnsw_n: int, seed: int) -> list[dict]:
    (x, t_gen) = timed(lambda: clustered(n + nq, dim, seed=seed))
    print(f"# d={dim}: generated {n} + {nq} vectors in {t_gen:.0f} s", flush=True)
    return bench_vectors(x[:n], x[n:].copy(), hnsw_n, seed)


def index_vectors(roots: list[str], nq: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(collection, held-out queries) from the stored embeddings of index folders."""
    from simsearch.search.index import Index

    x = np.concatenate([Index.open(r, device="cpu").embeddings() for r in roots])
    held = np.zeros(len(x), bool)
    held[np.random.default_rng(seed).choice(len(x), nq, replace=False)] = True
    return np.ascontiguousarray(x[~held]), np.ascontiguousarray(x[held])


def bench_vectors(x: np.ndarray, q: np.ndarray, hnsw_n: int, seed: int) -> list[dict]:
    """The table's rows for collection x and queries q (every index type simsearch builds, against exact search)."""
    rows = []
    n, dim, nq = len(x), x.shape[1], len(q)
    ids = np.arange(n, dtype=np.int64)
    (D, gt), t_flat = timed(lambda: faiss.knn(q, x, 10, metric=faiss.METRIC_INNER_PRODUCT))
    flat_qps = nq / t_flat
    rows.append({"d": dim, "n": n, "index": "flat (exact)", "setting": "-", "recall": 1.0, "qps": flat_qps,
                 "speedup": 1.0, "memory": n * dim * 4, "build": 0.0})

    spec = planner.choose(n, dim, "ivfpq")
    p = spec["params"]
    train = x[planner.train_sample(n, p)]
    ix, t_build = timed(lambda: faiss_ops.build(x, ids, "ivfpq", p, train=train))
    knobs, tuned = planner.tune(ix, "ivfpq", p, planner.Rows(x, ids))
    mem = faiss_ops.memory_bytes(ix)
    print(f"# d={dim}: IVF-PQ {p} built in {t_build:.0f} s; tuned {knobs} (calibration recall@10 {tuned})", flush=True)
    settings = [("tuned " + _fmt(knobs), knobs)] + [(_fmt(k), k) for k in (
        {"nprobe": 4, "k_factor": 2}, {"nprobe": 8, "k_factor": 4}, {"nprobe": 16, "k_factor": 4},
        {"nprobe": 16, "k_factor": 8}, {"nprobe": 32, "k_factor": 8}) if k != knobs]
    name = f"IVF{p['nlist']},PQ{p['m']}+SQ8 re-rank"
    for label, k in settings:
        (_, I), t = timed(lambda: faiss_ops.search(ix, "ivfpq", q, 10, k))
        rows.append({"d": dim, "n": n, "index": name, "setting": label, "recall": recall(I, gt), "qps": nq / t,
                     "speedup": (nq / t) / flat_qps, "memory": mem, "build": t_build})
    # The same trained IVF-PQ without the SQ8 re-ranking stage: the codes alone (m + 8 bytes a vector).
    refine = faiss.downcast_index(ix.index)
    base = faiss.downcast_index(refine.base_index)
    id_map = faiss.vector_to_array(ix.id_map)
    for nprobe in (8, 32):
        (_, L), t = timed(lambda: base.search(q, 10, params=faiss.SearchParametersIVF(nprobe=nprobe)))
        rows.append({"d": dim, "n": n, "index": f"IVF{p['nlist']},PQ{p['m']} (codes only)", "setting": f"nprobe={nprobe}",
                     "recall": recall(id_map[L], gt), "qps": nq / t, "speedup": (nq / t) / flat_qps,
                     "memory": planner.memory_estimate("ivfpq", {**p, "refine": "none"}, n, dim), "build": t_build})
    ix = refine = base = train = None  # free the IVF-PQ before HNSW

    if hnsw_n:
        sub = np.sort(np.random.default_rng(seed).choice(n, min(hnsw_n, n), replace=False))
        xs = np.ascontiguousarray(x[sub])
        (_, gts), t_fs = timed(lambda: faiss.knn(q, xs, 10, metric=faiss.METRIC_INNER_PRODUCT))
        flat_sub_qps = nq / t_fs
        rows.append({"d": dim, "n": len(sub), "index": "flat (exact)", "setting": "-", "recall": 1.0,
                     "qps": flat_sub_qps, "speedup": 1.0, "memory": len(sub) * dim * 4, "build": 0.0})
        hp = planner.default_params("hnsw", len(sub), dim)
        hx, t_build = timed(lambda: faiss_ops.build(xs, ids[:len(sub)], "hnsw", hp))
        knobs, tuned = planner.tune(hx, "hnsw", hp, planner.Rows(xs, ids[:len(sub)]))
        mem = faiss_ops.memory_bytes(hx)
        print(f"# d={dim}: HNSW {hp} on {len(sub)} rows built in {t_build:.0f} s; tuned {knobs}", flush=True)
        for label, k in [("tuned " + _fmt(knobs), knobs)] + [(_fmt({"efSearch": e}), {"efSearch": e})
                                                            for e in (16, 32, 64, 128) if e != knobs.get("efSearch")]:
            (_, I), t = timed(lambda: faiss_ops.search(hx, "hnsw", q, 10, k))
            rows.append({"d": dim, "n": len(sub), "index": f"HNSW{hp['M']}", "setting": label,
                         "recall": recall(I, gts), "qps": nq / t, "speedup": (nq / t) / flat_sub_qps,
                         "memory": mem, "build": t_build})
        del hx, xs
    return rows


def _fmt(knobs: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in knobs.items())


def table(rows: list[dict]) -> str:
    head = "| d | vectors | index | search setting | recall@10 | queries/s | × flat | memory (MiB) | build (s) |"
    out = [head, "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['d']} | {r['n']:,} | {r['index']} | {r['setting']} | {r['recall']:.3f} | {r['qps']:,.0f} | "
                   f"{r['speedup']:.1f} | {r['memory'] / 2**20:,.0f} | {r['build']:.0f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="vectors in the collection")
    ap.add_argument("--dims", default="512,1024")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--hnsw-n", type=int, default=100_000, help="HNSW is built on this many of the vectors (0: skip)")
    ap.add_argument("--hnsw-dims", default="512", help="dimensions at which to build HNSW")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--from-index", help="comma-separated index folders: benchmark their stored embeddings instead")
    args = ap.parse_args()
    t0 = time.perf_counter()
    print(f"# {faiss.omp_get_max_threads()} threads, faiss {faiss.__version__}", flush=True)
    rows = []
    hnsw_dims = {int(d) for d in args.hnsw_dims.split(",") if d}
    if args.from_index:
        x, q = index_vectors(args.from_index.split(","), args.queries, args.seed)
        print(f"# {len(x)} stored rows of {args.from_index} ({x.shape[1]}-d), {len(q)} held out as queries", flush=True)
        rows += bench_vectors(x, q, args.hnsw_n, args.seed)
    for dim in (int(d) for d in args.dims.split(",")) if not args.from_index else ():
        rows += bench_dim(args.n, dim, args.queries, args.hnsw_n if dim in hnsw_dims else 0, args.seed)
    print(table(rows))
    print(f"# total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
