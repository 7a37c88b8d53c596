"""Landmark fingerprints at query time: load the index's table once, and rank by cosine + landmark match."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from simsearch.audio import fingerprint, landmark_both, landmark_kinds
from simsearch.store.folder import LANDMARKS
from simsearch.store.postings import Postings
from simsearch.vectors import normalize

if TYPE_CHECKING:
    from simsearch.search.index import Index

log = logging.getLogger(__name__)
# A fused query reads at most about this many postings, its rarest hashes first (they say the most about a match,
# and the common ones cost the most): what a query costs stops growing with the collection once its hashes' postings
# pass this. Under it (every index up to tens of thousands of rows) all postings are read.
POSTINGS_BUDGET = 50_000


def load_landmark_table(index: Index):
    """The index's landmarks for look-ups, of the kind index.json records: its on-disk postings (memory-mapped,
    see simsearch.store.postings) where it has them, else every row's landmarks in memory (in index.rows order);
    None for an index made without them, with other settings, or too big for memory without postings."""
    info, root = index.info, index.dir.root
    if "fingerprint" not in info:
        return None
    kind = landmark_kinds.kind_of(info["fingerprint"])
    if kind not in landmark_kinds.KINDS or not landmark_kinds.module(kind).compatible(info["fingerprint"]):
        log.warning("%s: its landmarks were made with other fingerprint settings (%s); audio search ranks by "
                    "cosine alone until `simsearch index` re-embeds it into a new --out folder", root, info["fingerprint"])
        return None
    if index.postings is not None:
        return PostingsTable(index.postings, kind, index.core_rows.index)
    n = index.dir.column_bytes(LANDMARKS, info.get("shards")) // 8  # before reading any of them
    budget = info.get("faiss", {}).get("max_memory")  # the index's --max-memory bounds the table too
    limit = fingerprint.MAX_IN_MEMORY if budget is None else min(fingerprint.MAX_IN_MEMORY, int(budget) // 12)
    if n > limit:
        log.warning("%s: %d landmarks would need %.1f GB in memory (limit %d) and the index has no on-disk "
                    "postings yet; audio search ranks by cosine alone until `simsearch rebuild %s` builds them "
                    "(or index large collections with --no-fingerprint)", root, n, 12 * n / 1e9, limit, root)
        return None
    t = index.dir.live_rows(["id", LANDMARKS], info.get("shards"))
    positions = index.core_rows.index.get_indexer(t.column("id").to_numpy())  # row position of each shard row
    return landmark_kinds.table_class(kind).from_arrow(t.column(LANDMARKS), positions, len(index.core_rows))


def _stored_hashes(kind: str, marks: tuple) -> np.ndarray:
    """The stored hashes a query's landmarks look up (in a "both" column, triplets carry the top bit)."""
    if kind == "both":
        return np.r_[marks[0][0], np.asarray(marks[1][0], np.uint32) | np.uint32(landmark_both.TRIPLET_BIT)]
    return marks[0]


class PostingsTable:
    """Match scores from the on-disk postings: the query's candidate postings become a small table of the index's
    kind, scored by that kind's own `scores`, so the result equals the in-memory table's."""

    def __init__(self, postings: Postings, kind: str, row_ids: pd.Index):
        self.postings, self.kind, self.row_ids = postings, kind, row_ids

    def match(self, marks: tuple) -> tuple[np.ndarray, np.ndarray]:
        """(row positions, match scores) of the rows sharing any landmark with the query."""
        hashes, ids, times = self.postings.lookup(_stored_hashes(self.kind, marks), POSTINGS_BUDGET)
        pos = self.row_ids.get_indexer(ids)
        live = pos >= 0  # rows removed or replaced since their segment was written match nothing
        hashes, pos, times = hashes[live], pos[live], times[live]
        if not len(pos):
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        rows, local = np.unique(pos, return_inverse=True)
        # In the in-memory table's order: by hash, then row, each row's postings in stored order (a stable sort).
        order = np.argsort((hashes.astype(np.uint64) << np.uint64(32)) | local.astype(np.uint64), kind="stable")
        pairs = np.stack([hashes[order].view(np.int32), times[order]], axis=1)
        offsets = (np.arange(len(pairs) + 1) * 8).astype(np.int32)  # one posting per element, so no regrouping
        column = pa.Array.from_buffers(pa.binary(), len(pairs), [None, pa.py_buffer(offsets), pa.py_buffer(pairs)])
        table = landmark_kinds.table_class(self.kind).from_arrow(column, local[order], len(rows))
        return rows.astype(np.int64), table.scores(*marks)


def match_scores(index: Index, marks: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(row positions, scores > 0) of the rows the query's landmarks match, from postings or the in-memory table."""
    table = index.landmark_table
    if isinstance(table, PostingsTable):
        rows, scores = table.match(marks)
    else:
        scores = table.scores(*marks)
        rows = np.flatnonzero(scores > 0)
        scores = scores[rows]
    keep = scores > 0
    return rows[keep], scores[keep]


def search_with_landmarks(index: Index, vector: np.ndarray, x: np.ndarray, k: int, filter: dict | None,
                          group_by_file: bool, exclude_same: bool = False) -> list[dict]:
    """The nearest rows by cosine plus the rows the query's landmarks match, ranked by cosine + match bonus
    (fingerprint.fuse): a noisy, cut or re-encoded copy of an indexed clip finds that clip first."""
    kind = landmark_kinds.module(landmark_kinds.kind_of(index.info["fingerprint"]))
    marks = kind.query_landmarks(x, index.encoder.sample_rate)
    return search_with_marks(index, vector, marks, k, filter, group_by_file, exclude_same)


def search_with_marks(index: Index, vector: np.ndarray, marks: tuple, k: int, filter: dict | None,
                      group_by_file: bool, exclude_same: bool = False) -> list[dict]:
    """search_with_landmarks for a query already embedded and fingerprinted (its kind's query_landmarks)."""
    rows = index.core_rows
    matched, match = match_scores(index, marks)
    ids_all = rows["id"].to_numpy()
    same = ids_all[matched[match >= fingerprint.SAME_RECORDING]] if exclude_same else np.zeros(0, np.int64)
    if len(same) and group_by_file:  # every window of a file that is the query's recording goes
        same = ids_all[rows["path"].isin(rows["path"].loc[same]).to_numpy()]
    hits = index.search_vector(vector, k + len(same), filter, group_by_file)
    gain = fingerprint.bonus(match) > 0
    bonused = matched[gain]
    if filter and len(bonused):
        bonused = bonused[index.filter_mask(filter)[bonused]]
    ids = np.unique(np.r_[np.array([h["id"] for h in hits], np.int64), ids_all[bonused]])
    ids = ids[~np.isin(ids, same)]
    if not len(ids):
        return []
    cosine = index.vectors_for(ids, approximate=True) @ normalize(vector.reshape(1, -1))[0]
    scores = np.zeros(len(ids))
    at = rows.index.get_indexer(ids)
    where = np.searchsorted(matched, at)  # matched row positions are sorted
    found = where < len(matched)
    found[found] = matched[where[found]] == at[found]
    scores[found] = match[where[found]]
    extra = {i: {"cosine": round(float(c), 6), "match": round(float(m), 2)} for i, c, m in zip(ids, cosine, scores)}
    fused = fingerprint.fuse(cosine, scores)
    order = np.argsort(-fused, kind="stable")
    ids, fused = ids[order], fused[order].astype(np.float32)
    if group_by_file:
        ids, fused = index.best_per_file(ids, fused)
    return [{**r, **extra[r["id"]]} for r in index.records(ids[:k], fused[:k])]
