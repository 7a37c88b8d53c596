"""Does collection whitening help kNN only because the map saw the test clips? kNN with the map fitted on the
training folds only, on the whole collection (what `simsearch index` does, no labels read), and without whitening.

    .venv/bin/python scripts/whitening_folds.py --sets notes,chords,drums,fsdd,sonicpi \\
        --encoders 'yamnet+aisfx+basic-pitch,whiten(yamnet)+whiten(aisfx)+basic-pitch*3'

Parts come from scripts/music_eval.py's cache (run it, or scripts/music_table.sh, once); file vectors are the mean of
a file's normalised windows, so the maps here are fitted on file vectors (the index fits on windows; the music sets
have one window a file).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score

sys.path.insert(0, str(Path(__file__).parent))
import music_eval  # noqa: E402

from simsearch.encoders import whitening  # noqa: E402
from simsearch.encoders.fusion import parse_part  # noqa: E402
from simsearch.evaluation.compare import knn_predict, labelled_set, make_splits  # noqa: E402
from simsearch.indexing.sources import collect  # noqa: E402
from simsearch.vectors import normalize  # noqa: E402


def knn_accuracy(parts: list[tuple[np.ndarray, bool, float]], labels: np.ndarray, splits, fit_on: str) -> float:
    """kNN accuracy over the folds of the fused file vectors; whitened parts fitted per `fit_on`."""
    whole = {i: whitening.fit(x) for i, (x, white, _) in enumerate(parts) if white and fit_on == "collection"}
    y_true, y_pred = [], []
    for sp in splits:
        fused = []
        for i, (x, white, share) in enumerate(parts):
            if white and fit_on != "none":
                w = whole.get(i) or whitening.fit(x[sp.train])
                x = w.apply(x)
            fused.append(np.sqrt(share) * x)
        x = normalize(np.concatenate(fused, axis=1))
        y_pred.append(knn_predict(x[sp.test], x[sp.train], labels[sp.train], 10))
        y_true.append(labels[sp.test])
    return float(accuracy_score(np.concatenate(y_true), np.concatenate(y_pred)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/tmp/music_data")
    ap.add_argument("--work", default="/tmp/music_eval")
    ap.add_argument("--sets", default="notes,chords,drums")
    ap.add_argument("--encoders", default="whiten(yamnet)+whiten(aisfx)+basic-pitch*3")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(args.work)
    music_eval.fsdd_subset(work)
    all_sets = music_eval.sets(Path(args.data), work)
    print("| set | encoder | kNN, no whitening | kNN, map fitted on training folds | kNN, map fitted on the collection |")
    print("|---|---|---:|---:|---:|")
    for set_name in args.sets.split(","):
        ms = all_sets[set_name]
        rows = music_eval.SetRows(set_name, ms, work)
        label_of = {it.path: it.label for it in collect(ms.src, ms.label_regex)[0]}
        for name in music_eval.split_top(args.encoders):
            texts = name.split("+")
            parsed = [parse_part(t, name) for t in texts]
            total = sum(w for _, w in parsed)
            vectors = [rows.part(n) for n, _ in parsed]
            files = [labelled_set(rows.paths, v, label_of.get) for v in vectors]
            parts = [(f.x, whitening.marked(t), w / total) for f, t, (_, w) in zip(files, texts, parsed)]
            splits, _ = make_splits(files[0].paths, files[0].labels, 5, ms.fold_regex)
            acc = [knn_accuracy(parts, files[0].labels, splits, fit) for fit in ("none", "train", "collection")]
            print(f"| {set_name} | `{name}` | " + " | ".join(f"{a:.3f}" for a in acc) + " |", flush=True)


if __name__ == "__main__":
    main()
