"""The batch indexing job: sources -> reader -> encoder -> Parquet shards -> FAISS, resumable."""
from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from simsearch.encoders import get_encoder, resolve_device
from simsearch.errors import IndexFormatError
from simsearch.files import file_sha256
from simsearch.indexing.local import _embed_files
from simsearch.indexing.options import IndexOptions, IndexSummary, _with_recorded_defaults, check_compatible, encoder_record
from simsearch.indexing.sources import collect
from simsearch.indexing.writer import ErrorLog
from simsearch.store.folder import FORMAT_VERSION, IndexDir

log = logging.getLogger(__name__)


def run_index(src: str | Path, out: str | Path, options: IndexOptions | None = None) -> IndexSummary:
    """Index `src` into `out`, resuming: unchanged files are skipped, changed ones re-embedded, gone ones removed."""
    options = options or IndexOptions()
    t0 = time.perf_counter()
    src_path = Path(src)
    d = IndexDir(out)
    summary = IndexSummary()
    with d.lock():
        d.remove_stale_temp_files()
        info = d.read_info() if d.exists() else None
        options = _with_recorded_defaults(options, info)
        items, unreadable = collect(src_path, options.label_regex)
        enc = get_encoder(options.encoder, options.checkpoint, options.device, **options.encoder_options())
        if info:
            check_compatible(info, enc, options, d.root)
        errors = ErrorLog(d.errors_path, options.strict)
        try:
            for u in unreadable:
                errors.add(u.path, u.reason)
            live = d.live_rows(["id", "path", "sha256"])
            done = dict(zip(live.column("path").to_pylist(), live.column("sha256").to_pylist()))
            next_id = int(max(live.column("id").to_pylist(), default=-1)) + 1
            next_id = max(next_id, int((info or {}).get("next_id", 0)))  # never reuse an id faiss.index may hold
            todo, shas, changed = [], {}, set()
            for item in tqdm(items, desc="hashing", unit="file", disable=not options.progress):
                try:
                    sha = file_sha256(item.path)
                except OSError as e:
                    errors.add(item.path, f"cannot read ({e.strerror or e})")
                    continue
                if done.get(item.path) == sha:
                    summary.skipped += 1
                    continue
                if item.path in done:
                    changed.add(item.path)
                shas[item.path] = sha
                todo.append(item)
            gone = set()
            if src_path.is_dir():
                root = str(src_path.resolve()) + "/"
                present = {i.path for i in items} | {u.path for u in unreadable}
                gone = {p for p in done if (p.startswith(root) or p.startswith(str(src_path.absolute()) + "/"))
                        and p not in present}
            if todo and options.batch_size is None:
                from dataclasses import replace

                from simsearch.indexing.autobatch import find_batch_size

                options = replace(options, batch_size=find_batch_size(enc, resolve_device(options.device),
                                                                      options.window_s))
            if options.engine == "ray":
                from simsearch.indexing.ray_engine import embed_files_ray

                summary.indexed = embed_files_ray(d, enc, todo, shas, options, next_id, errors)
            else:
                summary.indexed = _embed_files(d, enc, todo, shas, options, next_id, errors)
            # Changed files' old rows are shadowed by their new shard; compaction removes them with the rest.
            d.compact(gone | {e["path"] for e in errors.entries if e["path"] in done})
            summary.removed = len(gone)
        finally:
            errors.close()
        summary.errors = len(errors.entries)
        summary.error_list = errors.entries
        summary.rows = rebuild(d, enc_record=encoder_record(enc, options), options=options, source=str(src_path),
                               incremental=True)
    summary.seconds = time.perf_counter() - t0
    return summary


def rebuild(d: IndexDir, enc_record: dict | None = None, options: IndexOptions | None = None,
            source: str | None = None, incremental: bool = False, index_type: str | None = None,
            max_memory: str | int | None = None) -> int:
    """Bring faiss.index and index.json in line with the shards, the source of truth; returns the row count.

    `incremental` updates the existing FAISS index in place where its type allows (see index_build);
    otherwise, and from `simsearch rebuild`, it is built again. The index type and memory budget default to
    what index.json recorded, else "auto" without a budget.
    """
    from simsearch.audio import fingerprint
    from simsearch.store import planner
    from simsearch.store.sync import extra_columns, has_landmarks, write_faiss

    info = d.read_info() if d.exists() else {}
    if enc_record is None and not info:
        raise IndexFormatError(f"{d.root}: no index.json; cannot tell which encoder made the shards")
    dim = (enc_record or info["encoder"])["dim"]
    old = info.get("faiss", {})
    meta = d.live_rows(["id", "path"])
    ids = np.asarray(meta.column("id").to_numpy(), dtype=np.int64)
    requested = index_type or getattr(options, "index_type", None) or old.get("requested") or "auto"
    budget = max_memory if max_memory is not None else getattr(options, "max_memory", None)
    budget = planner.parse_memory(budget if budget is not None else old.get("max_memory"))
    high_water = info.get("next_id")
    record = write_faiss(d, ids, dim, old, requested, budget, incremental, high_water)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    new = dict(info)
    new.update({
        "format_version": FORMAT_VERSION,
        "simsearch_version": version("simsearch"),
        "dim": dim,
        "metric": "cosine",
        "faiss": record,
        "updated_at": now,
        "counts": {"rows": len(ids), "files": len(set(meta.column("path").to_pylist()))},
        "extras": extra_columns(d),
        "versions": _versions(),
        "shards": [p.name for p in d.shard_paths()],  # the committed set readers load (see Index.open)
        "generation": int(info.get("generation", 0)) + 1,
        # ids are never handed out twice, even after their rows are gone (an old faiss.index may still hold them)
        "next_id": max(int(high_water or 0), int(ids.max()) + 1 if len(ids) else 0),
    })
    new.setdefault("created_at", now)
    new.pop("fingerprint", None)
    if has_landmarks(d):
        new["fingerprint"] = fingerprint.describe()
    if enc_record is not None:
        new["encoder"] = enc_record
    if options is not None:
        new["window_s"] = options.window_s
        new["hop_s"] = options.hop_s
        new["label_regex"] = options.label_regex
    if source is not None:
        new["sources"] = sorted(set(new.get("sources", [])) | {str(Path(source).absolute())})
    d.write_info(new)
    return len(ids)


def _versions() -> dict:
    import faiss
    import torch

    return {"torch": torch.__version__, "faiss": faiss.__version__, "numpy": np.__version__, "pyarrow": pa.__version__}

