"""Bring faiss.index in line with the shards: build it, or update it in place by adding and removing rows."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from simsearch.errors import IndexFormatError
from simsearch.store import faiss_ops, planner
from simsearch.store.folder import LANDMARKS, META_COLUMNS, IndexDir, write_step
from simsearch.vectors import normalize

log = logging.getLogger(__name__)
STREAM_BYTES = 1 << 30  # an IVF-PQ build over more vectors than this reads them shard by shard, never all at once


def read_vectors(d: IndexDir, wanted: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(L2-normalised vectors, ids) of the live rows, or of just the `wanted` ids (only shards holding them are read)."""
    if wanted is None:
        t = d.live_rows(["id", "embedding"])
    else:
        found: dict[int, np.ndarray] = {}
        want = set(int(i) for i in wanted)
        for p in d.shard_paths():
            shard_ids = d.read_shard(p, ["id"]).column("id").to_numpy()
            hit = np.isin(shard_ids, wanted)
            if hit.any():
                t = d.read_shard(p, ["id", "embedding"]).filter(hit)
                x = _matrix(t)
                found.update(zip(t.column("id").to_pylist(), x))  # a later shard wins, as in live_rows
        missing = want - set(found)
        if missing:
            raise IndexFormatError(f"{d.root}: rows {sorted(missing)[:5]} vanished from the shards during the update")
        ids = np.fromiter(found, np.int64, len(found))
        x = np.stack([found[i] for i in ids]) if len(ids) else np.zeros((0, 0), np.float32)
        return normalize(x), ids
    return normalize(_matrix(t)), np.asarray(t.column("id").to_numpy(), np.int64)


def _matrix(t) -> np.ndarray:
    if not t.num_rows:
        return np.zeros((0, 0), np.float32)
    return np.asarray(t.column("embedding").combine_chunks().flatten(), np.float32).reshape(t.num_rows, -1)


class ShardRows(planner.Rows):
    """planner.Rows read from the shards one at a time: what IVF-PQ trains and tunes on when the vectors do not
    fit in memory together (the same rows, positions and answers as the in-memory Rows)."""

    def __init__(self, d: IndexDir, n: int):
        self.d, self.n = d, n

    def __len__(self) -> int:
        return self.n

    def shards(self):
        """(first position, normalised vectors, ids) of each shard's live rows, in live-row order."""
        start = 0
        for t in self.d.iter_live(["id", "embedding"]):
            if t.num_rows:
                yield start, normalize(_matrix(t)), np.asarray(t.column("id").to_numpy(), np.int64)
                start += t.num_rows

    def take(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions)
        out: np.ndarray | None = None
        for start, x, _ in self.shards():
            hit = (positions >= start) & (positions < start + len(x))
            if hit.any():
                out = np.zeros((len(positions), x.shape[1]), np.float32) if out is None else out
                out[hit] = x[positions[hit] - start]
        return out if out is not None else np.zeros((0, 0), np.float32)

    def knn(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        best_s = np.full((len(q), k), -np.inf, np.float32)
        best_i = np.full((len(q), k), -1, np.int64)
        for _, x, ids in self.shards():
            sims, pos = faiss.knn(q, x, min(k, len(x)), metric=faiss.METRIC_INNER_PRODUCT)
            all_s = np.concatenate([best_s, sims], axis=1)
            all_i = np.concatenate([best_i, ids[pos]], axis=1)
            top = np.argsort(-all_s, axis=1, kind="stable")[:, :k]
            best_s, best_i = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_i, top, 1)
        return best_s, best_i


def _build_from_shards(d: IndexDir, kind: str, params: dict, n: int, dim: int):
    """A trained index built shard by shard: trained on the same row sample as the in-memory build, then every
    live row added one shard at a time. Returns (index, ShardRows for tuning)."""
    rows = ShardRows(d, n)
    train = rows.take(planner.train_sample(n, params))
    if train.shape[1] != dim:
        raise IndexFormatError(f"{d.root}: shards hold {train.shape[1]}-d vectors but index.json says {dim}")
    index = faiss_ops.empty(kind, dim, params)
    index.train(train)
    for _, x, ids in rows.shards():
        faiss_ops.add(index, x, ids)
    return index, rows


