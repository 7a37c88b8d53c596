"""Write an evaluation as report.md (tables + a decision note drawn from the numbers), report.json and PNGs."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from simsearch.evaluation.compare import EncoderResult
from simsearch.files import atomic_write_text

BASELINE = "spectral"
SUMMARY_KEYS = ("knn_accuracy", "probe_accuracy", "macro_f1", "map", "p_at_10")
ENOUGH = 0.98  # best accuracy at or above this: frozen features are enough, fine-tuning has little to win
CLOSE = 0.90  # below this: frozen features are not enough
SMALL_CLASS = 30  # median files per class below this: too few clips to fine-tune on


def rank(results: dict[str, EncoderResult]) -> list[str]:
    """Encoders best first: probe accuracy, then kNN accuracy, then retrieval mAP."""
    return sorted(results, key=lambda n: tuple(-results[n].metrics[k] for k in ("probe_accuracy", "knn_accuracy",
                                                                                 "map")))


def _best_acc(m: dict) -> float:
    return max(m["probe_accuracy"], m["knn_accuracy"])


def _stderr(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1))


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def decision_note(results: dict[str, EncoderResult], baseline: str = BASELINE) -> list[str]:
    """Sentences drawn from the numbers: ranking, baseline, whether frozen features suffice, errors, fine-tuning,
    and, when the fine-tuned rung was run, what it bought and what it cost."""
    frozen = {n: r for n, r in results.items() if not _is_rung(r)}
    order = rank(frozen)
    rungs = [r for r in results.values() if _is_rung(r) and r.metrics["base_encoder"] in frozen]
    guess = _finetune_notes(frozen, order, baseline)
    notes = (_ranking_notes(frozen, order) + _baseline_notes(frozen, order, baseline)
             + _error_notes(frozen[order[0]], baseline) + ([f"From the frozen numbers alone: {guess[0]}"] if rungs
                                                           else guess))
    for r in rungs:
        notes += _rung_notes(r, frozen[r.metrics["base_encoder"]])
    for r in results.values():
        if r.metrics.get("rung") == "attention" and r.metrics["base_encoder"] in results:
            m, f = r.metrics, results[r.metrics["base_encoder"]].metrics
            notes.append(f"Attention pooling of {m['base_encoder']}'s windows: probe accuracy {m['probe_accuracy']:.3f} "
                         f"against {f['probe_accuracy']:.3f} for the mean of the windows, on the same splits "
                         f"({'better' if m['probe_accuracy'] > f['probe_accuracy'] else 'no better'}; it pays off "
                         "where a file's label is one short event among many windows).")
    return notes


def _is_rung(r: EncoderResult) -> bool:
    return r.metrics.get("rung") == "fine-tuned"


def _spread(values: Sequence[float]) -> float:
    """Standard deviation over folds (0 for a single split)."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _rung_notes(rung: EncoderResult, frozen: EncoderResult) -> list[str]:
    """What fine-tuning bought over the same encoder's frozen probe (paired per fold) and what it cost."""
    m, f = rung.metrics, frozen.metrics
    d_acc = np.subtract(m["fold_probe_accuracy"], f["fold_probe_accuracy"])
    d_f1 = np.subtract(m["fold_macro_f1"], f["fold_macro_f1"])
    sd = _spread(d_acc)
    n = len(d_acc)
    spread = f"the fold spread ({100 * sd:.1f} points sd of the per-fold differences over {n} folds)" if n > 1 else \
        f"noise (one split: {100 * 2 * _stderr(m['probe_accuracy'], m['n_test']):.1f} points is two standard errors)"
    noise = sd if n > 1 else 2 * _stderr(m["probe_accuracy"], m["n_test"])
    verdict = ("a gain beyond " if d_acc.mean() > noise else "a loss beyond " if d_acc.mean() < -noise
               else "within ") + spread
    notes = [f"Fine-tuned rung: {rung.name}'s head reaches accuracy {m['probe_accuracy']:.3f} "
             f"(per fold {np.mean(m['fold_probe_accuracy']):.3f} ± {_spread(m['fold_probe_accuracy']):.3f}), "
             f"macro-F1 {m['macro_f1']:.3f}, against the frozen {frozen.name} probe's {f['probe_accuracy']:.3f} "
             f"(± {_spread(f['fold_probe_accuracy']):.3f}) and {f['macro_f1']:.3f}: it bought "
             f"{100 * d_acc.mean():+.1f} points of accuracy and {100 * d_f1.mean():+.1f} of macro-F1, {verdict}."]
    notes.append(f"Search with the fine-tuned embedding (each test file against all other files): P@1 "
                 f"{m['p_at_1']:.3f} vs {f['p_at_1']:.3f} frozen, mAP {m['map']:.3f} vs {f['map']:.3f}, "
                 f"kNN accuracy {m['knn_accuracy']:.3f} vs {f['knn_accuracy']:.3f}.")
    wall, rss = m["finetune_wall_s"], m["finetune_peak_rss_mb"]
    cuda = [v for v in m.get("finetune_peak_cuda_mb") or [] if v]
    gpu = f", {max(cuda):.0f} MB peak GPU memory" if cuda else ""
    notes.append(f"It cost {sum(wall):.0f} s of fine-tuning ({np.mean(wall):.0f} s per fold, "
                 f"{np.mean(m['finetune_epochs_run']):.1f} epochs on average, "
                 f"{m.get('finetune_settings', {}).get('device', '?')}) and up to {max(rss):.0f} MB peak RSS{gpu}; "
                 "the frozen probe needs only the embeddings the index already holds.")
    if d_acc.mean() <= noise:
        notes.append(f"Verdict: keep the frozen {frozen.name} probe; fine-tuning did not pay for its cost here.")
    else:
        notes.append(f"Verdict: the fine-tuned checkpoint is worth using for labelling (`simsearch finetune`, then "
                     f"`classify --method finetuned`){' and search' if m['p_at_1'] > f['p_at_1'] else ''}.")
    return notes


