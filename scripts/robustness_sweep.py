"""Compare clip-vector recipes for robustness without re-embedding: cache frame-level outputs once.

For one encoder and loudness setting, embed the originals and every perturbed copy of a labelled set
(simsearch.robustness), keep each window's frames (e.g. YAMNet's 1024-d patch embeddings) in an .npz
cache, then score recipes that only change how frames become a clip vector (mean, mean+std, GeM,
normalised frames, ...). Used to choose the defaults recorded in docs/benchmarks.md.

    python scripts/robustness_sweep.py ../shared/data/sonic-pi --label-regex '^([a-z]+)_' \
        --encoder yamnet --loudness -20 --cache /tmp/robust-cache
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from simsearch import faiss_index
from simsearch.audio import resample, split_windows
from simsearch.encoders import get_encoder
from simsearch.perturb import PERTURBATIONS, perturb
from simsearch.robustness import clip_seed, load_clips, pick_items, recovery


def capture_frames(enc, waves, rates, window_s=10.0, batch_size=16):
    """Per clip: list of per-window frame arrays [T, D], via the encoder's real embed_batch path."""
    owner, pending = [], []
    for i, (x, sr) in enumerate(zip(waves, rates)):
        for w in split_windows(resample(x, sr, enc.sample_rate), enc.sample_rate, window_s):
            owner.append(i)
            pending.append(w.samples)
    got = []
    real = enc.embed_frames

    def spy(batch):
        out = real(batch)
        got.extend(out.frames[b, out.mask[b]] for b in range(len(batch)))
        return out

    enc.embed_frames = spy
    try:
        for s in range(0, len(pending), batch_size):
            enc.embed_batch(pending[s:s + batch_size])
    finally:
        enc.embed_frames = real
    per_clip = [[] for _ in waves]
    for i, f in zip(owner, got):
        per_clip[i].append(f.astype(np.float32))
    return per_clip


def pool(frames: np.ndarray, recipe: str) -> np.ndarray:
    """One window's frames [T, D] -> vector, by recipe."""
    f = frames
    if recipe.startswith("fn-"):  # L2-normalise each frame first
        f = faiss_index.normalize(f)
        recipe = recipe[3:]
    mean = f.mean(axis=0)
    if recipe == "mean":
        return mean
    if recipe == "meanstd":
        return np.concatenate([mean, f.std(axis=0)])
    if recipe == "meanstd-n":  # mean and std halves normalised separately
        return np.concatenate([faiss_index.normalize(mean[None])[0], faiss_index.normalize(f.std(axis=0)[None])[0]])
    if recipe == "max":
        return f.max(axis=0)
    if recipe == "meanmax":
        return np.concatenate([faiss_index.normalize(mean[None])[0], faiss_index.normalize(f.max(axis=0)[None])[0]])
    if recipe.startswith("gem"):
        p = float(recipe[3:] or 3)
        g = np.maximum(f, 0) + 1e-6
        return (g ** p).mean(axis=0) ** (1 / p)
    if recipe == "sqrt":  # power-normalised mean (Hellinger-like)
        return np.sqrt(np.maximum(mean, 0))
    raise ValueError(recipe)


def clip_vectors(per_clip, recipe: str, center: np.ndarray | None = None) -> np.ndarray:
    out = []
    for wins in per_clip:
        v = faiss_index.normalize(np.stack([pool(w, recipe) for w in wins]))
        out.append(v.mean(axis=0))
    x = faiss_index.normalize(np.stack(out))
    return faiss_index.normalize(x - center) if center is not None else x


