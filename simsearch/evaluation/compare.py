"""Evaluation harness: embed a labelled collection with several encoders, then k-fold kNN / probe / retrieval.

Everything is per file: a file's windows are averaged (normalised mean, as a query is), so one
file never sits on both sides of a split. Classes with a single file are left out (they can be
neither trained on and tested nor retrieved); classes with fewer files than folds keep one file
per fold for as many folds as they have files (stratified k-fold), so each file is still tested
with the class's other files in training.
"""
from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import pandas as pd

from simsearch.classify.knn import KNN_K, file_vectors, knn_scores
from simsearch.classify.probe import fit_attention_probe, fit_probe
from simsearch.errors import SimsearchError
from simsearch.indexing.options import IndexOptions
from simsearch.vectors import normalize

if TYPE_CHECKING:
    from simsearch.classify.finetune import FinetuneSettings

log = logging.getLogger(__name__)
RETRIEVAL_AT = 10


@dataclass
class LabelledSet:
    """One encoder's file-level view of a collection: paths, vectors [F, D], labels."""

    paths: np.ndarray
    x: np.ndarray
    labels: np.ndarray
    unlabelled: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # classes left out -> their file count

    def class_counts(self) -> dict[str, int]:
        names, counts = np.unique(self.labels, return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts)}


@dataclass
class Split:
    """Train and test file indices for one fold."""

    train: np.ndarray
    test: np.ndarray


@dataclass
class EncoderResult:
    """Out-of-fold predictions and the metrics computed from them for one encoder."""

    name: str
    classes: list[str]
    y_true: np.ndarray
    knn_pred: np.ndarray
    probe_pred: np.ndarray
    metrics: dict


def labelled_set(paths: Sequence[str], embeddings: np.ndarray, label_of: Callable[[str], str | None]) -> LabelledSet:
    """File-level vectors with labels; unlabelled files and classes with one file are set aside."""
    fpaths, x = file_vectors(paths, embeddings)
    labels = np.array([label_of(p) for p in fpaths], dtype=object)
    has = np.array([v is not None and str(v) != "" for v in labels], dtype=bool)
    fpaths, x, labels = fpaths[has], x[has], labels[has].astype(str).astype(object)
    names, counts = np.unique(labels, return_counts=True)
    single = {str(n): int(c) for n, c in zip(names, counts) if c < 2}
    keep = ~np.isin(labels, list(single))
    if keep.sum() == 0 or len(set(labels[keep])) < 2:
        raise SimsearchError(f"evaluation needs at least 2 classes with 2 or more labelled files each; found "
                             f"{len(set(labels[keep]))} (of {int(has.sum())} labelled files); check --label-regex")
    return LabelledSet(fpaths[keep], x[keep], labels[keep], int((~has).sum()), single)


def _natural_key(v: str):
    return (0, int(v), v) if v.isdigit() else (1, 0, v)


def make_splits(paths: Sequence[str], labels: Sequence[str], folds: int = 5, fold_regex: str | None = None,
                test_regex: str | None = None, seed: int = 0) -> tuple[list[Split], str]:
    """Folds from a regex over file names, a fixed test regex, or stratified k-fold; plus a description."""
    names = [Path(p).name for p in paths]
    n = len(names)
    if fold_regex and test_regex:
        raise SimsearchError("give --fold-regex or --test-regex, not both")
    if test_regex:
        pat = _compile(test_regex, "--test-regex")
        test = np.array([bool(pat.search(s)) for s in names])
        if test.all() or not test.any():
            raise SimsearchError(f"--test-regex {test_regex!r} matches {int(test.sum())} of {n} files; "
                                 "it must pick some files for testing and leave some for training")
        return ([Split(np.flatnonzero(~test), np.flatnonzero(test))],
                f"fixed split: {int(test.sum())} test files match {test_regex!r}, {int((~test).sum())} train")
    if fold_regex:
        pat = _compile(fold_regex, "--fold-regex")
        keys = []
        for s in names:
            m = pat.search(s)
            if not m:
                raise SimsearchError(f"{s} does not match --fold-regex {fold_regex!r}; every file needs a fold key")
            keys.append(m.group(1) if m.groups() else m.group(0))
        uniq = sorted(set(keys), key=_natural_key)
        if len(uniq) < 2:
            raise SimsearchError(f"--fold-regex {fold_regex!r} gives one fold key ({uniq[0]}); need 2 or more")
        k = min(folds, len(uniq))
        fold_of = {key: i % k for i, key in enumerate(uniq)}
        fid = np.array([fold_of[s] for s in keys])
        splits = [Split(np.flatnonzero(fid != f), np.flatnonzero(fid == f)) for f in range(k)]
        how = "one fold per key" if k == len(uniq) else f"key number mod {k}"
        return splits, f"{k} folds from {fold_regex!r} over file names ({len(uniq)} keys, {how})"
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    _, counts = np.unique(labels, return_counts=True)
    k = max(2, min(int(folds), int(counts.max())))
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has fewer members than n_splits"
        splits = [Split(tr, te) for tr, te in skf.split(np.zeros(n), labels)]
    small = int((counts < k).sum())
    note = f"; {small} classes have fewer files than folds (one file per fold while they last)" if small else ""
    return splits, f"stratified {k}-fold, seed {seed}{note}"


