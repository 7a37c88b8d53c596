"""Search at scale on synthetic rows shaped like real ones: disk size, a search process's peak memory, latency
(embedding excluded), recall@10 against exact search, and noisy copies found through the on-disk landmark postings.

Rows are 10-s windows (six per file) with 1408-d vectors drawn from clusters in low-rank subspaces and ~100 pair
landmarks per second, written shard by shard (never all rows in memory), then committed with `rebuild`, which
trains the FAISS index the planner picks and writes the postings. The search half runs in a fresh process so its
peak memory is what a search server would hold.

    python scripts/bench_scale.py --rows 100000 --out /tmp/bench100k --index-type ivfpq
    python scripts/bench_scale.py --out /tmp/bench100k --phase search      # search an existing bench index again
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ENC = {"name": "bench-synthetic", "checkpoint": None, "sample_rate": 16000, "dim": 1408, "pooling": "mean",
       "options": {}}
CLUSTERS = 2000
RANK = 24
WINDOWS_PER_FILE = 6
FRAMES = 625  # 10 s of 16-ms landmark frames


class Rows:
    """Deterministic synthetic rows: row i's vector and landmarks depend only on (seed, i)."""

    def __init__(self, dim: int, landmarks: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.dim, self.landmarks, self.seed = dim, landmarks, seed
        self.centres = rng.standard_normal((CLUSTERS, dim)).astype(np.float32) / np.sqrt(dim)
        self.bases = (rng.standard_normal((CLUSTERS, RANK, dim)) / np.sqrt(dim)).astype(np.float32)

    def vectors(self, start: int, n: int, seed_offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, start, seed_offset])
        c = rng.integers(0, CLUSTERS, n)
        z = rng.standard_normal((n, RANK)).astype(np.float32)
        x = self.centres[c] + 0.6 * np.einsum("nr,nrd->nd", z, self.bases[c])
        x += (0.15 / np.sqrt(self.dim)) * rng.standard_normal((n, self.dim)).astype(np.float32)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), c

    def marks(self, start: int, n: int) -> np.ndarray:
        """Packed int32 (hash, frame) pairs [n, landmarks, 2], hashes shaped like fingerprint's pairs."""
        rng = np.random.default_rng([self.seed, start, 1])
        m = self.landmarks
        f1 = np.minimum(rng.exponential(90.0, (n, m)).astype(np.int64) + 3, 500)
        df = rng.integers(-40, 41, (n, m))
        dt = rng.integers(1, 49, (n, m))
        h = (f1 << 16) | ((df + 64) << 8) | dt
        t = np.sort(rng.integers(0, FRAMES, (n, m)), axis=1)
        return np.stack([h.astype(np.uint32).view(np.int32), t.astype(np.int32)], axis=2)


def build(args) -> None:
    from simsearch.audio import landmark_kinds
    from simsearch.indexing.job import rebuild
    from simsearch.store.folder import IndexDir, shard_schema

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    d = IndexDir(out)
    gen = Rows(args.dim, int(args.seconds * args.per_s))
    d.shard_settings = {"index_id": "bench", "encoder": {**ENC, "dim": args.dim}, "window_s": args.seconds,
                        "hop_s": args.seconds, "label_regex": None, "fingerprint": landmark_kinds.describe("pairs")}
    schema = shard_schema(args.dim, {}, landmarks=True)
    t0 = time.perf_counter()
    with d.lock():
        for start in range(0, args.rows, args.shard_rows):
            n = min(args.shard_rows, args.rows - start)
            x, c = gen.vectors(start, n)
            marks = gen.marks(start, n)
            i = np.arange(start, start + n)
            files = i // WINDOWS_PER_FILE
            lm = pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer((np.arange(n + 1) * marks.shape[1] * 8)
                                                                           .astype(np.int32)), pa.py_buffer(marks)])
            cols = {"id": pa.array(i, pa.int64()),
                    "path": pa.array([f"/bench/c{k % 50}/f{k:09d}.wav" for k in files]),
                    "sha256": pa.array([f"{k:064x}" for k in files]),
                    "offset_s": pa.array((i % WINDOWS_PER_FILE) * args.seconds, pa.float64()),
                    "duration_s": pa.array(np.full(n, args.seconds), pa.float64()),
                    "sample_rate": pa.array(np.full(n, 16000), pa.int32()),
                    "label": pa.array([f"c{k % 50}" for k in files]),
                    "metadata": pa.array(["{}"] * n),
                    "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), args.dim),
                    "landmarks": lm}
            d.write_shard(pa.table(cols, schema=schema))
            print(f"  wrote rows {start + n}/{args.rows} ({time.perf_counter() - t0:.0f} s)", flush=True)
        t_write = time.perf_counter() - t0
        rebuild(d, enc_record={**ENC, "dim": args.dim}, index_type=args.index_type, max_memory=args.max_memory)
    t_commit = time.perf_counter() - t0 - t_write
    queries(args, gen)
    info = json.loads((out / "index.json").read_text())
    (out / "bench_build.json").write_text(json.dumps({"write_s": round(t_write, 1), "commit_s": round(t_commit, 1),
                                                      "faiss": {k: info["faiss"].get(k) for k in (
                                                          "type", "params", "search", "calibrated_recall_at_10",
                                                          "memory_bytes")},
                                                      "postings": info["postings"]["postings"],
                                                      "segments": len(info["postings"]["segments"])}))


