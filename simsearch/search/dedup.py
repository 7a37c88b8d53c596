"""Near-duplicate groups in an index: pairs of rows above a cosine threshold, joined into connected components."""
from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from simsearch.search.index import Index
from simsearch.store import faiss_ops
from simsearch.vectors import normalize

BATCH = 2048


def similar_pairs(index: Index, threshold: float, neighbours: int = 20,
                  same_file: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, score) row-id pairs with cosine >= threshold; windows of one recording pair up only if `same_file`.

    Flat indexes use FAISS range search (every pair, exact); approximate ones look at each row's `neighbours`
    nearest, which still links larger groups through chains.
    """
    ids = index.rows["id"].to_numpy()
    a, b, s = [], [], []
    for start in range(0, len(ids), BATCH):
        chunk = ids[start:start + BATCH]
        q = normalize(index.vectors_for(chunk))
        if index.kind == "flat":
            lims, D, I = index.faiss.range_search(q, float(threshold) - 1e-6)
            src = np.repeat(chunk, np.diff(lims).astype(np.int64))
        else:
            D, I = faiss_ops.search(index.faiss, index.kind, q, min(neighbours + 1, len(ids)), index.knobs)
            src = np.repeat(chunk, I.shape[1])
            D, I = D.ravel(), I.ravel()
        keep = (I >= 0) & (I != src) & (D >= threshold - 1e-6)
        if not same_file:
            paths = index.rows["path"]
            keep &= paths.reindex(src).to_numpy() != paths.reindex(np.where(I >= 0, I, src)).to_numpy()
        a.append(src[keep])
        b.append(I[keep])
        s.append(D[keep])
    cat = lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt)  # noqa: E731
    return cat(a, np.int64), cat(b, np.int64), cat(s, np.float32)


def find_duplicates(index: Index, threshold: float = 0.98, neighbours: int = 20, same_file: bool = False) -> list[dict]:
    """Groups of >= 2 rows whose members link by cosine >= threshold, largest first."""
    a, b, s = similar_pairs(index, threshold, neighbours, same_file)
    if not len(a):
        return []
    pos = index.rows.index.get_indexer
    n = len(index.rows)
    graph = coo_matrix((np.ones(len(a)), (pos(a), pos(b))), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    sizes = np.bincount(comp)
    weakest: dict[int, float] = {}
    for x, score in zip(comp[pos(a)], s):
        weakest[int(x)] = min(weakest.get(int(x), 1.0), float(score))
    groups = []
    for c in np.flatnonzero(sizes >= 2):
        members = index.rows.iloc[np.flatnonzero(comp == c)].sort_values(["path", "offset_s"])
        groups.append({"size": int(len(members)), "min_link_score": round(weakest.get(int(c), 1.0), 6),
                       "members": [{"id": int(r.id), "path": r.path, "offset_s": float(r.offset_s),
                                    "label": None if r.label is None or r.label != r.label else r.label}
                                   for r in members.itertuples()]})
    return sorted(groups, key=lambda g: (-g["size"], g["members"][0]["path"]))