def classify(per_clip, labels, paths, args) -> int:
    """kNN-1, kNN-10 and probe accuracy (+ LOO mAP) per recipe, with evaluate.py's functions."""
    from simsearch.classify import knn_scores
    from simsearch.evaluate import LabelledSet, Split, evaluate_set, make_splits

    n = len(labels)
    if args.classify == "loo":
        splits = [Split(np.delete(np.arange(n), i), np.array([i])) for i in range(n)]
    elif args.classify == "kfold":
        splits, _ = make_splits(paths, labels, 5, seed=args.seed)
    else:
        splits, _ = make_splits(paths, labels, test_regex=args.classify)
    print(f"## classify {args.src} ({n} files, {args.classify}, loudness {args.loudness})")
    print("| recipe | kNN-1 | kNN-10 | probe | mAP (LOO) |")
    print("|---|---:|---:|---:|---:|")
    for recipe in args.recipes.split(","):
        for centred in (False, True):
            x = clip_vectors(per_clip, recipe)
            if centred:
                x = faiss_index.normalize(x - x.mean(axis=0))
            data = LabelledSet(np.asarray(paths, dtype=object), x, np.asarray(labels, dtype=object))
            r1 = evaluate_set(recipe, data, splits, k=1, seed=args.seed)
            pred = []
            for sp in splits:
                kc, ks = knn_scores(x[sp.test], x[sp.train], [[labels[i]] for i in sp.train], 10)
                pred.append(np.asarray(kc, dtype=object)[ks.argmax(axis=1)])
            truth = np.concatenate([np.asarray(labels, dtype=object)[sp.test] for sp in splits])
            knn10 = float((np.concatenate(pred) == truth).mean())
            m = r1.metrics
            print(f"| {recipe}{' +centre' if centred else ''} | {m['knn_accuracy']:.3f} | {knn10:.3f} | "
                  f"{m['probe_accuracy']:.3f} | {m['map']:.3f} |", flush=True)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src")
    p.add_argument("--label-regex")
    p.add_argument("--encoder", default="yamnet")
    p.add_argument("--loudness", type=float)
    p.add_argument("--limit", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default="/tmp/robust-cache")
    p.add_argument("--recipes", default="mean,meanstd,gem3,fn-mean,fn-meanstd,max,meanmax")
    p.add_argument("--classify", help="kNN-1/probe instead of robustness: 'loo', 'kfold' or a test regex")
    args = p.parse_args(argv)

    tag = f"{Path(args.src).name}-{args.encoder}-{args.loudness}-{args.limit}-{args.seed}"
    names = ["clean"] if args.classify and args.limit is None else ["clean", *PERTURBATIONS]
    cache = Path(args.cache) / f"{tag}{'-clean' if names == ['clean'] else ''}.npz"
    alt = Path(args.cache) / f"{tag}.npz"
    if not cache.exists() and alt.exists():
        cache = alt
    if cache.exists():
        z = np.load(cache, allow_pickle=True)
        data, labels = z["data"].item(), list(z["labels"])
        paths = list(z["paths"]) if "paths" in z else None
    else:
        items = pick_items(args.src, args.label_regex, args.limit, args.seed)
        clips, errors = load_clips(items, 120.0)
        labels = [c.label for c in clips]
        paths = [c.path for c in clips]
        rates = [c.sample_rate for c in clips]
        enc = get_encoder(args.encoder, None, "cpu", loudness=args.loudness)
        data = {}
        for name in names:
            waves = [c.samples if name == "clean" else perturb(name, c.samples, c.sample_rate, clip_seed(args.seed, i, name))
                     for i, c in enumerate(clips)]
            data[name] = capture_frames(enc, waves, rates)
            print(f"embedded {name}", file=sys.stderr, flush=True)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, data=np.array(data, dtype=object), labels=np.array(labels), paths=np.array(paths))
    if args.classify:
        return classify(data["clean"], labels, paths, args)
    print(f"## {tag}: {len(labels)} clips")
    print("| recipe | " + " | ".join(names[1:]) + " | mean | min | clean mAP | mean mAP |")
    print("|---|" + "---:|" * (len(names) + 3))
    for recipe in args.recipes.split(","):
        for centred in (False, True):
            orig = clip_vectors(data["clean"], recipe)
            center = orig.mean(axis=0) if centred else None
            if centred:
                orig = faiss_index.normalize(orig - center)
            rows = {n: recovery(orig, clip_vectors(data[n], recipe, center), labels) for n in names}
            r1 = [rows[n]["rank1"] for n in names[1:]]
            mp = [rows[n]["map"] for n in names[1:]]
            label = recipe + (" +centre" if centred else "")
            print(f"| {label} | " + " | ".join(f"{v:.2f}" for v in r1)
                  + f" | **{np.mean(r1):.3f}** | {np.min(r1):.2f} | {rows['clean']['map']:.3f} | {np.mean(mp):.3f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
