"""Temperature-weighted kNN label voting over an index's labelled rows, and the per-file vector bank it votes from."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from simsearch.errors import SimsearchError
from simsearch.vectors import normalize, pooled

if TYPE_CHECKING:
    from simsearch.search.index import Index


LABEL_SEP = ";"
KNN_K = 10
KNN_TEMPERATURE = 0.07


def split_labels(label: Any, sep: str = LABEL_SEP) -> list[str]:
    """'a;b' -> ['a', 'b']; None/NaN/'' -> []."""
    if label is None or (isinstance(label, float) and label != label):
        return []
    return [p.strip() for p in str(label).split(sep) if p.strip()]


def file_vectors(paths: Sequence[str], embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One vector per file: mean of its rows' normalised window embeddings, renormalised (as a query is).

    Returns (unique paths in first-seen order, vectors [F, D]).
    """
    codes, uniques = pd.factorize(pd.Series(list(paths)))
    return np.asarray(uniques, dtype=object), pooled(embeddings, codes)


def labelled_files(index: "Index", multi_label: bool = False,
                   sep: str = LABEL_SEP) -> tuple[np.ndarray, np.ndarray, list]:
    """(paths, file vectors, labels) for the index's labelled files; labels are lists when multi_label."""
    rows = index.rows
    has_label = rows["label"].map(lambda v: bool(split_labels(v, sep))).to_numpy(bool)
    if not has_label.any():
        raise SimsearchError(f"{index.dir.root} has no labelled rows; index with labels (sub-folders, "
                             "--label-regex, or a manifest 'label' column)")
    paths, vecs = file_vectors(rows["path"].to_numpy()[has_label], index.embeddings()[has_label])
    label_of = dict(zip(rows["path"], rows["label"]))
    labels = [split_labels(label_of[p], sep) if multi_label else str(label_of[p]) for p in paths]
    return paths, vecs, labels


def knn_scores(queries: np.ndarray, bank: np.ndarray, bank_labels: Sequence[Sequence[str]], k: int = KNN_K,
               temperature: float = KNN_TEMPERATURE) -> tuple[list[str], np.ndarray]:
    """Weighted kNN votes: (classes, scores [Q, C]) for normalised queries [Q, D] against bank [N, D]."""
    from sklearn.preprocessing import MultiLabelBinarizer

    q = normalize(np.atleast_2d(queries))
    b = normalize(bank)
    mlb = MultiLabelBinarizer()
    y = mlb.fit_transform([list(v) for v in bank_labels]).astype(np.float32)  # [N, C]
    k = max(1, min(int(k), len(b)))
    sims = q @ b.T
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    s = np.take_along_axis(sims, top, axis=1)
    w = np.exp((s - s.max(axis=1, keepdims=True)) / temperature)  # shifted: same ratios, no overflow
    votes = np.einsum("qk,qkc->qc", w, y[top])
    return [str(c) for c in mlb.classes_], votes / w.sum(axis=1, keepdims=True)


def _ranked(classes: Sequence[str], scores: np.ndarray, top: int | None = None) -> list[dict]:
    order = np.argsort(-scores, kind="stable")[: top or None]
    return [{"label": str(classes[i]), "score": round(float(scores[i]), 6)} for i in order]


def labelled_bank(index: "Index", sep: str = LABEL_SEP) -> tuple[np.ndarray, list[list[str]], np.ndarray]:
    """The rows that vote: (normalised embeddings [M, D], their label lists, their row ids); M is 0 without labels."""
    labels = [split_labels(v, sep) for v in index.rows["label"]]
    keep = np.fromiter((bool(v) for v in labels), bool, len(labels))
    return index.embeddings()[keep], [v for v, m in zip(labels, keep) if m], index.rows["id"].to_numpy()[keep]


def classify_knn(index: "Index", vector: np.ndarray, k: int = KNN_K) -> list[dict]:
    """Label scores of one query vector from its k nearest labelled rows."""
    bank, labels, _ = labelled_bank(index)
    if not labels:
        raise SimsearchError(f"{index.dir.root} has no labelled rows to vote; index with labels (sub-folders, "
                             "--label-regex, or a manifest 'label' column)")
    classes, scores = knn_scores(vector, bank, labels, k)
    voted = scores[0] > 0  # labels no neighbour voted for are left out
    return _ranked([c for c, v in zip(classes, voted) if v], scores[0][voted])

