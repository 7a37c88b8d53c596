"""`simsearch serve`: open the Gradio web app over one or more index folders."""
from __future__ import annotations

import argparse
import sys


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by `simsearch serve` and `python app.py`."""
    p.add_argument("--index", nargs="+", metavar="DIR",
                   help="index folder(s), or folder(s) holding index folders (default: every index under indexes/)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; the app has no login)")
    p.add_argument("--port", type=int, default=None, help="port (default: the first free one from 7860)")
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="largest upload accepted (default 50 MB)")
    p.add_argument("--max-duration", type=float, default=600.0,
                   help="longest query clip accepted, in seconds (default 600)")
    p.add_argument("--cache-minutes", type=float, default=15.0,
                   help="uploads and result clips older than this are deleted (default 15)")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda for the encoders")
    p.add_argument("--api-only", action="store_true",
                   help="serve the API without the web page (the same endpoints, less server CPU per REST call)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="requests handled at once (default 16; each runs on its own thread over the shared models)")


def cmd_serve(args: argparse.Namespace) -> int:
    from simsearch.app.pool import find_index_dirs
    from simsearch.app.service import Limits
    from simsearch.app.ui import build_app, launch

    dirs = find_index_dirs(args.index)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}: anyone who can reach this address can use the app "
              "(it has no login)", file=sys.stderr)
    print(f"loading {len(dirs)} index(es) and their models: {', '.join(map(str, dirs))}", file=sys.stderr)
    limits = Limits(max_upload_mb=args.max_upload_mb, max_duration_s=args.max_duration,
                    cache_ttl_s=max(60.0, args.cache_minutes * 60))
    demo = build_app(dirs, limits, device=args.device, ui=not args.api_only)
    launch(demo, host=args.host, port=args.port, concurrency=args.concurrency)
    return 0


def register(subparsers) -> None:
    s = subparsers.add_parser("serve", help="web app: find similar sounds, search by text, classify, index info")
    add_serve_arguments(s)
    s.set_defaults(func=cmd_serve)

