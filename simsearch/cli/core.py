"""The `simsearch` command line: index, search, info, encoders, rebuild (+ commands other modules register)."""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from simsearch.cli import milvus, scale
from simsearch.cli.options import (
    add_backend_flag,
    add_conditioning_flags,
    add_copynet_flag,
    add_fingerprint_flag,
    add_landmarks_flag,
    conditioning,
)
from simsearch.errors import SimsearchError

# Modules that add their own sub-commands with `register(subparsers)`.
COMMAND_MODULES: list[str] = ["simsearch.cli.serve", "simsearch.cli.robust", "simsearch.cli.classify",
                               "simsearch.cli.scale", "simsearch.cli.models", "simsearch.cli.finetune",
                               "simsearch.cli.milvus"]


def _print_results(results: list[dict], as_json: bool) -> None:
    from simsearch.audio.fingerprint import SAME_RECORDING

    if as_json:
        print(json.dumps([{k: r[k] for k in ("rank", "score", "path", "label", "offset_s", "at_s", "cosine", "match",
                                                 "why") if k in r}
                          for r in results], indent=2))
        return
    for r in results:
        at = r.get("at_s", r["offset_s"])
        where = f" @{at:.1f}s" if at else ""
        same = "  (same recording: landmarks match)" if r.get("match", 0) >= SAME_RECORDING else ""
        print(f"{r['rank']:>3}  {r['score']:.4f}  {r['label'] or '-':<14}  {r['path']}{where}{same}{_why(r)}")


def _why(r: dict) -> str:
    """What a text hit matched, in a few words: name words, spoken words with their time."""
    why = r.get("why") or {}
    said = [f"said {w['word']!r} at {r['offset_s'] + w['start_s']:.1f}s" for w in why.get("spoken", [])]
    names = [f"name: {' '.join(why['words'])}"] if why.get("words") else []
    return f"  ({'; '.join(names + said)})" if names or said else ""


def cmd_index(args: argparse.Namespace) -> int:
    from simsearch.encoders import DEFAULT_ENCODER
    from simsearch.indexing.job import run_index
    from simsearch.indexing.options import IndexOptions

    if args.profile and args.encoder:
        raise SimsearchError(f"--profile {args.profile} picks the encoder itself; give --profile or --encoder, not both")
    opts = IndexOptions(encoder=args.encoder or DEFAULT_ENCODER, profile=args.profile, checkpoint=args.checkpoint,
                        device=args.device, batch_size=args.batch_size, window_s=args.window, hop_s=args.hop,
                        label_regex=args.label_regex, pooling=args.pooling, layer=args.layer, backend=args.backend,
                        **conditioning(args), fingerprint=args.fingerprint, landmarks=args.landmarks,
                        copynet_steps=args.copynet_steps, transcribe=args.transcribe, num_workers=args.workers,
                        strict=args.strict,
                        max_duration_s=args.max_duration, shard_rows=args.shard_rows, progress=not args.quiet,
                        **scale.index_options(args))
    summary = run_index(args.src, args.out, opts)
    for e in summary.error_list[:20]:
        print(f"error: {e['path']}: {e['reason']}", file=sys.stderr)
    if len(summary.error_list) > 20:
        print(f"... and {len(summary.error_list) - 20} more (see {args.out}/errors.jsonl)", file=sys.stderr)
    print(summary.line())
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from simsearch.search.index import Index

    if args.k < 1:
        raise SimsearchError(f"-k must be at least 1 (got {args.k})")
    index = milvus.open_index(args)
    if index is None:
        index = Index.open(args.dir, device=args.device, **scale.open_kwargs(args))
    if args.text_fields and not args.text:
        raise SimsearchError("--text-fields is for --text queries")
    fields = {"fields": args.text_fields} if args.text_fields else {}
    results = index.search(audio=args.audio, text=args.text, k=args.k, **scale.search_kwargs(args), **fields)
    _print_results(results, args.json)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from simsearch.store.folder import IndexDir

    d = IndexDir(args.dir)
    info = d.read_info()
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    e = info["encoder"]
    print(f"index      {d.root}")
    print(f"encoder    {e['name']}  checkpoint={e.get('checkpoint')}  pooling={e.get('pooling')}  {e.get('options') or ''}")
    if info.get("profile"):
        from simsearch.encoders.profiles import record_line

        print(f"profile    {record_line(info['profile'])}")
    print(f"dim        {info['dim']}  metric={info['metric']}  faiss={info.get('faiss', {}).get('type')}")
    fx = info.get("faiss", {})
    print(f"faiss      {fx.get('params') or {}}  search={fx.get('search') or {}}  "
          f"recall@10={fx.get('calibrated_recall_at_10')}  ({fx.get('reason', '-')})")
    print(f"windows    {info.get('window_s')} s, hop {info.get('hop_s')} s")
    print(f"counts     {info['counts']['files']} files, {info['counts']['rows']} rows")
    print(f"extras     {', '.join(info.get('extras', [])) or '-'}")
    fp = info.get("fingerprint")
    print(f"landmarks  {f'yes {fp}' if fp else 'no (made with --no-fingerprint or before them)'}")
    print(f"spoken     {info.get('transcribe', 'off')} (--transcribe)")
    print(f"updated    {info.get('updated_at')}  (created {info.get('created_at')})")
    return 0


