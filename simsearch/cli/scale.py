"""Command-line options for scale: Ray engine, index type and budget, search knobs and filters; the `dedup` command."""
from __future__ import annotations

import argparse
import json

KINDS = ("flat", "hnsw", "ivfpq")  # faiss_ops.KINDS, without importing FAISS to start the CLI


def add_index_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: decode in worker processes here; ray: run as a Ray Data job")
    s.add_argument("--ray-address", help="Ray cluster to join (default: start a local Ray)")
    add_index_type_args(s)


def add_index_type_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--index-type", choices=["auto", *KINDS],
                   help="FAISS index: auto picks flat below 100k rows, then HNSW or IVF-PQ (default: the index's, else auto)")
    s.add_argument("--max-memory", help="memory budget for the FAISS index, e.g. 8G or 500M (guides auto)")


def index_options(args: argparse.Namespace) -> dict:
    """The IndexOptions fields these flags set."""
    return {"engine": args.engine, "ray_address": args.ray_address, "index_type": args.index_type,
            "max_memory": args.max_memory}


def add_search_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--filter", action="append", metavar="KEY=VALUE",
                   help="only rows whose label (or manifest column) is VALUE; repeat a key for OR, keys combine with AND")
    s.add_argument("--path-glob", action="append", help="only files whose path matches, e.g. '*/drums/*'")
    s.add_argument("--min-duration", type=float, help="only files at least this many seconds long")
    s.add_argument("--max-duration", type=float, help="only files at most this many seconds long")
    s.add_argument("--group-by-file", action="store_true", help="best window per file (long recordings)")
    s.add_argument("--exclude-same", action="store_true",
                   help="leave out the query's own recording (and its copies), found by landmark fingerprints")
    s.add_argument("--nprobe", type=int, help="IVF-PQ lists to visit (default: tuned for recall >= 0.95)")
    s.add_argument("--ef-search", type=int, help="HNSW candidate list size (default: tuned for recall >= 0.95)")
    s.add_argument("--k-factor", type=float, help="IVF-PQ re-ranking depth as a multiple of k (default: tuned)")


def open_kwargs(args: argparse.Namespace) -> dict:
    return {"nprobe": args.nprobe, "ef_search": args.ef_search, "k_factor": args.k_factor}


def search_kwargs(args: argparse.Namespace) -> dict:
    from simsearch.search.filters import parse_cli

    spec = parse_cli(args.filter, args.path_glob, args.min_duration, args.max_duration)
    return {"filter": spec or None, "group_by_file": args.group_by_file, "exclude_same": args.exclude_same}


def cmd_dedup(args: argparse.Namespace) -> int:
    from simsearch.search.dedup import find_duplicates
    from simsearch.search.index import Index

    groups = find_duplicates(Index.open(args.dir), args.threshold, args.neighbours, args.same_file)
    if args.json:
        print(json.dumps(groups, indent=2))
        return 0
    for n, g in enumerate(groups, start=1):
        print(f"group {n}: {g['size']} clips, links at cosine >= {g['min_link_score']:.4f}")
        for m in g["members"]:
            where = f" @{m['offset_s']:.1f}s" if m["offset_s"] else ""
            print(f"    {m['path']}{where}")
    print(f"{len(groups)} near-duplicate groups, {sum(g['size'] for g in groups)} clips (threshold {args.threshold})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("dedup", help="near-duplicate groups in an index")
    s.add_argument("dir", help="index folder")
    s.add_argument("--threshold", type=float, default=0.98, help="cosine similarity that counts as a duplicate")
    s.add_argument("--neighbours", type=int, default=20, help="neighbours checked per row on HNSW/IVF-PQ indexes")
    s.add_argument("--same-file", action="store_true", help="also pair windows of the same recording")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_dedup)

