"""Linear probes on frozen embeddings: train with a cross-validated regularisation, save without pickle.

A probe is standardisation followed by logistic regression (L2 weight decay, strength 1/C):
softmax over classes for single-label data, one sigmoid per label for multi-label data. C is
picked from a grid by (stratified) k-fold cross-validation on the training rows. The fitted
numbers are saved as plain arrays in ``probe.npz`` (read with ``allow_pickle=False``, so loading
never executes code) next to a readable ``probe.json`` with the classes and how it was trained.

``pooling="attention"`` trains, instead of the mean of a file's windows, a gated attention pooling over them together
with the linear layer (simsearch.classify.mil), for long files whose label is one short event among other sound.
"""
from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from simsearch.classify.knn import LABEL_SEP, _ranked, labelled_files
from simsearch.errors import SimsearchError
from simsearch.files import atomic_write_bytes, atomic_write_text
from simsearch.vectors import normalize, pooled

if TYPE_CHECKING:
    from simsearch.search.index import Index

PROBE_WEIGHTS = "probe.npz"
PROBE_META = "probe.json"
C_GRID: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
PROBE_FORMAT = 1
PROBE_POOLINGS = ("mean", "attention")  # how a file's windows become the vector the linear layer reads


@dataclass
class Probe:
    """A fitted probe: z = ((x - mean) / scale) @ coef.T + intercept, then softmax or sigmoid."""

    classes: list[str]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    multi_label: bool = False
    meta: dict = field(default_factory=dict)
    attention: dict[str, np.ndarray] | None = None  # gated attention weights (simsearch.classify.mil); None: mean

    @property
    def pooling(self) -> str:
        return "mean" if self.attention is None else "attention"

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def scores(self, x: np.ndarray) -> np.ndarray:
        """[N, D] embeddings -> [N, len(classes)]: class probabilities, or per-label probabilities if multi-label."""
        x = self._check(x)
        if self.attention is not None:  # each row a file of one window: its attention weight is 1
            x = normalize(x)
        return self._activate(((x - self.mean) / self.scale) @ self.coef.T + self.intercept)

    def scores_windows(self, windows: np.ndarray) -> np.ndarray:
        """[T, D] window embeddings of one file -> [len(classes)]: attention-pooled (mean probes: their pooled mean)."""
        if self.attention is None:
            return self.scores(pooled(np.atleast_2d(windows)))[0]
        from simsearch.classify.mil import pool_bag

        z, _ = pool_bag(self._check(windows), {"mean": self.mean, "scale": self.scale, **self.attention})
        return self._activate((z @ self.coef.T + self.intercept)[None])[0]

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(x, np.float32))
        if x.shape[1] != self.dim:
            raise SimsearchError(f"the probe expects {self.dim}-d embeddings, got {x.shape[1]}-d; "
                                 "retrain it with `simsearch probe DIR`")
        return x

    def _activate(self, z: np.ndarray) -> np.ndarray:
        from scipy.special import expit, softmax

        if self.multi_label:
            return expit(z)
        if z.shape[1] == 1:  # sklearn's binary case: one logit for classes[1]
            p = expit(z[:, 0])
            return np.stack([1.0 - p, p], axis=1)
        return softmax(z, axis=1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Best class per row (single-label probes)."""
        return np.asarray(self.classes, dtype=object)[self.scores(x).argmax(axis=1)]


def fit_attention_probe(bags: Sequence[np.ndarray], labels: Sequence[str] | Sequence[Sequence[str]],
                        multi_label: bool = False, seed: int = 0) -> Probe:
    """Fit gated attention pooling + linear layer on files given as bags of window embeddings [T_i, D]."""
    from sklearn.preprocessing import MultiLabelBinarizer

    from simsearch.classify.mil import ATTENTION_KEYS, EPOCHS, HIDDEN, LR, WEIGHT_DECAY, fit_attention

    if len(bags) != len(labels):
        raise ValueError(f"{len(bags)} files but {len(labels)} labels")
    if multi_label:
        mlb = MultiLabelBinarizer()
        y = mlb.fit_transform([list(v) for v in labels])
        keep = (y.sum(axis=0) >= 2) & (y.sum(axis=0) <= len(y) - 1)
        if keep.sum() < 1:
            raise SimsearchError("a multi-label probe needs at least one label with 2 or more positive and 1 negative "
                                 "clips; label more clips")
        y, classes = y[:, keep], [str(c) for c in mlb.classes_[keep]]
    else:
        classes = sorted({str(v) for v in labels})
        if len(classes) < 2:
            raise SimsearchError(f"a probe needs at least 2 different labels; found {len(classes)} "
                                 f"({', '.join(classes) or 'none'}); label more clips")
        y = np.searchsorted(classes, [str(v) for v in labels])
    a = fit_attention([np.asarray(b, np.float32) for b in bags], y, multi_label, seed=seed)
    meta = {"pooling": "attention", "hidden": HIDDEN, "epochs": int(a["epochs"]), "max_epochs": EPOCHS, "lr": LR,
            "weight_decay": WEIGHT_DECAY,
            "n_train": int(len(bags)), "n_windows": int(sum(len(b) for b in bags))}
    return Probe(classes, a["mean"], a["scale"], a["coef"], a["intercept"], multi_label, meta,
                 {k: a[k] for k in ATTENTION_KEYS})


def _inner_cv(y: np.ndarray | None, n: int, folds: int, seed: int):
    from sklearn.model_selection import KFold, StratifiedKFold

    if y is None:
        return KFold(n_splits=max(2, min(folds, n)), shuffle=True, random_state=seed)
    _, counts = np.unique(y, return_counts=True)
    # A class with fewer members than folds still gets one member in as many folds as it can fill.
    return StratifiedKFold(n_splits=max(2, min(folds, int(counts.max()))), shuffle=True, random_state=seed)


def fit_probe(x: np.ndarray, labels: Sequence[str] | Sequence[Sequence[str]], multi_label: bool = False,
              c_grid: Sequence[float] = C_GRID, folds: int = 5, seed: int = 0, n_jobs: int | None = None) -> Probe:
    """Fit a probe on embeddings x [N, D]; labels are strings, or lists of strings when multi_label.

    The regularisation C is the grid value with the best cross-validated accuracy (single-label) or
    macro mean average precision (multi-label); the probe is then refitted on all rows.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MultiLabelBinarizer, StandardScaler
    from threadpoolctl import threadpool_limits

    x = np.asarray(x, np.float32)
    if len(x) != len(labels):
        raise ValueError(f"{len(x)} embeddings but {len(labels)} labels")
    lr = LogisticRegression(max_iter=3000)
    if multi_label:
        mlb = MultiLabelBinarizer()
        y = mlb.fit_transform([list(v) for v in labels])
        pos = y.sum(axis=0)
        keep = (pos >= 2) & (pos <= len(y) - 1)
        if keep.sum() < 1:
            raise SimsearchError("a multi-label probe needs at least one label with 2 or more positive and 1 negative "
                                 "clips; label more clips")
        y, classes = y[:, keep], [str(c) for c in mlb.classes_[keep]]
        pipe = Pipeline([("scale", StandardScaler()), ("lr", OneVsRestClassifier(lr))])
        grid = {"lr__estimator__C": list(c_grid)}
        scoring, metric, cv = "average_precision", "mAP", _inner_cv(None, len(y), folds, seed)
    else:
        y = np.asarray([str(v) for v in labels], dtype=object)
        classes = sorted(set(y))
        if len(classes) < 2:
            raise SimsearchError(f"a probe needs at least 2 different labels; found {len(classes)} "
                                 f"({', '.join(classes) or 'none'}); label more clips")
        pipe = Pipeline([("scale", StandardScaler()), ("lr", lr)])
        grid = {"lr__C": list(c_grid)}
        scoring, metric, cv = "accuracy", "accuracy", _inner_cv(y, len(y), folds, seed)
    search = GridSearchCV(pipe, grid, scoring=scoring, cv=cv, n_jobs=n_jobs, refit=True)
    # These matrices are small: one BLAS thread is as fast, and far faster when other work shares the cores.
    with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
        # Small classes (fewer members than folds) and labels absent from a fold are expected here.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        search.fit(x, y)
    best = search.best_estimator_
    scaler, head = best.named_steps["scale"], best.named_steps["lr"]
    if multi_label:
        coef = np.stack([e.coef_[0] for e in head.estimators_])
        intercept = np.array([e.intercept_[0] for e in head.estimators_])
    else:
        coef, intercept = head.coef_, head.intercept_
        classes = [str(c) for c in head.classes_]
    c_key = next(iter(grid))
    meta = {
        "C": float(search.best_params_[c_key]),
        "cv_metric": metric,
        "cv_score": float(search.best_score_),
        "cv_folds": int(cv.get_n_splits()),
        "cv_grid": {str(c): float(s) for c, s in zip(grid[c_key], search.cv_results_["mean_test_score"])},
        "n_train": int(len(x)),
    }
    return Probe(classes, scaler.mean_.astype(np.float32), scaler.scale_.astype(np.float32),
                 np.asarray(coef, np.float32), np.asarray(intercept, np.float32), multi_label, meta)


def save_probe(probe: Probe, folder: str | Path, extra_meta: dict | None = None) -> Path:
    """Write folder/probe.npz (arrays) and folder/probe.json (classes, settings, scores); returns the .npz path."""
    folder = Path(folder)
    buf = io.BytesIO()
    np.savez(buf, mean=probe.mean, scale=probe.scale, coef=probe.coef, intercept=probe.intercept,
             **(probe.attention or {}))
    meta = {**probe.meta, **(extra_meta or {}), "format": PROBE_FORMAT, "classes": list(probe.classes),
            "pooling": probe.pooling,
            "multi_label": bool(probe.multi_label), "dim": probe.dim,
            "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    atomic_write_bytes(folder / PROBE_WEIGHTS, lambda f: f.write(buf.getvalue()))
    atomic_write_text(folder / PROBE_META, json.dumps(meta, indent=2, sort_keys=True))
    return folder / PROBE_WEIGHTS


def load_probe(folder: str | Path) -> Probe:
    """Read a probe saved by save_probe; arrays are loaded with allow_pickle=False."""
    folder = Path(folder)
    wpath, mpath = folder / PROBE_WEIGHTS, folder / PROBE_META
    if not wpath.is_file() or not mpath.is_file():
        raise SimsearchError(f"{folder} has no trained probe ({PROBE_WEIGHTS} + {PROBE_META}); "
                             f"train one with `simsearch probe {folder}`")
    try:
        meta = json.loads(mpath.read_text())
        with np.load(wpath, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("mean", "scale", "coef", "intercept")}
            attention = {k: z[k] for k in z.files if k.startswith("attn_")} or None
    except (ValueError, KeyError, OSError) as e:
        raise SimsearchError(f"{folder}: unreadable probe ({e}); retrain it with `simsearch probe {folder}`") from None
    if meta.get("format") != PROBE_FORMAT:
        raise SimsearchError(f"{mpath}: probe format {meta.get('format')} is not {PROBE_FORMAT}; "
                             f"retrain it with `simsearch probe {folder}`")
    return Probe(list(meta["classes"]), arrays["mean"], arrays["scale"], arrays["coef"], arrays["intercept"],
                 bool(meta["multi_label"]), meta, attention if meta.get("pooling") == "attention" else None)


def classify_probe(index: "Index", vector: np.ndarray, windows: np.ndarray | None = None) -> list[dict]:
    """Label scores from the probe saved in the index folder; an attention probe pools `windows` (the clip's window
    embeddings) when given, else reads the clip's pooled vector as a file of one window."""
    probe = load_probe(index.dir.root)
    if probe.meta.get("encoder") not in (None, index.info["encoder"]["name"]):
        raise SimsearchError(f"the probe in {index.dir.root} was trained on {probe.meta['encoder']} embeddings; "
                             f"retrain it with `simsearch probe {index.dir.root}`")
    if windows is not None:
        return _ranked(probe.classes, probe.scores_windows(windows))
    return _ranked(probe.classes, probe.scores(vector)[0])


def labelled_bags(index: "Index", multi_label: bool = False, sep: str = LABEL_SEP) -> tuple[np.ndarray, list, list]:
    """(paths, window embeddings [T_i, D] per labelled file, labels), files in first-seen order."""
    paths, _, labels = labelled_files(index, multi_label, sep)
    rows = index.rows["path"].to_numpy()
    emb = index.embeddings()
    where = {p: i for i, p in enumerate(paths)}
    members: list[list[int]] = [[] for _ in paths]
    for r, p in enumerate(rows):
        if p in where:
            members[where[p]].append(r)
    return paths, [emb[m] for m in members], labels


def train_probe(index: "Index", multi_label: bool = False, sep: str = LABEL_SEP, folds: int = 5, seed: int = 0,
                pooling: str = "mean"):
    """Fit a probe on the index's labelled files and save it in the index folder: the linear layer reads each file's
    mean window vector (pooling="mean") or a gated attention pooling of its windows trained with it ("attention")."""
    if pooling not in PROBE_POOLINGS:
        raise SimsearchError(f"probe pooling must be one of {', '.join(PROBE_POOLINGS)}, not {pooling!r}")
    if pooling == "attention":
        paths, bags, labels = labelled_bags(index, multi_label, sep)
        probe = fit_attention_probe(bags, labels, multi_label=multi_label, seed=seed)
    else:
        paths, vecs, labels = labelled_files(index, multi_label, sep)
        probe = fit_probe(vecs, labels, multi_label=multi_label, folds=folds, seed=seed)
    extra = {"encoder": index.info["encoder"]["name"], "index_generation": index.info.get("generation"),
             "n_files": int(len(paths)), "label_sep": sep if multi_label else None}
    save_probe(probe, index.dir.root, extra)
    probe.meta.update(extra)
    return probe