def queries(args, gen: Rows) -> None:
    """Query vectors with their exact top 10 (streamed over the shards), and noisy copies of stored rows."""
    from simsearch.store.folder import IndexDir

    d = IndexDir(args.out)
    q, _ = gen.vectors(10**12, args.recall_queries, seed_offset=7)  # fresh draws from the same clusters
    best_s = np.full((len(q), 10), -np.inf, np.float32)
    best_i = np.zeros((len(q), 10), np.int64)
    for p in d.shard_paths():
        t = d.read_shard(p, ["id", "embedding"])
        x = np.asarray(t.column("embedding").combine_chunks().flatten(), np.float32).reshape(t.num_rows, -1)
        s = np.concatenate([best_s, q @ x.T], axis=1)
        ids = np.concatenate([best_i, np.broadcast_to(t.column("id").to_numpy(), (len(q), t.num_rows))], axis=1)
        top = np.argsort(-s, axis=1)[:, :10]
        best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(ids, top, 1)
    rng = np.random.default_rng(5)
    rows = np.sort(rng.choice(args.rows, args.copy_queries, replace=False))
    copies_v, copies_h, copies_t = [], [], []
    cached: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for r in rows:
        start = (r // args.shard_rows) * args.shard_rows
        if start not in cached:  # the shard's rows, made again (rows are sorted: one shard at a time)
            n = min(args.shard_rows, args.rows - start)
            cached = {start: (gen.vectors(start, n)[0], gen.marks(start, n))}
        x, marks = cached[start]
        v = x[r - start] + 0.5 * rng.standard_normal(x.shape[1]).astype(np.float32) / np.sqrt(x.shape[1])
        m = marks[r - start]
        keep = m[rng.random(len(m)) < 0.3]  # noise drowns 70 % of the peaks ...
        junk = gen.marks(10**12 + int(r), 1)[0][: len(m) // 2]  # ... and adds landmarks of its own
        both = np.concatenate([keep, junk])
        both[:, 1] -= 37  # the copy starts 0.6 s later
        copies_v.append(v)
        copies_h.append(both[:, 0].view(np.uint32))
        copies_t.append(both[:, 1])
    np.savez(Path(args.out) / "bench_queries.npz", q=q, truth=best_i, rows=rows, copies_v=np.stack(copies_v),
             copies_n=np.array([len(h) for h in copies_h]), copies_h=np.concatenate(copies_h),
             copies_t=np.concatenate(copies_t))


def memory() -> dict:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) * 1024
    return out


def search(args) -> dict:
    """In a fresh process: open the index, run the queries, report latency, recall, copies found and memory."""
    from simsearch.search import landmarks
    from simsearch.search.index import Index
    from simsearch.search.landmarks import search_with_marks

    if args.postings_budget is not None:
        landmarks.POSTINGS_BUDGET = args.postings_budget or None
    z = np.load(Path(args.out) / "bench_queries.npz")
    before = memory()
    t0 = time.perf_counter()
    ix = Index.open(args.out)
    if args.in_memory:  # as an index without postings: every landmark in a table in memory
        ix.postings = None
    _ = ix.landmark_table
    t_open = time.perf_counter() - t0
    opened = memory()
    lat_v, found = [], []
    for _ in range(2):  # the first pass warms the page cache, the second is measured
        lat_v, found = [], []
        for q, truth in zip(z["q"], z["truth"]):
            t = time.perf_counter()
            hits = ix.search_vector(q, 10)
            lat_v.append(time.perf_counter() - t)
            found.append(len({h["id"] for h in hits} & set(truth.tolist())) / 10)
    ends = np.r_[0, np.cumsum(z["copies_n"])]
    lat_f, first, margin = [], [], []
    for _ in range(2):  # warm, then measured
        lat_f, first, margin = [], [], []
        for j, row in enumerate(z["rows"]):
            marks = (z["copies_h"][ends[j]:ends[j + 1]], z["copies_t"][ends[j]:ends[j + 1]])
            t = time.perf_counter()
            hits = search_with_marks(ix, z["copies_v"][j], marks, 10, None, False)
            lat_f.append(time.perf_counter() - t)
            first.append(hits[0]["id"] == row)
            margin.append((hits[0]["match"], hits[1]["match"] if len(hits) > 1 else 0.0))
    ms = lambda v, p: round(1000 * float(np.percentile(v, p)), 2)  # noqa: E731
    return {"rows": len(ix), "open_s": round(t_open, 2), "memory_before_open": before, "memory_after_open": opened,
            "memory_end": memory(), "vector_p50_ms": ms(lat_v, 50), "vector_p95_ms": ms(lat_v, 95),
            "recall_at_10": round(float(np.mean(found)), 4), "fused_p50_ms": ms(lat_f, 50),
            "fused_p95_ms": ms(lat_f, 95), "copies_first": f"{sum(first)}/{len(first)}",
            "copy_match_median": float(np.median([m[0] for m in margin])),
            "runner_up_match_max": float(max(m[1] for m in margin)), "faiss": ix.kind, "knobs": ix.knobs,
            "landmarks": type(ix.landmark_table).__name__, "postings_budget": landmarks.POSTINGS_BUDGET}


def disk(out: Path) -> dict:
    size = lambda ps: sum(p.stat().st_size for p in ps if p.is_file())  # noqa: E731
    return {"shards": size((out / "shards").glob("*.parquet")), "faiss": size(out.glob("faiss*.index")),
            "postings": size((out / "postings").glob("*.npy"))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--out", required=True)
    p.add_argument("--dim", type=int, default=1408)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--per-s", type=float, default=100.0, help="landmarks per second of a row")
    p.add_argument("--shard-rows", type=int, default=20_000)
    p.add_argument("--index-type", default="ivfpq")
    p.add_argument("--max-memory", default=None)
    p.add_argument("--recall-queries", type=int, default=200)
    p.add_argument("--copy-queries", type=int, default=100)
    p.add_argument("--in-memory", action="store_true", help="search with the in-memory landmark table instead")
    p.add_argument("--phase", choices=["all", "build", "search", "search-child"], default="all")
    p.add_argument("--postings-budget", type=int, default=None,
                   help="postings a fused query reads at most (default: simsearch.search.landmarks.POSTINGS_BUDGET; "
                        "0: no budget)")
    args = p.parse_args()
    if args.phase == "search-child":
        print(json.dumps(search(args)))
        return 0
    if args.phase in ("all", "build"):
        build(args)
    if args.phase in ("all", "search"):
        r = subprocess.run([sys.executable, __file__, "--out", args.out, "--phase", "search-child",
                            *(["--in-memory"] if args.in_memory else []),
                            *(["--postings-budget", str(args.postings_budget)] if args.postings_budget is not None else [])],
                           capture_output=True, text=True, check=True)
        result = json.loads(r.stdout.strip().splitlines()[-1])
        result["disk_bytes"] = disk(Path(args.out))
        built = Path(args.out) / "bench_build.json"
        result["build"] = json.loads(built.read_text()) if built.exists() else None
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