def extra_columns(d: IndexDir) -> list[str]:
    """Side-output columns the shards carry (e.g. YAMNet tag scores)."""
    shards = d.shard_paths()
    if not shards:
        return []
    return [n for n in pq.read_schema(shards[-1]).names if n not in META_COLUMNS + ["embedding", LANDMARKS]]


def has_landmarks(d: IndexDir) -> bool:
    """Whether the newest shard keeps fingerprint landmarks (an index made with --no-fingerprint does not)."""
    shards = d.shard_paths()
    return bool(shards) and LANDMARKS in pq.read_schema(shards[-1]).names


def _open_for_update(d: IndexDir, old: dict, spec: dict, n: int, dim: int):
    """The committed index when it can be updated in place, else None (then it is built again).

    Only a file that index.json names is trusted: before format 2 a killed run could leave a faiss.index
    newer than index.json (holding ids that were then handed out again), so such an index is built once anew.
    """
    if not old.get("file"):
        return None
    current = d.faiss_file({"faiss": old})
    if not current.exists() or not planner.compatible(old, spec, n):
        return None
    try:
        index = faiss_ops.load(current)
    except IndexFormatError:
        return None
    if index.d != dim:
        return None
    return index, faiss_ops.ids(index)


def write_faiss(d: IndexDir, live_ids: np.ndarray, dim: int, old: dict, requested: str, budget: int | None,
                incremental: bool, target: Path | None = None) -> dict:
    """Write a FAISS file (`target`, never the committed one) holding exactly the live rows; returns its record.

    Updated from the committed index where the type allows: flat and plain IVF-PQ add and remove; HNSW and
    IVF-PQ with re-ranking only add, so a removal re-adds the rows into the trained structure (no k-means
    again). A full build (with IVF-PQ trained on a sample of the rows and the search knobs tuned to the recall
    target) happens when there is no usable index, the type or fit changed, or `incremental` is false.
    """
    n = len(live_ids)
    spec = planner.choose(n, dim, requested, budget)
    opened = _open_for_update(d, old, spec, n, dim) if incremental else None
    if opened is not None:
        index, have = opened
        kind, params = old["type"], old["params"]
        add_ids = np.setdiff1d(live_ids, have)
        rm_ids = np.setdiff1d(have, live_ids)
        if len(rm_ids) and not faiss_ops.can_remove(kind, params):
            index.reset()
            x, ids = read_vectors(d)
            faiss_ops.add(index, x, ids)
            mode = "re-added all rows (this type cannot remove in place; no retraining)"
        else:
            faiss_ops.remove(index, rm_ids)
            x, ids = read_vectors(d, add_ids)
            faiss_ops.add(index, x, ids)
            mode = "updated in place"
        record = {**old, "update": {"mode": mode, "added": int(len(add_ids)), "removed": int(len(rm_ids))}}
    else:
        kind, params = spec["type"], spec["params"]
        if faiss_ops.needs_training(kind) and n * dim * 4 > STREAM_BYTES:  # never all vectors in memory at once
            index, rows = _build_from_shards(d, kind, params, n, dim)
        else:
            x, ids = read_vectors(d)
            if not len(ids):
                x = np.zeros((0, dim), np.float32)
            elif x.shape[1] != dim:
                raise IndexFormatError(f"{d.root}: shards hold {x.shape[1]}-d vectors but index.json says {dim}")
            train = x[planner.train_sample(len(ids), params)] if faiss_ops.needs_training(kind) else None
            index, rows = faiss_ops.build(x, ids, kind, params, train=train), planner.Rows(x, ids)
        knobs, recall = planner.tune(index, kind, params, rows)
        record = {"type": kind, "params": params, "search": knobs, "calibrated_recall_at_10": recall,
                  "trained_rows": int(n), "reason": spec["reason"],
                  "update": {"mode": "built", "added": int(n), "removed": 0}}
        if recall is not None and recall < planner.TARGET_RECALL:
            log.warning("%s: best recall@10 of the %s index is %.3f (< %.2f)", d.root, kind, recall, planner.TARGET_RECALL)
    target = target or d.faiss_path
    write_step()
    faiss_ops.save(index, target)
    record.update({"file": target.name, "requested": requested, "max_memory": budget, "class": type(index).__name__,
                   "memory_bytes": planner.memory_estimate(kind, params, n, dim)})
    return record

