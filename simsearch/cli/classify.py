"""CLI sub-commands `classify`, `probe` and `eval` (registered through cli.COMMAND_MODULES)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from simsearch.classify.knn import KNN_K, LABEL_SEP
from simsearch.classify.label import METHODS
from simsearch.classify.probe import PROBE_POOLINGS


def cmd_classify(args: argparse.Namespace) -> int:
    from simsearch.classify.label import classify
    from simsearch.search.index import Index

    labels = [v for v in (args.labels or "").split(",") if v.strip()] or None
    index = Index.open(args.dir, device=args.device)
    out = classify(index, args.audio, method=args.method, k=args.k, labels=labels, top=args.top)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for r in out:
            print(f"{r['score']:.4f}  {r['label']}")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from simsearch.classify.probe import PROBE_WEIGHTS, train_probe
    from simsearch.search.index import Index

    index = Index.open(args.dir, device="cpu")
    probe = train_probe(index, multi_label=args.multi_label, sep=args.sep, folds=args.folds, seed=args.seed,
                        pooling=args.pooling)
    m = probe.meta
    kind = "multi-label (one sigmoid per label)" if probe.multi_label else "single-label (softmax)"
    if probe.pooling == "attention":
        print(f"probe: {kind}, gated attention over {m['n_windows']} windows of {m['n_files']} files, "
              f"{len(probe.classes)} labels, {m['epochs']} epochs; saved {Path(args.dir) / PROBE_WEIGHTS}")
        return 0
    print(f"probe: {kind}, {m['n_files']} files, {len(probe.classes)} labels, C={m['C']:g} chosen by "
          f"{m['cv_folds']}-fold CV; CV {m['cv_metric']} {m['cv_score']:.3f}; saved {Path(args.dir) / PROBE_WEIGHTS}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from simsearch.evaluation.compare import SplitPlan, run_eval
    from simsearch.evaluation.report import results_table, summary_json, write_report
    from simsearch.indexing.options import IndexOptions

    out = Path(args.out) if args.out else Path("evals") / (Path(args.src).stem or "eval")
    options = IndexOptions(label_regex=args.label_regex, window_s=args.window, hop_s=args.hop, device=args.device,
                           batch_size=args.batch_size, progress=not args.quiet)
    plan = SplitPlan(folds=args.folds, fold_regex=args.fold_regex, test_regex=args.test_regex, seed=args.seed)
    finetune = None
    if args.finetune:
        from simsearch.classify.finetune import FinetuneSettings

        finetune = FinetuneSettings(encoder=args.finetune, checkpoint=args.finetune_checkpoint,
                                    epochs=args.finetune_epochs, lr=args.finetune_lr, freeze=args.finetune_freeze,
                                    batch_size=args.finetune_batch_size, seed=args.seed, device=args.device,
                                    progress=not args.quiet)
    results, info = run_eval(args.src, args.encoders.split(","), out, options, plan, k=args.k, finetune=finetune,
                             attention=args.attention)
    paths = write_report(results, info, out)
    if args.json:
        print(json.dumps(summary_json(results, info), indent=2, default=str))
    else:
        print(info["splits"])
        print("\n".join(results_table(results)))
        print(f"report: {paths['md']} (+ report.json, confusion_*.png)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `classify`, `probe` and `eval` to the simsearch command line."""
    from simsearch.encoders import DEFAULT_ENCODER

    s = sub.add_parser("classify", help="label scores for a clip: kNN votes, trained probe, or zero-shot text labels")
    s.add_argument("dir", help="index folder")
    s.add_argument("--audio", required=True, help="clip to label")
    s.add_argument("--method", choices=METHODS, default="knn",
                   help="knn: similarity-weighted votes of the k nearest labelled rows; probe: the probe saved by "
                        "`simsearch probe`; zeroshot: scores for --labels (CLAP or YAMNet tag space); finetuned: the "
                        "head of the `simsearch finetune` folder the index was built with (--checkpoint DIR)")
    s.add_argument("-k", type=int, default=KNN_K, help=f"neighbours that vote (knn; default {KNN_K})")
    s.add_argument("--labels", help='comma-separated candidate labels for zeroshot, e.g. "dog,rain,drum"')
    s.add_argument("--top", type=int, help="print only the best N labels")
    s.add_argument("--device", default="auto")
    s.add_argument("--json", action="store_true", help='print [{"label", "score"}, ...]')
    s.set_defaults(func=cmd_classify)

    s = sub.add_parser("probe", help="train a linear probe on the index's labelled files and save it in the folder")
    s.add_argument("dir", help="index folder")
    s.add_argument("--multi-label", action="store_true",
                   help=f"labels hold several names split by --sep ('{LABEL_SEP}'): one sigmoid per label, CV mAP")
    s.add_argument("--sep", default=LABEL_SEP, help="separator of several labels in one label field")
    s.add_argument("--folds", type=int, default=5, help="cross-validation folds that pick the regularisation")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--pooling", choices=PROBE_POOLINGS, default="mean",
                   help="mean: the linear layer reads each file's mean window vector; attention: a gated attention "
                        "pooling over the file's windows trained with it (long files whose label is one short event)")
    s.set_defaults(func=cmd_probe)

    s = sub.add_parser("eval", help="compare encoders on a labelled collection: kNN, probe, macro-F1, retrieval mAP")
    s.add_argument("src", help="labelled folder or manifest")
    s.add_argument("--encoders", default=f"spectral,{DEFAULT_ENCODER}",
                   help=f"comma-separated, baseline first (default spectral,{DEFAULT_ENCODER})")
    s.add_argument("--label-regex", help="labels from file names, e.g. '^(\\d)_'")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--fold-regex", help="fold key from file names, e.g. '_(\\d+)\\.wav$' or '^(\\d)-'; keys map to "
                                        "--folds folds (key rank mod folds)")
    g.add_argument("--test-regex", help="fixed split: files whose name matches are the test set, e.g. '_[0-4]\\.wav$'")
    s.add_argument("--folds", type=int, default=5, help="number of folds (stratified, or for --fold-regex keys)")
    s.add_argument("-k", type=int, default=KNN_K, help=f"kNN neighbours (default {KNN_K})")
    s.add_argument("--out", help="output folder (default evals/NAME); embeddings are cached in OUT/cache/ENCODER")
    s.add_argument("--window", type=float, help="window length in seconds for long files (default 10)")
    s.add_argument("--hop", type=float, help="hop between windows in seconds (default: window)")
    s.add_argument("--device", default="auto")
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--attention", action="store_true",
                   help="also report each encoder with the probe pooling a file's windows by trained attention "
                        "(for long files whose label is one short event; use short --window)")
    s.add_argument("--finetune", metavar="ENC",
                   help="add the fine-tuned rung: fine-tune ENC + a head on each fold's training files (never its "
                        "test files) and report it beside the frozen encoders (ENC is evaluated frozen too)")
    s.add_argument("--finetune-checkpoint", help="base weights of the --finetune encoder (default: its own)")
    s.add_argument("--finetune-epochs", type=int, default=15, help="most epochs per fold (default 15)")
    s.add_argument("--finetune-lr", type=float, default=1e-4, help="encoder learning rate (default 1e-4)")
    s.add_argument("--finetune-freeze", type=int, default=0, help="bottom blocks kept fixed (see `finetune --help`)")
    s.add_argument("--finetune-batch-size", type=int, default=16)
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    s.add_argument("--json", action="store_true", help="print report.json")
    s.set_defaults(func=cmd_eval)

