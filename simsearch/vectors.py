"""Vector arithmetic every stage agrees on: L2 normalisation and the normalised mean of a file's windows."""
from __future__ import annotations

import numpy as np


def normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation; zero rows stay zero instead of becoming NaN."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)



def pooled(embeddings: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """One vector per group (a file's or clip's windows): normalise each window, average, normalise again.

    `groups` gives each row's group as an integer 0..G-1 (None: all rows are one group); returns [G, D].
    Normalising first keeps one loud window from outvoting the rest, so a query is pooled like the index's files.
    """
    x = normalize(embeddings)
    if groups is None:
        return normalize(x.mean(axis=0, keepdims=True))
    groups = np.asarray(groups, dtype=np.int64)
    sums = np.zeros((int(groups.max()) + 1 if groups.size else 0, x.shape[1]), np.float64)
    np.add.at(sums, groups, x)
    return normalize(sums / np.maximum(np.bincount(groups, minlength=len(sums)), 1)[:, None])
