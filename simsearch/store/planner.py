"""Pick a FAISS index type and parameters from the collection size and a memory budget, and tune its search knobs."""
from __future__ import annotations

import math
import re

import faiss
import numpy as np

from simsearch.errors import SimsearchError
from simsearch.store import faiss_ops
from simsearch.vectors import normalize

FLAT_MAX_ROWS = 100_000  # exact search stays fast enough below this
HNSW_MAX_ROWS = 1_000_000  # HNSW builds grow slow beyond this on a few cores; IVF-PQ trains on a sample
IVFPQ_MIN_ROWS = 1000  # fewer rows cannot train 256-centroid PQ codebooks well: stay exact until then
TARGET_RECALL = 0.95
TUNE_K = 10  # recall is measured at the k users ask for most (the CLI's default)
TUNE_MARGIN = 0.02  # calibration queries only stand in for new clips; keep clear of the target
ID_OVERHEAD = 48  # IDMap2's id_map (8 B) and rev_map hash entry per vector, roughly
HNSW_EF = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
IVF_NPROBE = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256)
REFINE_K = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


def parse_memory(value: str | int | float | None) -> int | None:
    """'8G', '500MB', '2.5GiB' or a number of bytes -> bytes; None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return int(value)
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?)(i?b)?\s*", str(value).lower())
    if not m:
        raise SimsearchError(f"--max-memory {value!r}: expected a size such as 8G, 500M or 1.5GB")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))


def nlist_for(n: int) -> int:
    """Inverted lists: a power of two near sqrt(n), with >= 39 training points per centroid (FAISS's minimum)."""
    target = 2 ** round(math.log2(max(math.sqrt(max(n, 1)), 1)))
    return int(max(1, min(target, 65536, 2 ** int(math.log2(max(n // 39, 1))))))


def pq_m_for(dim: int, bytes_per_vector: float) -> int:
    """PQ sub-quantizers (bytes per code at 8 bits): a divisor of dim, as close to the wish as possible."""
    divisors = [m for m in range(1, dim + 1) if dim % m == 0 and dim // m >= 2]
    return min(divisors, key=lambda m: (abs(m - bytes_per_vector), -m))


def memory_estimate(kind: str, params: dict, n: int, dim: int) -> int:
    """Bytes an index of this kind takes for n vectors (vectors, links, codes, ids, centroids)."""
    if kind == "flat":
        return n * (4 * dim + ID_OVERHEAD)
    if kind == "hnsw":
        return int(n * (4 * dim + 2 * params.get("M", 32) * 4 * 1.1 + ID_OVERHEAD))
    refine = {"none": 0, "sq8": dim, "flat": 4 * dim}[params.get("refine", "none")]
    ids = 8 if params.get("refine", "none") == "none" else ID_OVERHEAD
    return int(n * (params["m"] + ids + refine) + params["nlist"] * dim * 4 + params["m"] * 256 * (dim // params["m"]) * 4)


def ivfpq_params(n: int, dim: int, budget: int | None) -> dict:
    """IVF-PQ with an SQ8 re-ranking stage when it fits (recall >= 0.95 needs it), else the largest PQ code that fits."""
    nlist = nlist_for(n)
    p = {"nlist": nlist, "m": pq_m_for(dim, dim / 8), "nbits": 8, "refine": "sq8"}
    if budget is None or memory_estimate("ivfpq", p, n, dim) <= budget:
        return p
    for wish in (dim / 4, dim / 8, dim / 16, dim / 32, dim / 64, 4):
        p = {"nlist": nlist, "m": pq_m_for(dim, wish), "nbits": 8, "refine": "none"}
        if memory_estimate("ivfpq", p, n, dim) <= budget:
            return p
    raise SimsearchError(f"--max-memory {budget} bytes is too small for {n} vectors of {dim} dimensions; "
                         f"IVF-PQ needs at least {memory_estimate('ivfpq', p, n, dim)} bytes")


def default_params(kind: str, n: int, dim: int, budget: int | None = None) -> dict:
    if kind == "flat":
        return {}
    if kind == "hnsw":
        return {"M": 32, "efConstruction": 40}
    if kind == "ivfpq":
        return ivfpq_params(n, dim, budget)
    raise SimsearchError(f"unknown index type {kind!r}; choose auto, {', '.join(faiss_ops.KINDS)}")


def choose(n: int, dim: int, requested: str = "auto", budget: int | None = None) -> dict:
    """{"type", "params", "reason", "memory_bytes"} for n vectors: flat while small, HNSW or IVF-PQ beyond."""
    if requested == "ivfpq" and n < IVFPQ_MIN_ROWS:
        requested, params, reason = "flat", {}, f"IVF-PQ asked for, but {n} rows < {IVFPQ_MIN_ROWS} cannot train it"
    elif requested != "auto":
        params = default_params(requested, n, dim, budget)
        reason = "asked for"
    else:
        fits = lambda kind, p: budget is None or memory_estimate(kind, p, n, dim) <= budget  # noqa: E731
        hnsw = default_params("hnsw", n, dim)
        if n < FLAT_MAX_ROWS and fits("flat", {}):
            requested, params, reason = "flat", {}, f"{n} rows < {FLAT_MAX_ROWS}: exact search"
        elif n < HNSW_MAX_ROWS and fits("hnsw", hnsw):
            requested, params, reason = "hnsw", hnsw, f"{n} rows: HNSW fits the memory budget"
        else:
            requested, params = "ivfpq", ivfpq_params(n, dim, budget)
            reason = f"{n} rows" + (" and the memory budget" if budget is not None else "") + ": IVF-PQ"
    mem = memory_estimate(requested, params, n, dim)
    if budget is not None and mem > budget:
        raise SimsearchError(f"a {requested} index of {n} x {dim} needs about {mem / 2**20:.0f} MiB, more than "
                             f"--max-memory {budget / 2**20:.0f} MiB; use --index-type auto or ivfpq")
    return {"type": requested, "params": params, "reason": reason, "memory_bytes": mem}


def compatible(old: dict, new: dict, n: int) -> bool:
    """Whether an existing index can be updated in place instead of built again (same type, still a good fit)."""
    if old.get("type") != new["type"] or old.get("params") is None:
        return False
    if new["type"] == "hnsw":
        return old["params"].get("M") == new["params"].get("M")
    if new["type"] == "ivfpq":
        keep = ("m", "nbits", "refine")
        trained = int(old.get("trained_rows", 0))
        return (all(old["params"].get(k) == new["params"].get(k) for k in keep)
                and trained > 0 and n <= 4 * trained and n * 4 >= trained)
    return True


def train_sample(n: int, params: dict, seed: int = 0) -> np.ndarray:
    """Row positions to train IVF-PQ on: ~50 per centroid and enough for the PQ codebooks, not all rows."""
    want = min(n, max(50 * params["nlist"], 256 * 40))
    return np.sort(np.random.default_rng(seed).choice(n, want, replace=False))


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[f >= 0]) & set(t)) / len(t) for f, t in zip(found, truth)]))


class Rows:
    """The L2-normalised rows an index holds, for training and tuning: in memory here; the shards, read one at a
    time, in simsearch.store.sync.ShardRows (same answers)."""

    def __init__(self, vectors: np.ndarray, ids: np.ndarray):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.ids = np.asarray(ids, np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, positions: np.ndarray) -> np.ndarray:
        """The rows at these positions (in live-row order)."""
        return self.vectors[positions]

    def knn(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact inner-product neighbours: (similarities [Q, k], row ids [Q, k])."""
        sims, pos = faiss.knn(q, self.vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
        return sims, self.ids[pos]


def calibration_queries(rows: Rows, queries: int, seed: int = 0) -> np.ndarray:
    """Stand-ins for new clips: stored rows moved, in a random direction, as far as their nearest other row.

    A stored row itself is too easy a query for a graph index (it is a node); a row nudged off by the typical
    neighbour distance tracks the recall of fresh queries closely (slightly below it).
    """
    rng = np.random.default_rng(seed)
    q = np.ascontiguousarray(rows.take(rng.choice(len(rows), min(queries, len(rows)), replace=False)))
    sims, _ = rows.knn(q, 2)
    dist = np.sqrt(np.maximum(2.0 - 2.0 * sims[:, 1], 0.0)).astype(np.float32)
    step = rng.standard_normal(q.shape).astype(np.float32)
    step /= np.linalg.norm(step, axis=1, keepdims=True)
    return normalize(q + step * dist[:, None])


def tune(index: faiss.Index, kind: str, params: dict, rows: Rows,
         target: float = TARGET_RECALL, queries: int = 500) -> tuple[dict, float | None]:
    """Cheapest knobs whose recall@10 against exact search reaches `target` (+ a margin) on calibration queries.

    `rows` are the L2-normalised rows the index holds; the queries are drawn from them (see calibration_queries).
    Returns (knobs, recall); when no setting reaches the target, the best one found.
    """
    k = TUNE_K
    if kind == "flat" or len(rows) <= k + 1:
        return {}, None
    q = calibration_queries(rows, queries, seed=0)
    _, truth = rows.knn(q, k)
    goal = min(target + TUNE_MARGIN, 1.0)

    def recall_at(knobs: dict) -> float:
        return _recall(faiss_ops.search(index, kind, q, k, knobs)[1], truth)

    if kind == "hnsw":
        return _first(recall_at, [{"efSearch": e} for e in HNSW_EF], goal)
    nprobes = [p for p in IVF_NPROBE if p <= params["nlist"]] or [params["nlist"]]
    if params.get("refine", "none") == "none":
        return _first(recall_at, [{"nprobe": p} for p in nprobes], goal)
    # Two passes instead of the whole grid: the fewest lists that hold the neighbours (with the deepest
    # re-ranking), then the shallowest re-ranking that finds them among those lists.
    deep = REFINE_K[-1]
    lists, _ = _first(recall_at, [{"nprobe": p, "k_factor": deep} for p in nprobes], goal)
    return _first(recall_at, [{**lists, "k_factor": f} for f in REFINE_K], goal)


def _first(recall_at, settings: list[dict], goal: float) -> tuple[dict, float]:
    """The first setting (cheapest first) whose recall reaches the goal, else the best one."""
    best, best_recall = settings[-1], -1.0
    for knobs in settings:
        r = recall_at(knobs)
        if r > best_recall:
            best, best_recall = knobs, r
        if r >= goal:
            return knobs, round(r, 4)
    return best, round(best_recall, 4)

