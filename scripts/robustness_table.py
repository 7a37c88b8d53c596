"""Before/after table for docs/benchmarks.md: perturbation recovery and kNN-1 / probe accuracy per configuration.

Each configuration is an encoder plus options (pooling, loudness, trim, bandwidth, noise_twin, room_twin, fingerprint) as
`simsearch index` would record them. For each data set it reports, through the same embedding path as a search query:

* robustness (simsearch.evaluation.robustness) on a seeded subset: rank-1 recovery and label mAP per perturbation;
* kNN-1, kNN-10 and linear-probe accuracy on the whole set with simsearch.evaluation.compare's functions:
  FSDD with takes 0-4 as the test set (`--test-regex '_[0-4]\\.wav$'`), Sonic Pi leave-one-out for kNN
  and stratified 5-fold for the probe (a probe per held-out clip would take hours here).

    python scripts/robustness_table.py --out /tmp/robust-table \
        --config 'before=yamnet:loudness=off,pooling=mean' --config 'after=yamnet'

Configurations: NAME=ENCODER[:key=value,...] (keys: pooling, loudness, trim, bandwidth, noise_twin, room_twin, fingerprint,
backend: one name, e.g. backend=onnx-s8); a key left out takes `simsearch index`'s default
(IndexOptions), `loudness=off` / `trim=off` switch those off, `fingerprint=off` ranks by cosine alone (an index
made with --no-fingerprint), `fingerprint=pairs|triplets|both` picks the landmark kind (--landmarks).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from simsearch.audio import landmark_kinds
from simsearch.encoders import get_encoder
from simsearch.evaluation.compare import LabelledSet, Split, evaluate_set, make_splits
from simsearch.evaluation.robustness import (
    RobustnessResult,
    RobustnessRun,
    embed_clips,
    load_clips,
    markdown_table,
    perturbation_names,
    pick_items,
    run_robustness,
)
from simsearch.indexing.options import IndexOptions

ROOT = Path(__file__).resolve().parents[1]
SETS = {
    "fsdd": {"src": ROOT.parent / "shared/data/fsdd/recordings", "regex": r"^(\d)_", "limit": 300,
             "classify": r"_[0-4]\.wav$"},
    "sonic-pi": {"src": ROOT.parent / "shared/data/sonic-pi", "regex": r"^([a-z]+)_", "limit": None,
                 "classify": "loo"},
}


def parse_config(text: str) -> tuple[str, str, dict, str | None]:
    """'after=yamnet:pooling=meanstd,loudness=-20,fingerprint=off' -> ('after', 'yamnet', encoder options as index
    records them, the landmark kind search uses or None for cosine alone)."""
    name, _, rest = text.partition("=")
    encoder, _, opts = rest.partition(":")
    kv = dict(p.split("=", 1) for p in opts.split(",") if p)
    io = IndexOptions(encoder=encoder, pooling=kv.pop("pooling", None), loudness=kv.pop("loudness", None),
                      trim=kv.pop("trim", None), bandwidth=kv.pop("bandwidth", None),
                      noise_twin=kv.pop("noise_twin", None), room_twin=kv.pop("room_twin", None), backend=kv.pop("backend", None))
    kind = kv.pop("fingerprint", "on")
    landmarks = None if kind == "off" else landmark_kinds.DEFAULT if kind == "on" else kind
    if landmarks is not None:
        landmark_kinds.module(landmarks)  # an unknown kind stops here, before any work
    if kv:
        raise SystemExit(f"unknown option(s) {sorted(kv)} in {text!r}")
    return name, encoder, io.encoder_options(), landmarks


def classify(enc, set_name: str, spec: dict, cache: Path) -> dict:
    """kNN-1 / kNN-10 / probe accuracy and LOO mAP on the whole set, file vectors cached in `cache`."""
    items = pick_items(spec["src"], spec["regex"], None, 0)
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        x, paths, labels = z["x"], list(z["paths"]), list(z["labels"])
    else:
        clips, _ = load_clips(items, 120.0)
        x = embed_clips(enc, [c.samples for c in clips], [c.sample_rate for c in clips])
        paths, labels = [c.path for c in clips], [c.label for c in clips]
        np.savez(cache, x=x, paths=np.array(paths), labels=np.array(labels))
    data = LabelledSet(np.asarray(paths, dtype=object), x, np.asarray(labels, dtype=object))
    n = len(labels)
    out = {"n_files": n}
    if spec["classify"] == "loo":
        loo = [Split(np.delete(np.arange(n), i), np.array([i])) for i in range(n)]
        kfold, how = make_splits(paths, labels, 5, seed=0)
        out["knn1"] = _knn_only(data, loo, 1)
        out["knn10"] = _knn_only(data, loo, 10)
        m = evaluate_set(set_name, data, kfold, k=1, seed=0).metrics
        out["probe"], out["map"], out["splits"] = m["probe_accuracy"], m["map"], f"kNN leave-one-out; probe {how}"
    else:
        splits, how = make_splits(paths, labels, test_regex=spec["classify"])
        m = evaluate_set(set_name, data, splits, k=1, seed=0).metrics
        out["knn1"], out["probe"], out["map"], out["splits"] = m["knn_accuracy"], m["probe_accuracy"], m["map"], how
        out["knn10"] = _knn_only(data, splits, 10)
    return out


def _knn_only(data: LabelledSet, splits: list[Split], k: int) -> float:
    from simsearch.classify.knn import knn_scores

    hits = []
    for sp in splits:
        classes, scores = knn_scores(data.x[sp.test], data.x[sp.train], [[v] for v in data.labels[sp.train]], k)
        hits.append(np.asarray(classes, dtype=object)[scores.argmax(axis=1)] == data.labels[sp.test])
    return float(np.concatenate(hits).mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", action="append", required=True, help="NAME=ENCODER[:key=value,...] (repeat)")
    p.add_argument("--sets", default="sonic-pi,fsdd")
    p.add_argument("--perturbations", help="comma-separated names or groups (default: the everyday group; "
                                           "the mixes take FSDD speech and Sonic Pi music)")
    p.add_argument("--no-classify", action="store_true")
    p.add_argument("--no-robustness", action="store_true", help="kNN / probe only")
    p.add_argument("--out", default="/tmp/robust-table")
    args = p.parse_args(argv)
    out = Path(args.out)
    (out / "cache").mkdir(parents=True, exist_ok=True)
    perts = perturbation_names(args.perturbations.split(",")) if args.perturbations else None
    report = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    for text in args.config:
        name, encoder, options, landmarks = parse_config(text)
        fingerprint = landmarks is not None
        enc = get_encoder(encoder, None, "cpu", **options)
        for set_name in args.sets.split(","):
            spec = SETS[set_name]
            key = f"{set_name}/{name}"
            entry = report.get(key, {})
            if (entry.get("options") != options or entry.get("fingerprint", True) != fingerprint
                    or entry.get("landmarks", landmark_kinds.DEFAULT) != (landmarks or landmark_kinds.DEFAULT)):
                entry = {"options": options, "encoder": encoder, "fingerprint": fingerprint, "landmarks": landmarks}
            t = time.time()
            if not args.no_robustness and ("rows" not in entry or (perts and not set(perts) <= set(entry["rows"]))):
                run = RobustnessRun(encoder=encoder, options=options, label_regex=spec["regex"], limit=spec["limit"],
                                    perturbations=perts, seed=0, progress=False, fingerprint=fingerprint,
                                    landmarks=landmarks or landmark_kinds.DEFAULT,
                                    speech=str(SETS["fsdd"]["src"]), music=str(SETS["sonic-pi"]["src"]))
                r = run_robustness(spec["src"], run, enc=enc)
                entry.update(rows=r.rows, info={k: v for k, v in r.info.items() if k != "errors"})
            if not args.no_classify and "classify" not in entry:
                tag = "-".join(f"{k}{v}" for k, v in sorted(options.items()))
                entry["classify"] = classify(enc, set_name, spec, out / "cache" / f"{set_name}-{encoder}-{tag}.npz")
            report[key] = entry
            (out / "results.json").write_text(json.dumps(report, indent=2, default=str))
            print(f"{key}: {time.time() - t:.0f} s", file=sys.stderr, flush=True)
    print(render(report))
    (out / "tables.md").write_text(render(report))
    return 0


def render(report: dict) -> str:
    """Markdown: per set, the perturbation table across configurations, then kNN / probe."""
    lines = []
    for set_name in dict.fromkeys(k.split("/")[0] for k in report):
        entries = {k.split("/", 1)[1]: v for k, v in report.items() if k.startswith(set_name + "/")}
        results = {n: RobustnessResult(e["rows"], e.get("info", {})) for n, e in entries.items() if "rows" in e}
        info = next((e["info"] for e in entries.values() if "info" in e), {})
        lines += [f"### {set_name}: {info.get('n_clips')} clips for the perturbation table", ""]
        if results:
            loo = ", ".join(f"{n} {r.rows['clean']['loo_p1']:.3f}" for n, r in results.items()
                            if "loo_p1" in r.rows["clean"])
            lines += [markdown_table(results), ""]
            if loo:
                lines += [f"Leave-one-out P@1 of the originals, ranked as search ranks them: {loo}", ""]
        cls = {n: e["classify"] for n, e in entries.items() if "classify" in e}
        if cls:
            first = next(iter(cls.values()))
            lines += [f"Classification on all {first['n_files']} files ({first['splits']}):", "",
                      "| configuration | options | kNN-1 | kNN-10 | probe | mAP (LOO) |", "|---|---|---:|---:|---:|---:|"]
            for n, c in cls.items():
                opts = ", ".join(f"{k}={v}" for k, v in entries[n]["options"].items())
                lines.append(f"| {n} | {entries[n]['encoder']} {opts} | {c['knn1']:.3f} | {c['knn10']:.3f} | "
                             f"{c['probe']:.3f} | {c['map']:.3f} |")
            lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