def _ranking_notes(results: dict[str, EncoderResult], order: list[str]) -> list[str]:
    """The ranking, whether the top two are within noise, and which space is better for search."""
    best, bm = order[0], results[order[0]].metrics
    n = bm["n_test"]
    notes = ["Ranking (probe accuracy, then kNN accuracy, then mAP): " + ", ".join(
        f"{i}. {name} ({results[name].metrics['probe_accuracy']:.3f})" for i, name in enumerate(order, 1)) + "."]
    se = _stderr(bm["probe_accuracy"], n)
    if len(order) > 1:
        gap = bm["probe_accuracy"] - results[order[1]].metrics["probe_accuracy"]
        if gap < 2 * se:
            notes.append(f"{best} and {order[1]} are within noise of each other (gap {_pct(gap)}, about "
                         f"{gap / se:.1f} standard errors over {n} test files).")
    by_knn = max(order, key=lambda e: (results[e].metrics["knn_accuracy"], results[e].metrics["map"]))
    if by_knn != best:
        km = results[by_knn].metrics
        notes.append(f"For search rather than labelling, {by_knn} is the better space: kNN {km['knn_accuracy']:.3f} vs "
                     f"{bm['knn_accuracy']:.3f}, retrieval mAP {km['map']:.3f} vs {bm['map']:.3f} for {best}.")
    return notes


def _baseline_notes(results: dict[str, EncoderResult], order: list[str], baseline: str) -> list[str]:
    """How the handcrafted baseline does, and whether the best frozen encoder beats it beyond noise."""
    if baseline not in results:
        return [f"No handcrafted baseline was run; add `{baseline}` to --encoders so gains are measured against it."]
    base = results[baseline].metrics
    notes = [f"Baseline first: the handcrafted {baseline} features reach probe accuracy "
             f"{base['probe_accuracy']:.3f}, kNN {base['knn_accuracy']:.3f}, mAP {base['map']:.3f}."]
    frozen = [e for e in order if e != baseline]
    if not frozen:
        return notes
    top, tm = frozen[0], results[frozen[0]].metrics
    d_probe, d_knn = tm["probe_accuracy"] - base["probe_accuracy"], tm["knn_accuracy"] - base["knn_accuracy"]
    noise = 2 * _stderr(base["probe_accuracy"], results[order[0]].metrics["n_test"])
    if d_probe > noise:
        notes.append(f"The best frozen encoder, {top}, beats the baseline by {100 * d_probe:+.1f} points "
                     f"(probe) and {100 * d_knn:+.1f} points (kNN).")
    elif d_probe >= -noise:
        notes.append(f"The best frozen encoder, {top}, is level with the baseline ({100 * d_probe:+.1f} "
                     f"points probe, {100 * d_knn:+.1f} kNN): pretrained features add little here.")
    else:
        notes.append(f"No frozen encoder beats the baseline: the best, {top}, is {100 * -d_probe:.1f} points "
                     f"below it; its pretraining does not fit this task.")
    return notes


