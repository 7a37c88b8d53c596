"""Label a clip from an index: kNN votes over labelled rows, a trained linear probe, or zero-shot from text.

kNN weighting: the k nearest labelled rows by cosine similarity s_i each vote with weight
exp(s_i / T), T = 0.07 (the temperature-weighted kNN of Wu et al. 2018 / DINO); a label's score is
the sum of its voters' weights divided by the sum over all k, so the scores add up to 1 and a close
neighbour counts for much more than a far one. Rows without a label never vote. A row whose label
holds ";" ("dog;bark") votes for each part.

Zero-shot: with a CLAP index, labels become prompts "This is a sound of {}." embedded by the
text tower and scored as softmax(100 * cosine) like CLIP/CLAP. With a YAMNet index, each label is
mapped onto the 521 AudioSet classes with simsearch.text.tag_query_weights (the label text itself,
no template: class names are short nouns) and scored as those weights · the clip's own tag scores,
i.e. the weighted mean probability that the clip holds the label's AudioSet classes (scores are
independent probabilities, not a distribution over the labels).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from . import faiss_index
from .errors import SimsearchError
from .probe import load_probe

if TYPE_CHECKING:
    from .index import Index

LABEL_SEP = ";"
KNN_K = 10
KNN_TEMPERATURE = 0.07
PROMPT_TEMPLATE = "This is a sound of {}."
CLAP_LOGIT_SCALE = 100.0
METHODS = ("knn", "probe", "zeroshot")


def split_labels(label: Any, sep: str = LABEL_SEP) -> list[str]:
    """'a;b' -> ['a', 'b']; None/NaN/'' -> []."""
    if label is None or (isinstance(label, float) and label != label):
        return []
    return [p.strip() for p in str(label).split(sep) if p.strip()]


def file_vectors(paths: Sequence[str], embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One vector per file: mean of its rows' normalised window embeddings, renormalised (as a query is).

    Returns (unique paths in first-seen order, vectors [F, D]).
    """
    emb = faiss_index.normalize(embeddings)
    codes, uniques = pd.factorize(pd.Series(list(paths)))
    means = pd.DataFrame(emb).groupby(codes, sort=True).mean().to_numpy(np.float32)
    return np.asarray(uniques, dtype=object), faiss_index.normalize(means)


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

    q = faiss_index.normalize(np.atleast_2d(queries))
    b = faiss_index.normalize(bank)
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


def classify_knn(index: "Index", vector: np.ndarray, k: int = KNN_K) -> list[dict]:
    """Label scores of one query vector from its k nearest labelled rows."""
    labels = [split_labels(v) for v in index.rows["label"]]
    keep = np.array([bool(v) for v in labels])
    if not keep.any():
        raise SimsearchError(f"{index.dir.root} has no labelled rows to vote; index with labels (sub-folders, "
                             "--label-regex, or a manifest 'label' column)")
    bank = index.embeddings()[keep]
    classes, scores = knn_scores(vector, bank, [v for v, m in zip(labels, keep) if m], k)
    voted = scores[0] > 0  # labels no neighbour voted for are left out
    return _ranked([c for c, v in zip(classes, voted) if v], scores[0][voted])


def classify_probe(index: "Index", vector: np.ndarray) -> list[dict]:
    """Label scores from the probe saved in the index folder."""
    probe = load_probe(index.dir.root)
    if probe.meta.get("encoder") not in (None, index.info["encoder"]["name"]):
        raise SimsearchError(f"the probe in {index.dir.root} was trained on {probe.meta['encoder']} embeddings; "
                             f"retrain it with `simsearch probe {index.dir.root}`")
    return _ranked(probe.classes, probe.scores(vector)[0])


def zero_shot_scores(index: "Index", vector: np.ndarray, extras: dict[str, np.ndarray],
                     labels: Sequence[str]) -> np.ndarray:
    """Scores [L] of free-text labels for one clip (see the module docstring for the two spaces)."""
    labels = [str(v).strip() for v in labels if str(v).strip()]
    if not labels:
        raise SimsearchError('zero-shot needs candidate labels: --labels "dog,cat,rain"')
    enc = index.encoder
    if getattr(enc, "text_space", None) == "clap":
        from scipy.special import softmax

        text = faiss_index.normalize(enc.embed_text([PROMPT_TEMPLATE.format(v) for v in labels]))
        return softmax(CLAP_LOGIT_SCALE * (text @ vector))
    if "tag_scores" in extras:
        from .encoders.yamnet import load_class_names
        from .text import tag_query_weights

        names = load_class_names()
        weights = np.stack([tag_query_weights(v, names) for v in labels])
        return weights @ extras["tag_scores"]
    raise SimsearchError(f"encoder {index.info['encoder']['name']!r} has no text space for zero-shot labels; "
                         "use an index built with clap or yamnet, or --method knn/probe")


def classify(index: "Index", audio: Any, method: str = "knn", k: int = KNN_K,
             labels: Sequence[str] | None = None, top: int | None = None) -> list[dict]:
    """[{"label", "score"}, ...] best first, like the transformers audio-classification pipeline."""
    if method not in METHODS:
        raise SimsearchError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if labels and method != "zeroshot":
        raise SimsearchError("--labels is for --method zeroshot; knn and probe use the index's own labels")
    vector, extras = index.embed_clip(audio)
    if method == "knn":
        out = classify_knn(index, vector, k)
    elif method == "probe":
        out = classify_probe(index, vector)
    else:
        labels = [v.strip() for v in labels or [] if v.strip()]
        out = _ranked(labels, zero_shot_scores(index, vector, extras, labels))
    return out[: top or None]


def train_probe(index: "Index", multi_label: bool = False, sep: str = LABEL_SEP, folds: int = 5, seed: int = 0):
    """Fit a probe on the index's labelled files (one vector per file) and save it in the index folder."""
    from .probe import fit_probe, save_probe

    paths, vecs, labels = labelled_files(index, multi_label, sep)
    probe = fit_probe(vecs, labels, multi_label=multi_label, folds=folds, seed=seed)
    extra = {"encoder": index.info["encoder"]["name"], "index_generation": index.info.get("generation"),
             "n_files": int(len(paths)), "label_sep": sep if multi_label else None}
    save_probe(probe, index.dir.root, extra)
    probe.meta.update(extra)
    return probe


__all__ = ["classify", "classify_knn", "classify_probe", "zero_shot_scores", "knn_scores", "file_vectors",
           "labelled_files", "train_probe", "split_labels", "KNN_K", "KNN_TEMPERATURE",
           "PROMPT_TEMPLATE", "METHODS"]