def _compile(pattern: str, flag: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise SimsearchError(f"{flag} {pattern!r} is not a valid regular expression ({e})") from None


def retrieval_metrics(x: np.ndarray, labels: Sequence[str], at: int = RETRIEVAL_AT) -> tuple[float, float]:
    """Leave-one-out retrieval over all files: (mean average precision, precision@at); relevant = same label."""
    aps, _, precs = query_retrieval(x, labels, np.arange(len(x)), at)
    return float(np.mean(aps)), float(np.mean(precs))


def query_retrieval(x: np.ndarray, labels: Sequence[str], queries: np.ndarray,
                    at: int = RETRIEVAL_AT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each query file against all other files: (average precision, P@1, P@at) per query; relevant = same label."""
    from sklearn.metrics import average_precision_score

    labels = np.asarray(labels)
    n = len(x)
    at = min(at, n - 1)
    aps, p1, precs = [], [], []
    for i in np.asarray(queries):
        others = np.arange(n) != i
        rel, s = labels[others] == labels[i], (x @ x[i])[others]
        aps.append(average_precision_score(rel, s))
        top = np.argpartition(-s, at - 1)[:at]
        precs.append(rel[top].mean())
        p1.append(float(rel[int(np.argmax(s))]))
    return np.asarray(aps), np.asarray(p1), np.asarray(precs)


def per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """Recall of each class (the share of its test files labelled correctly)."""
    return {c: float((y_pred[y_true == c] == c).mean()) for c in classes if (y_true == c).any()}


def confused_pairs(y_true: np.ndarray, y_pred: np.ndarray, top: int = 5) -> list[tuple[str, str, int]]:
    """The most frequent (true, predicted) mistakes, most first."""
    wrong = y_true != y_pred
    if not wrong.any():
        return []
    pairs, counts = np.unique(np.stack([y_true[wrong], y_pred[wrong]], axis=1).astype(str), axis=0,
                              return_counts=True)
    order = np.argsort(-counts, kind="stable")[:top]
    return [(str(pairs[i][0]), str(pairs[i][1]), int(counts[i])) for i in order]


def evaluate_set(name: str, data: LabelledSet, splits: list[Split], k: int = KNN_K, seed: int = 0,
                 probe_folds: int = 3) -> EncoderResult:
    """kNN and probe accuracy / macro-F1 over the splits' test files, plus leave-one-out retrieval."""
    classes = sorted(set(data.labels))
    y_true, knn_pred, probe_pred, cs = [], [], [], []
    for sp in splits:
        xtr, ytr, xte = data.x[sp.train], data.labels[sp.train], data.x[sp.test]
        knn_pred.append(knn_predict(xte, xtr, ytr, k))
        probe = fit_probe(xtr, ytr, folds=probe_folds, seed=seed)
        probe_pred.append(probe.predict(xte))
        cs.append(probe.meta["C"])
        y_true.append(data.labels[sp.test])
    aps, p1, p_at = query_retrieval(data.x, data.labels, np.arange(len(data.x)))
    result = _result(name, classes, y_true, knn_pred, probe_pred, (aps, p1, p_at), data.x.shape[1], k)
    result.metrics.update(probe_C=cs, rung="frozen")
    return result


def window_bags(paths: Sequence[str], embeddings: np.ndarray, files: Sequence[str]) -> list[np.ndarray]:
    """Each file's normalised window embeddings [T_i, D], in `files` order: what an attention probe reads."""
    codes, uniques = pd.factorize(pd.Series(list(paths)))
    x = normalize(np.asarray(embeddings, np.float32))
    at = {p: j for j, p in enumerate(uniques)}
    return [x[codes == at[f]] for f in files]


def evaluate_attention(name: str, data: LabelledSet, bags: list[np.ndarray], splits: list[Split], k: int = KNN_K,
                       seed: int = 0) -> EncoderResult:
    """The attention-pooling rung: on the same files and splits, the probe is gated attention over each file's
    windows trained with the linear layer (simsearch probe --pooling attention); kNN and retrieval stay the mean's."""
    classes = sorted(set(data.labels))
    y_true, knn_pred, probe_pred = [], [], []
    for sp in splits:
        probe = fit_attention_probe([bags[i] for i in sp.train], list(data.labels[sp.train]), seed=seed)
        scores = [probe.scores_windows(bags[i]) for i in sp.test]
        probe_pred.append(np.array([probe.classes[int(np.argmax(v))] for v in scores], dtype=object))
        knn_pred.append(knn_predict(data.x[sp.test], data.x[sp.train], data.labels[sp.train], k))
        y_true.append(data.labels[sp.test])
    retrieval = query_retrieval(data.x, data.labels, np.arange(len(data.x)))
    result = _result(f"{name} (attention pooling)", classes, y_true, knn_pred, probe_pred, retrieval,
                     data.x.shape[1], k)
    result.metrics.update(probe_C=[], rung="attention", base_encoder=name)
    return result


def knn_predict(xte: np.ndarray, xtr: np.ndarray, ytr: np.ndarray, k: int) -> np.ndarray:
    """The label with the most kNN weight for each test vector."""
    kc, ks = knn_scores(xte, xtr, [[v] for v in ytr], k)
    return np.asarray(kc, dtype=object)[ks.argmax(axis=1)]


def _result(name: str, classes: list[str], y_true: list, knn_pred: list, probe_pred: list,
            retrieval: tuple[np.ndarray, np.ndarray, np.ndarray], dim: int, k: int) -> EncoderResult:
    """Metrics from per-fold predictions (lists of arrays, one per fold) and per-query retrieval scores."""
    from sklearn.metrics import accuracy_score, f1_score

    def f1(t, p):
        return float(f1_score(t, p, average="macro", labels=classes, zero_division=0))

    folds = {"fold_knn_accuracy": [float(accuracy_score(t, p)) for t, p in zip(y_true, knn_pred)],
             "fold_probe_accuracy": [float(accuracy_score(t, p)) for t, p in zip(y_true, probe_pred)],
             "fold_macro_f1": [f1(t, p) for t, p in zip(y_true, probe_pred)]}
    y_true, knn_pred, probe_pred = (np.concatenate(v).astype(object) for v in (y_true, knn_pred, probe_pred))
    aps, p1, p_at = retrieval
    metrics = {
        "knn_accuracy": float(accuracy_score(y_true, knn_pred)),
        "probe_accuracy": float(accuracy_score(y_true, probe_pred)),
        "macro_f1": f1(y_true, probe_pred),
        "knn_macro_f1": f1(y_true, knn_pred),
        "map": float(np.mean(aps)),
        "p_at_10": float(np.mean(p_at)),
        "p_at_1": float(np.mean(p1)),
        "n_files": int(len(aps)),
        "n_test": int(len(y_true)),
        "n_classes": len(classes),
        "dim": int(dim),
        "k": int(k),
        **folds,
        "per_class_probe": per_class_accuracy(y_true, probe_pred, classes),
        "per_class_knn": per_class_accuracy(y_true, knn_pred, classes),
        "confused_probe": confused_pairs(y_true, probe_pred),
        "confused_knn": confused_pairs(y_true, knn_pred),
    }
    return EncoderResult(name, classes, y_true, knn_pred, probe_pred, metrics)


@dataclass(frozen=True)
class SplitPlan:
    """How files are split for cross-validation: folds from a regex over names, a fixed test regex, or stratified."""

    folds: int = 5
    fold_regex: str | None = None
    test_regex: str | None = None
    seed: int = 0


def embed_with(src: str | Path, cache: Path, options: IndexOptions) -> tuple[np.ndarray, np.ndarray]:
    """(row paths, row embeddings) of src under options.encoder, via the resumable indexer into `cache`."""
    from simsearch.indexing.job import run_index
    from simsearch.search.index import Index

    summary = run_index(src, cache, options)
    log.info("%s: %s", options.encoder, summary.line())
    index = Index.open(cache, device=options.device)
    return index.rows["path"].to_numpy(), index.embeddings()


def evaluate_finetune(src: str | Path, data: LabelledSet, splits: list[Split], out: Path, settings: "FinetuneSettings",
                      options: IndexOptions, k: int = KNN_K) -> EncoderResult:
    """The fine-tuned rung: per fold, fine-tune on the training files only (out/fold-N/checkpoint, resumable), index
    src with that checkpoint (the product's `index --checkpoint` path), then kNN and the head on the test files, and
    retrieval of each test file against all other files (as the frozen encoders' leave-one-out retrieval)."""
    from simsearch.classify.finetune import finetune_files, load_finetuned

    classes = sorted(set(data.labels))
    y_true, knn_pred, head_pred, metas, retrieval = [], [], [], [], []
    for f, sp in enumerate(splits):
        ckpt = out / f"fold-{f}" / "checkpoint"
        metas.append(finetune_files(list(data.paths[sp.train]), list(data.labels[sp.train]), ckpt,
                                    replace(settings, window_s=options.window_s or settings.window_s)))
        fine = replace(options, encoder=settings.encoder, checkpoint=str(ckpt), fingerprint=False, pooling=None,
                       layer=None, index_type=None)
        paths, emb = embed_with(src, out / f"fold-{f}" / "index", fine)
        fpaths, fx = file_vectors(paths, emb)
        x = fx[_positions(fpaths, data.paths)]
        knn_pred.append(knn_predict(x[sp.test], x[sp.train], data.labels[sp.train], k))
        head = load_finetuned(ckpt)
        head_pred.append(np.asarray(head.classes, dtype=object)[head.scores(x[sp.test]).argmax(axis=1)])
        y_true.append(data.labels[sp.test])
        retrieval.append(query_retrieval(x, data.labels, sp.test))
    result = _result(f"{settings.encoder}-finetuned", classes, y_true, knn_pred, head_pred,
                     tuple(np.concatenate(parts) for parts in zip(*retrieval)), x.shape[1], k)
    result.metrics.update(probe_C=[], rung="fine-tuned", base_encoder=settings.encoder,
                          finetune_wall_s=[m["wall_s"] for m in metas],
                          finetune_peak_rss_mb=[m["peak_rss_mb"] for m in metas],
                          finetune_peak_cuda_mb=[m["peak_cuda_mb"] for m in metas],
                          finetune_epochs_run=[m["epochs_run"] for m in metas],
                          finetune_settings={k: v for k, v in metas[0].items() if k in FINETUNE_KEYS})
    return result


FINETUNE_KEYS = ("epochs", "lr", "head_lr", "batch_size", "freeze", "augment", "crop_s", "seed", "device", "precision",
                 "base_checkpoint")


def _positions(have: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Positions of `want` in `have` (every wanted path must be there)."""
    import pandas as pd

    pos = pd.Index(have).get_indexer(want)
    if (pos < 0).any():
        raise SimsearchError(f"{int((pos < 0).sum())} files are missing from the fine-tuned index "
                             f"(e.g. {want[pos < 0][0]}); were they unreadable?")
    return pos


def run_eval(src: str | Path, encoders: Sequence[str], out: str | Path, options: IndexOptions | None = None,
             plan: SplitPlan = SplitPlan(), k: int = KNN_K,
             finetune: "FinetuneSettings | None" = None,
             attention: bool = False) -> tuple[dict[str, EncoderResult], dict]:
    """Embed src with each encoder (indexed as `options` say, cached under out/cache/ENCODER) and evaluate each on the
    same splits; with `finetune`, add the fine-tuned rung of that encoder (evaluated frozen too) on the same splits
    (out/finetune/ENCODER); with `attention`, each encoder's attention-pooling probe beside its mean one. Returns
    (results, run info)."""
    from simsearch.indexing.sources import collect

    options = options or IndexOptions()
    encoders = [e.strip() for e in encoders if e.strip()]
    if finetune is not None and finetune.encoder not in encoders:
        encoders.append(finetune.encoder)  # the rung is measured against the same encoder frozen
    if not encoders:
        raise SimsearchError("name at least one encoder: --encoders spectral,yamnet")
    items, _ = collect(src, options.label_regex)
    label_by_path = {it.path: it.label for it in items}
    out = Path(out)
    results: dict[str, EncoderResult] = {}
    info: dict = {"src": str(Path(src).absolute()), "label_regex": options.label_regex, "k": k, "seed": plan.seed}
    for name in encoders:
        ckpt = finetune.checkpoint if finetune is not None and name == finetune.encoder else options.checkpoint
        paths, emb = embed_with(src, out / "cache" / name, replace(options, encoder=name, checkpoint=ckpt))
        data = labelled_set(paths, emb, label_by_path.get)
        splits, how = make_splits(data.paths, data.labels, plan.folds, plan.fold_regex, plan.test_regex, plan.seed)
        info.setdefault("splits", how)
        info.setdefault("classes", data.class_counts())
        info.setdefault("dropped_classes", data.dropped)
        info.setdefault("unlabelled_files", data.unlabelled)
        log.info("%s: %d files, %s", name, len(data.labels), how)
        results[name] = evaluate_set(name, data, splits, k, plan.seed)
        if attention:  # the same encoder's windows pooled by trained attention instead of the mean
            rung = evaluate_attention(name, data, window_bags(paths, emb, data.paths), splits, k, plan.seed)
            results[rung.name] = rung
        if finetune is not None and name == finetune.encoder:
            rung = evaluate_finetune(src, data, splits, out / "finetune" / name, finetune, options, k)
            results[rung.name] = rung
    return results, info