def _error_notes(result: EncoderResult, baseline: str) -> list[str]:
    """Whether the best encoder solves the task, which confusions remain, and probe against kNN."""
    best, bm = result.name, result.metrics
    n, acc = bm["n_test"], _best_acc(bm)
    errors = int(round((1 - bm["probe_accuracy"]) * n))
    what = "the handcrafted baseline" if best == baseline else "frozen features"
    if acc >= ENOUGH:
        notes = [f"With {what} the task is already solved: {best} labels {_pct(acc)} of test files correctly "
                 f"({errors} probe errors of {n})."]
    elif acc >= CLOSE:
        notes = [f"With {what} the task is nearly solved: {best} reaches {_pct(acc)} and leaves {_pct(1 - acc)} errors."]
    else:
        notes = [f"With {what} the task is not solved: the best, {best}, reaches only {_pct(acc)}."]
    pairs = bm["confused_probe"]
    if pairs and errors:
        share = sum(c for _, _, c in pairs[:3]) / errors
        worst = min(bm["per_class_probe"].items(), key=lambda kv: kv[1])
        notes.append("Remaining errors (" + best + ", probe): " + ", ".join(f"{t}→{p} ×{c}" for t, p, c in pairs[:3])
                     + f" account for {_pct(share)} of them; the weakest class is {worst[0]} "
                     f"({_pct(worst[1])} correct).")
    gap = bm["probe_accuracy"] - bm["knn_accuracy"]
    if gap > 0.05:
        notes.append(f"The probe beats kNN by {100 * gap:.1f} points for {best}: the labels are linearly present but "
                     "not in the cosine neighbourhoods, so a trained head (probe) is the cheap fix before any "
                     "fine-tuning.")
    elif gap < -0.02:
        notes.append(f"kNN beats the probe by {100 * -gap:.1f} points for {best}: classes look multi-modal or too "
                     "small for a linear head; neighbours carry the signal.")
    return notes


def _finetune_notes(results: dict[str, EncoderResult], order: list[str], baseline: str) -> list[str]:
    """Whether the next rung, fine-tuning, is worth its cost here, and from which encoder."""
    best = order[0]
    acc = _best_acc(results[best].metrics)
    pretrained = next((e for e in order if e != baseline), None)
    beats = pretrained is not None and (baseline not in results or order.index(pretrained) < order.index(baseline))
    _, counts = np.unique(results[best].y_true.astype(str), return_counts=True)
    median = int(np.median(counts))
    if acc >= ENOUGH:
        left = f"at most {_pct(1 - acc)} of files are left to win" if acc < 1 else "no test file is left to win"
        return [f"Fine-tuning does not look justified: {left}."]
    if pretrained is None:
        return ["Evaluate pretrained encoders before considering fine-tuning."]
    if not beats:
        deficit = results[baseline].metrics["probe_accuracy"] - results[pretrained].metrics["probe_accuracy"]
        return [f"Fine-tuning is not the next step: no pretrained encoder here beats the handcrafted baseline, "
                f"so try frozen encoders pretrained closer to this task first; fine-tuning {pretrained} would "
                f"have to make up its {100 * deficit:.1f}-point deficit before it could help."]
    if median < SMALL_CLASS:
        return [f"Fine-tuning has room to help ({_pct(1 - acc)} errors left) but not with this data: classes are "
                f"small (median {median} files, smallest {int(counts.min())}), so fine-tuning {pretrained} would "
                "overfit; collect more labelled clips (or merge overlapping classes) first, and treat gaps of a "
                "few points as noise."]
    if acc >= CLOSE:
        return [f"Fine-tuning may be worth a try only if the confusions above matter: start from {pretrained} "
                "and compare against this frozen probe on the same folds."]
    return [f"Fine-tuning looks justified: start from {pretrained}, the best pretrained encoder, and compare "
            "against this frozen probe on the same folds."]


def summary_json(results: dict[str, EncoderResult], info: dict) -> dict:
    """report.json: {"encoders": {NAME: {knn_accuracy, probe_accuracy, macro_f1, map, p_at_10, ...}}, ...}."""
    enc = {}
    for name, r in results.items():
        m = r.metrics
        enc[name] = {**{k: round(float(m[k]), 6) for k in SUMMARY_KEYS},
                     "knn_macro_f1": round(float(m["knn_macro_f1"]), 6),
                     **{k: m[k] for k in ("n_files", "n_test", "n_classes", "dim", "k", "probe_C")},
                     **{k: v for k, v in m.items() if k.startswith(("fold_", "finetune_", "rung", "base_", "p_at_1"))},
                     "per_class_probe": {c: round(v, 6) for c, v in m["per_class_probe"].items()},
                     "per_class_knn": {c: round(v, 6) for c, v in m["per_class_knn"].items()},
                     "confused_probe": [list(p) for p in m["confused_probe"]],
                     "confused_knn": [list(p) for p in m["confused_knn"]]}
    return {"encoders": enc, "ranking": rank(results), "decision": decision_note(results), "dataset": info}


