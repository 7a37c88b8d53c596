"""`simsearch robustness`: how often a perturbed copy of a clip still finds its original first."""
from __future__ import annotations

import argparse
import json
import shlex
import sys

from simsearch.cli.options import (
    CONDITIONING_FLAGS,
    add_conditioning_flags,
    add_copynet_flag,
    add_fingerprint_flag,
    add_landmarks_flag,
    conditioning,
)


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run, for the report."""
    parts = ["simsearch", "robustness", args.src, "--encoder", args.encoder]
    for flag in ("checkpoint", "pooling", *CONDITIONING_FLAGS, "layer", "label_regex", "limit", "perturbations",
                 "speech", "music", "seed", "window"):
        value = getattr(args, flag)
        if value is not None:
            parts += ["--" + flag.replace("_", "-"), str(value)]
    if args.fingerprint is False:
        parts.append("--no-fingerprint")
    if args.landmarks:
        parts += ["--landmarks", args.landmarks]
    return " ".join(shlex.quote(p) for p in parts)


def cmd_robustness(args: argparse.Namespace) -> int:
    from simsearch.audio.landmark_kinds import DEFAULT as DEFAULT_LANDMARKS
    from simsearch.evaluation.robustness import RobustnessRun, markdown_table, run_robustness, write_report
    from simsearch.indexing.options import IndexOptions

    opts = IndexOptions(encoder=args.encoder, checkpoint=args.checkpoint, pooling=args.pooling, layer=args.layer,
                        **conditioning(args))
    perturbations = [p.strip() for p in args.perturbations.split(",") if p.strip()] if args.perturbations else None
    run = RobustnessRun(encoder=args.encoder, options=opts.encoder_options(), checkpoint=args.checkpoint,
                        label_regex=args.label_regex, limit=args.limit, perturbations=perturbations, seed=args.seed,
                        window_s=args.window, device=args.device, batch_size=args.batch_size,
                        max_duration_s=args.max_duration, fingerprint=args.fingerprint is not False,
                        landmarks=args.landmarks or DEFAULT_LANDMARKS,
                        speech=args.speech, music=args.music, copynet_steps=args.copynet_steps,
                        progress=not args.quiet)
    result = run_robustness(args.src, run)
    results = {args.encoder: result}
    if args.out:
        command = command_line(args)
        path = write_report(results, args.out, command)
        print(f"wrote {path} and {path.with_name('robustness.json')}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_json(), indent=2, default=str))
    else:
        s = result.summary()
        print(markdown_table(results))
        print(f"\n{result.info['n_clips']} clips, {result.info['n_classes']} labels; mean rank-1 "
              f"{s['mean_rank1']:.3f}, worst {s['min_rank1']:.3f} ({s['worst']}); options {result.info['options']}; "
              f"fingerprint {'on' if result.info['fingerprint'] else 'off'}; leave-one-out P@1 of the originals "
              f"{result.rows['clean']['loo_p1']:.3f}")
        if "false_same" in s:
            print(f"false same-recording claims {100 * s['false_same']:.3f} % of {s['pairs']} pairs of different "
                  f"recordings (any bonus: {100 * s['false_bonus']:.3f} %)")
    return 0


def register(subparsers) -> None:
    from simsearch.audio.perturb import GROUPS, PERTURBATIONS
    from simsearch.encoders import DEFAULT_ENCODER
    from simsearch.indexing.options import DEFAULT_WINDOW_S

    s = subparsers.add_parser("robustness", help="perturb each clip (level, noise, MP3, low-pass, delay, crop) and "
                                                 "measure whether search still finds the original")
    s.add_argument("src", help="folder or manifest of labelled audio")
    s.add_argument("--encoder", default=DEFAULT_ENCODER,
                   help=f"encoder name, or several joined by '+' (default {DEFAULT_ENCODER})")
    s.add_argument("--checkpoint", help="hub id or local path of the encoder's weights")
    s.add_argument("--pooling", choices=["mean", "meanstd", "gem"], help="how frames become a clip vector")
    add_conditioning_flags(s)
    add_fingerprint_flag(s)
    add_landmarks_flag(s)
    add_copynet_flag(s)
    s.add_argument("--layer", type=int, help="hidden layer to pool (transformer encoders; default last)")
    s.add_argument("--label-regex", help="labels from file names: first group of this regex, e.g. '^(\\d)_'")
    s.add_argument("--limit", type=int, help="a seeded random subset of this many clips")
    s.add_argument("--perturbations", help=f"comma-separated names or groups (default everyday): "
                                           f"{', '.join(PERTURBATIONS)}; groups {', '.join(GROUPS)}, all")
    s.add_argument("--speech", help="folder or manifest of speech for the speech mixes (may be SRC itself)")
    s.add_argument("--music", help="folder or manifest of music for the music mixes (may be SRC itself)")
    s.add_argument("--seed", type=int, default=0, help="seed for the subset and the noise (default 0)")
    s.add_argument("--window", type=float, default=DEFAULT_WINDOW_S,
                   help=f"window length in seconds, as in the index (default {DEFAULT_WINDOW_S:g})")
    s.add_argument("--max-duration", type=float, default=120.0, help="skip files longer than this (default 120 s)")
    s.add_argument("--device", default="auto")
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--out", help="folder for report.md and robustness.json")
    s.add_argument("--json", action="store_true", help="print the results as JSON")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_robustness)