def cmd_encoders(args: argparse.Namespace) -> int:
    from simsearch.encoders import DEFAULT_ENCODER, SPECS, offline_available

    rows = [{"name": s.name, "sample_rate": s.sample_rate, "dim": s.dim, "text": s.text,
             "default_checkpoint": s.default_checkpoint, "offline_here": offline_available(s), "summary": s.summary}
            for s in SPECS.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<22}{'rate':>7}{'dim':>7}  {'text':<5} {'offline':<8} default checkpoint / notes")
    for r in rows:
        dim = r["dim"] if r["dim"] is not None else "ckpt"
        print(f"{r['name']:<22}{r['sample_rate']:>7}{dim:>7}  {'yes' if r['text'] else 'no':<5} "
              f"{'yes' if r['offline_here'] else 'no':<8} {r['default_checkpoint'] or '-'}: {r['summary']}")
    print(f"\ndefault: {DEFAULT_ENCODER} (fuse any with '+', weight a part with '*': yamnet*0.3+aisfx)")
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    from simsearch.errors import IndexFormatError
    from simsearch.indexing.job import rebuild
    from simsearch.store import integrity
    from simsearch.store.folder import IndexDir

    d = IndexDir(args.dir)
    if not d.root.is_dir():
        raise SimsearchError(f"{d.root}: no such index folder")
    with d.lock():
        d.remove_stale_temp_files()
        try:
            info = d.read_info()
        except IndexFormatError:  # missing or unreadable: the shards record the settings that made them
            info = integrity.recover_info(d)
        if info is None:
            raise SimsearchError(f"{d.root}: not an index folder (no index.json and no shards)")
        d.shard_settings = integrity.settings_of(info) if info.get("index_id") else None
        bad = integrity.verify(d, info)
        d.compact()
        n = rebuild(d, index_type=args.index_type, max_memory=args.max_memory, info=info)
        committed = d.read_info()
        where, post = d.faiss_file(committed), committed.get("postings")
    for p, why in bad:
        print(f"set aside shard {p.name} into {p.parent} ({why}); run `simsearch index` on the source again to "
              "re-embed its files", file=sys.stderr)
    print(f"rebuilt {where} from the shards: {n} rows"
          + (f"; landmark postings: {post['postings']} in {len(post['segments'])} segment(s)" if post else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from simsearch.encoders import DEFAULT_ENCODER, profiles

    p = argparse.ArgumentParser(prog="simsearch", description="Audio embedding index and similarity search.")
    p.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("index", help="embed a folder or manifest into an index folder (resumable)")
    s.add_argument("src", help="folder of audio (walked recursively) or a .csv/.parquet manifest with a 'path' column")
    s.add_argument("--out", required=True, help="index folder, e.g. indexes/NAME")
    s.add_argument("--encoder",
                   help=f"encoder name, or several joined by '+' (see `simsearch encoders`); default {DEFAULT_ENCODER}")
    s.add_argument("--profile", choices=profiles.NAMES,
                   help="pick the encoder for the kind of collection instead of --encoder: "
                        + "; ".join(f"{p.name}: {p.encoder}" for p in profiles.PROFILES.values())
                        + "; auto: listen to a sample of the files first and pick one of those (recorded in index.json)")
    s.add_argument("--checkpoint", help="hub id or local path of the encoder's weights")
    s.add_argument("--device", default="auto", help="auto|cpu|cuda")
    s.add_argument("--batch-size", type=int, help="windows per encoder call (default: 32 on CPU, found on a GPU)")
    s.add_argument("--window", type=float, help="window length in seconds for long recordings (default 10)")
    s.add_argument("--hop", type=float, default=None, help="hop between windows in seconds (default: window)")
    s.add_argument("--label-regex", help="take labels from file names: first group of this regex, e.g. '^(\\d)_'")
    s.add_argument("--pooling", choices=["mean", "meanstd", "gem"], help="how frames become a clip vector")
    add_conditioning_flags(s)
    add_fingerprint_flag(s)
    add_landmarks_flag(s)
    add_copynet_flag(s)
    s.add_argument("--transcribe", choices=["auto", "on", "off"],
                   help="keep the spoken words of windows (Whisper tiny.en) for text search: auto = windows whose "
                        "AudioSet speech score says they hold speech (the default for encoders with tag scores), "
                        "on = every window, off = none; recorded in index.json")
    s.add_argument("--layer", type=int, help="hidden layer to pool (transformer encoders; default last)")
    add_backend_flag(s)
    s.add_argument("--workers", type=int, help="decoding processes (default: cores - 1)")
    s.add_argument("--max-duration", type=float, help="skip files longer than this many seconds")
    s.add_argument("--strict", action="store_true", help="stop at the first bad file")
    s.add_argument("--shard-rows", type=int, default=2048, help=argparse.SUPPRESS)
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    scale.add_index_args(s)
    s.set_defaults(func=cmd_index)

    s = sub.add_parser("search", help="nearest clips to an audio file or a text query")
    s.add_argument("dir", help="index folder")
    q = s.add_mutually_exclusive_group(required=True)
    q.add_argument("--audio", help="query clip")
    q.add_argument("--text", help="text query (CLAP or YAMNet-tag indexes)")
    s.add_argument("--text-fields", help="what --text matches, comma-separated: words (file/folder names, label, "
                   "metadata), spoken (words said in the clip, indexes made with --transcribe), sound (CLAP or AudioSet "
                   "tags); default all of them, fused by reciprocal rank")
    s.add_argument("-k", type=int, default=10)
    s.add_argument("--device", default="auto")
    s.add_argument("--json", action="store_true")
    scale.add_search_args(s)
    milvus.add_search_args(s)
    s.set_defaults(func=cmd_search)

    s = sub.add_parser("info", help="what an index holds")
    s.add_argument("dir")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("encoders", help="list the encoders and whether their weights are here")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_encoders)

    s = sub.add_parser("rebuild", help="rebuild faiss.index and index.json from the Parquet shards")
    s.add_argument("dir")
    scale.add_index_type_args(s)
    s.set_defaults(func=cmd_rebuild)

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except SimsearchError as e:
        print(f"simsearch: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("simsearch: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