def confusion_png(result: EncoderResult, path: Path) -> Path:
    """Row-normalised confusion matrices of the kNN and probe predictions side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    n = len(result.classes)
    size = max(5.0, 0.45 * n + 2.5)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size, size), constrained_layout=True)
    for ax, (title, pred) in zip(axes, (("kNN", result.knn_pred), ("probe", result.probe_pred))):
        acc = float((pred == result.y_true).mean())
        ConfusionMatrixDisplay.from_predictions(result.y_true.astype(str), pred.astype(str), labels=result.classes,
                                                normalize="true", ax=ax, colorbar=False, cmap="Blues",
                                                include_values=n <= 20, values_format=".2f",
                                                im_kw={"vmin": 0.0, "vmax": 1.0})
        ax.set_title(f"{result.name} — {title}, accuracy {acc:.3f}")
        ax.tick_params(axis="x", labelrotation=90)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _table(header: Sequence[str], rows: list[Sequence]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def results_table(results: dict[str, EncoderResult]) -> list[str]:
    """The side-by-side table, best encoder first."""
    rows = []
    for i, name in enumerate(rank(results), 1):
        m = results[name].metrics
        sd = f"± {_spread(m['fold_probe_accuracy']):.3f}" if len(m.get("fold_probe_accuracy", [])) > 1 else "-"
        rung = m.get("rung") if name != BASELINE else "baseline"
        rows.append([i, name, m["dim"], *(f"{m[k]:.3f}" for k in ("knn_accuracy", "probe_accuracy", "macro_f1",
                                                                   "knn_macro_f1", "map", "p_at_10")),
                     f"{m['p_at_1']:.3f}" if "p_at_1" in m else "-", sd, rung or "frozen"])
    return _table(["rank", "encoder", "dim", "kNN acc", "probe acc", "macro-F1 (probe)", "macro-F1 (kNN)",
                   "mAP", "P@10", "P@1", "probe acc fold sd", "rung"], rows)


def markdown(results: dict[str, EncoderResult], info: dict, pngs: dict[str, str]) -> str:
    """report.md: what was run, the ranked table, the decision note, per-class accuracy, confusions, PNGs."""
    order = rank(results)
    first = results[order[0]].metrics
    labels = f"regex `{info['label_regex']}`" if info.get("label_regex") else "folders / manifest"
    lines = ["# Evaluation report", "",
             f"Source: `{info.get('src')}`; labels: {labels}; "
             f"{first['n_files']} files in {first['n_classes']} classes; {info.get('splits')}; "
             f"kNN k={info.get('k')} (temperature-weighted votes); probe = standardised logistic regression, "
             "C by inner 3-fold CV. Per file: windows averaged, so no file is split across folds.", ""]
    if info.get("dropped_classes"):
        lines += ["Left out (a single file cannot be both trained on and tested): " + ", ".join(
            f"{c} ({n})" for c, n in info["dropped_classes"].items()) + ".", ""]
    if info.get("unlabelled_files"):
        lines += [f"{info['unlabelled_files']} files had no label and were left out.", ""]
    lines += ["## Results", "", *results_table(results), "",
              "Accuracy and macro-F1 are over out-of-fold predictions; mAP, P@10 and P@1 are leave-one-out retrieval "
              "over all files (relevant = same label)." + (
                  " For a fine-tuned rung, 'probe' is its trained head, and retrieval ranks each test file against "
                  "all other files with the embedding fine-tuned without it." if any(map(_is_rung, results.values()))
                  else ""), "", "## Decision", ""]
    lines += [f"- {s}" for s in decision_note(results)]
    lines += ["", "## Per-class accuracy (probe)", ""]
    classes = sorted({c for r in results.values() for c in r.classes})
    counts = info.get("classes", {})
    lines += _table(["class", "files", *order],
                    [[c, counts.get(c, ""), *(f"{results[e].metrics['per_class_probe'].get(c, float('nan')):.2f}"
                                              for e in order)] for c in classes])
    lines += ["", "## Most confused pairs (true → predicted, count)", ""]
    for e in order:
        m = results[e].metrics
        fmt = lambda ps: ", ".join(f"{t}→{p} ×{c}" for t, p, c in ps) or "none"
        lines.append(f"- **{e}** probe: {fmt(m['confused_probe'])}; kNN: {fmt(m['confused_knn'])}")
    lines += ["", "## Confusion matrices", ""]
    lines += [f"![{e}]({pngs[e]})" for e in order if e in pngs]
    return "\n".join(lines) + "\n"


def write_report(results: dict[str, EncoderResult], info: dict, out: str | Path) -> dict[str, Path]:
    """OUT/report.md, OUT/report.json and OUT/confusion_ENCODER.png; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pngs = {name: confusion_png(r, out / f"confusion_{name}.png") for name, r in results.items()}
    data = summary_json(results, info)
    atomic_write_text(out / "report.json", json.dumps(data, indent=2, default=_jsonable))
    atomic_write_text(out / "report.md", markdown(results, info, {n: p.name for n, p in pngs.items()}))
    return {"md": out / "report.md", "json": out / "report.json", **{f"png:{n}": p for n, p in pngs.items()}}


def _jsonable(v):
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")

