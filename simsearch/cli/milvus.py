"""`simsearch export DIR --to milvus URI`, and `search --milvus URI`: serve an index from a Milvus collection."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from simsearch.errors import SimsearchError

INDEX_TYPES = ("AUTOINDEX", "FLAT", "HNSW", "IVF_FLAT", "DISKANN")
TOKEN_ENV = "MILVUS_TOKEN"  # user:password or an API key, for servers that ask for one


def cmd_export(args: argparse.Namespace) -> int:
    from simsearch.store.folder import IndexDir
    from simsearch.store.milvus_store import MilvusStore, collection_name

    target, uri = args.to
    if target != "milvus":
        raise SimsearchError(f"--to {target}: the one target is milvus (--to milvus URI)")
    d = IndexDir(args.dir)
    store = MilvusStore(uri, args.collection or collection_name(args.dir), os.environ.get(TOKEN_ENV))
    if args.drop:
        store.drop()
    say = None if args.quiet else (lambda line: print(line, flush=True))
    try:
        summary = store.export(d, args.index_type, say)
    except FileNotFoundError as e:  # a writer committed and removed a shard mid-export: what was sent is kept
        raise SimsearchError(f"{d.root} changed while exporting ({Path(e.filename or '').name} is gone); "
                             "run the same export again to finish it") from None
    if args.json:
        print(json.dumps({"collection": store.collection, **summary}))
    else:
        print(f"exported {d.root} to {uri} collection {store.collection}: added {summary['added']} rows "
              f"({summary['shards_added']} shards), removed {summary['removed']} ({summary['shards_removed']} shards); "
              f"{summary['rows']} rows in {summary['seconds']:.1f} s")
    return 0


def add_search_args(s: argparse.ArgumentParser) -> None:
    """--milvus URI [--collection NAME] on `search`."""
    s.add_argument("--milvus", metavar="URI", help="search the Milvus collection this index was exported to "
                   "(`simsearch export DIR --to milvus URI`): a server URI or a milvus-lite .db file")
    s.add_argument("--collection", help="Milvus collection (default: simsearch_ + the index folder's name)")


def open_index(args: argparse.Namespace):
    """The MilvusIndex `search --milvus` asks for, or None to search the folder itself."""
    if not getattr(args, "milvus", None):
        return None
    from simsearch.search.milvus_index import MilvusIndex

    if args.text:
        raise SimsearchError("--milvus takes --audio queries; search text on the index folder itself")
    return MilvusIndex.open(args.dir, args.milvus, collection=args.collection, device=args.device,
                            token=os.environ.get(TOKEN_ENV))


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("export", help="copy an index's rows into a Milvus collection (incremental: re-run to sync)")
    s.add_argument("dir", help="index folder")
    s.add_argument("--to", nargs=2, metavar=("milvus", "URI"), required=True,
                   help="milvus and a server URI (http://host:19530; token from $MILVUS_TOKEN) or a milvus-lite .db file")
    s.add_argument("--collection", help="collection name (default: simsearch_ + the index folder's name)")
    s.add_argument("--index-type", choices=INDEX_TYPES, default="AUTOINDEX",
                   help="Milvus vector index for a new collection (FLAT: exact; default: Milvus picks)")
    s.add_argument("--drop", action="store_true", help="drop the collection first and export everything again")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_export)
