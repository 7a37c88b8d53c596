"""CLI sub-command `finetune`: train an encoder + classification head on an index's labelled files (registered in core)."""
from __future__ import annotations

import argparse

from simsearch.classify.knn import LABEL_SEP


def cmd_finetune(args: argparse.Namespace) -> int:
    from simsearch.classify.finetune import FinetuneSettings, finetune_index

    settings = FinetuneSettings(encoder=args.encoder, checkpoint=args.checkpoint, epochs=args.epochs, lr=args.lr,
                                batch_size=args.batch_size, freeze=args.freeze, augment=args.augment,
                                multi_label=args.multi_label, sep=args.sep, seed=args.seed, crop_s=args.crop,
                                val_fraction=args.val_fraction, patience=args.patience, device=args.device,
                                progress=not args.quiet)
    m = finetune_index(args.dir, args.out, settings)
    val = f"best validation {m['val_metric']} {m['val_score']:.3f} at epoch {m['best_epoch']:g}" if m["val_metric"] \
        else "no validation split (too few files per class): trained all epochs"
    print(f"fine-tuned {m['encoder']} on {m['n_train']} files ({m['n_val']} held out), {len(m['classes'])} labels, "
          f"{m['epochs_run']} epochs{' (resumed)' if m['resumed'] else ''}; {val}; {m['wall_s']:.0f} s, peak RSS "
          f"{m['peak_rss_mb']:.0f} MB; saved {args.out}")
    print(f"use it: simsearch index SRC --encoder {m['encoder']} --checkpoint {args.out} --out indexes/NAME, then "
          "simsearch classify indexes/NAME --audio CLIP --method finetuned")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `finetune` to the simsearch command line."""
    s = sub.add_parser("finetune", help="fine-tune an encoder + classification head on an index's labelled files")
    s.add_argument("dir", help="index folder whose labelled files (paths + labels) to train on")
    s.add_argument("--encoder", required=True,
                   help="yamnet-torch, whisper-tiny-torch, or with --checkpoint beats or a transformers encoder "
                        "(wav2vec2, hubert, wavlm, data2vec-audio, ast, whisper)")
    s.add_argument("--checkpoint", help="base weights (hub id or folder); default: the encoder's own")
    s.add_argument("--out", required=True, help="checkpoint folder to write (re-run the command to resume)")
    s.add_argument("--epochs", type=int, default=15, help="most epochs (early stopping may end sooner; default 15)")
    s.add_argument("--lr", type=float, default=1e-4, help="encoder learning rate (the head gets 10x; default 1e-4)")
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--freeze", type=int, default=0,
                   help="keep the first N blocks fixed (YAMNet: 14 conv stages; transformers: N transformer blocks, "
                        "the conv front end always); -1: all, only the head trains")
    s.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="random crop/shift, gain, noise and band limit on training clips (default on)")
    s.add_argument("--multi-label", action="store_true",
                   help=f"labels hold several names split by --sep ('{LABEL_SEP}'): one sigmoid per label")
    s.add_argument("--sep", default=LABEL_SEP, help="separator of several labels in one label field")
    s.add_argument("--crop", type=float, default=5.0, help="training crop length in seconds (default 5)")
    s.add_argument("--val-fraction", type=float, default=0.15,
                   help="share of each class held out to pick the best epoch (default 0.15)")
    s.add_argument("--patience", type=int, default=5, help="epochs without improvement before stopping (default 5)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto", help="auto|cpu|cuda (bf16 autocast on CUDA)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_finetune)
