"""Landmark fingerprints at query time: load the index's table once, and rank by cosine + landmark match."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from simsearch.audio import fingerprint, landmark_kinds
from simsearch.store.folder import LANDMARKS
from simsearch.vectors import normalize

if TYPE_CHECKING:
    from simsearch.search.index import Index

log = logging.getLogger(__name__)


def load_landmark_table(index: Index):
    """Every row's landmarks (in index.rows order), as a table of the kind index.json records; None for an index
    made without them, with other settings, or with more landmarks than memory allows."""
    info, root = index.info, index.dir.root
    if "fingerprint" not in info:
        return None
    kind = landmark_kinds.kind_of(info["fingerprint"])
    if kind not in landmark_kinds.KINDS or not landmark_kinds.module(kind).compatible(info["fingerprint"]):
        log.warning("%s: its landmarks were made with other fingerprint settings (%s); audio search ranks by "
                    "cosine alone until `simsearch index` re-embeds it into a new --out folder", root, info["fingerprint"])
        return None
    n = index.dir.column_bytes(LANDMARKS, info.get("shards")) // 8  # before reading any of them
    if n > fingerprint.MAX_IN_MEMORY:
        log.warning("%s: %d landmarks would need %.1f GB in memory (limit %d); audio search ranks by cosine "
                    "alone (index large collections with --no-fingerprint)", root, n, 12 * n / 1e9,
                    fingerprint.MAX_IN_MEMORY)
        return None
    t = index.dir.live_rows(["id", LANDMARKS], info.get("shards"))
    positions = index.rows.index.get_indexer(t.column("id").to_numpy())  # row position of each shard row
    return landmark_kinds.table_class(kind).from_arrow(t.column(LANDMARKS), positions, len(index.rows))


def search_with_landmarks(index: Index, vector: np.ndarray, x: np.ndarray, k: int, filter: dict | None,
                          group_by_file: bool, exclude_same: bool = False) -> list[dict]:
    """The nearest rows by cosine plus the rows the query's landmarks match, ranked by cosine + match bonus
    (fingerprint.fuse): a noisy, cut or re-encoded copy of an indexed clip finds that clip first."""
    rows = index.rows
    kind = landmark_kinds.module(landmark_kinds.kind_of(index.info["fingerprint"]))
    match = index.landmark_table.scores(*kind.query_landmarks(x, index.encoder.sample_rate))
    ids_all = rows["id"].to_numpy()
    same = ids_all[match >= fingerprint.SAME_RECORDING] if exclude_same else np.zeros(0, np.int64)
    if len(same) and group_by_file:  # every window of a file that is the query's recording goes
        same = ids_all[rows["path"].isin(rows["path"].loc[same]).to_numpy()]
    hits = index.search_vector(vector, k + len(same), filter, group_by_file)
    matched = np.flatnonzero(fingerprint.bonus(match) > 0)
    if filter and len(matched):
        matched = matched[index.filter_mask(filter)[matched]]
    ids = np.unique(np.r_[np.array([h["id"] for h in hits], np.int64), ids_all[matched]])
    ids = ids[~np.isin(ids, same)]
    if not len(ids):
        return []
    cosine = index.vectors_for(ids) @ normalize(vector.reshape(1, -1))[0]
    scores = match[rows.index.get_indexer(ids)]
    extra = {i: {"cosine": round(float(c), 6), "match": round(float(m), 2)} for i, c, m in zip(ids, cosine, scores)}
    fused = fingerprint.fuse(cosine, scores)
    order = np.argsort(-fused, kind="stable")
    ids, fused = ids[order], fused[order].astype(np.float32)
    if group_by_file:
        ids, fused = index.best_per_file(ids, fused)
    return [{**r, **extra[r["id"]]} for r in index.records(ids[:k], fused[:k])]
