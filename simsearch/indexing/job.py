"""The batch indexing job: sources -> reader -> encoder -> Parquet shards -> FAISS, resumable."""
from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pyarrow as pa

from simsearch.audio import containers
from simsearch.encoders import get_encoder, resolve_device
from simsearch.encoders.tag_text import index_class_names
from simsearch.errors import IndexFormatError
from simsearch.indexing.copynet_fit import ensure_copynet
from simsearch.indexing.local import _embed_files
from simsearch.indexing.options import (
    IndexOptions,
    IndexSummary,
    _with_recorded_defaults,
    check_compatible,
    encoder_record,
    with_profile,
)
from simsearch.indexing.plan import make_plan
from simsearch.indexing.sources import collect
from simsearch.indexing.transcribe import check_mode, has_tag_scores, recorded_mode, transcribe_index
from simsearch.indexing.whiten_fit import ensure_whitening
from simsearch.indexing.writer import ErrorLog, write_relabelled
from simsearch.store import integrity
from simsearch.store.folder import FORMAT_VERSION, IndexDir

log = logging.getLogger(__name__)


def run_index(src, out: str | Path, options: IndexOptions | None = None) -> IndexSummary:
    """Index `src` into `out`, resuming: unchanged files are skipped, changed ones re-embedded, gone ones removed.
    `src`: a folder, manifest, tar shard or saved dataset path, or a Hugging Face Dataset / DatasetDict object."""
    options = options or IndexOptions()
    t0 = time.perf_counter()
    if not isinstance(src, (str, Path)):  # a Hugging Face dataset object: index it where it lies on disk
        src = containers.saved_dataset(src, Path(out) / "dataset")
    src_path = Path(src)
    d = IndexDir(out)
    summary = IndexSummary()
    with d.lock():
        d.remove_stale_temp_files()
        info = d.read_info() if d.exists() else integrity.recover_info(d)
        options = _with_recorded_defaults(options, info)
        items, unreadable = collect(src_path, options.label_regex)
        options, profile = with_profile(options, info, [item.path for item in items])
        enc = get_encoder(options.encoder, options.checkpoint, options.device, **options.encoder_options())
        ensure_whitening(d, enc, [item.path for item in items], options, info)
        ensure_copynet(d, enc, [item.path for item in items], options, info)
        if info:
            check_compatible(info, enc, options, d.root)
        d.shard_settings = _settings(info, enc, options)
        errors = ErrorLog(d.errors_path, options.strict)
        try:
            for where, why in integrity.verify(d, info or {"shards": []}):
                errors.add(str(where), f"shard set aside: {why}; its files are embedded again", fatal=False)
            plan = make_plan(d, items, unreadable, src_path, errors, info, options.progress)
            write_relabelled(d, plan.relabel)
            if plan.todo and options.batch_size is None:
                from dataclasses import replace

                from simsearch.indexing.autobatch import find_batch_size

                options = replace(options, batch_size=find_batch_size(enc, resolve_device(options.device),
                                                                      options.window_s))
            marker = len(errors.entries)
            if options.engine == "ray":
                from simsearch.indexing.ray_engine import embed_files_ray

                summary.indexed = embed_files_ray(d, enc, plan.todo, plan.shas, options, plan.next_id, errors)
            else:
                summary.indexed = _embed_files(d, enc, plan.todo, plan.shas, options, plan.next_id, errors)
            # A changed file that no longer decodes loses its old rows: they describe content that is gone.
            plan.remove |= {e["path"] for e in errors.entries[marker:]} & plan.changed
            # Changed and re-labelled files' old rows are shadowed by newer shards; compaction removes them too.
            d.compact(plan.remove)
            summary.skipped, summary.removed = plan.skipped, len(plan.remove)
            mode = recorded_mode(info, check_mode(options.transcribe), has_tag_scores(d))
            names = index_class_names({"encoder": encoder_record(enc, options)})
            summary.transcribed = transcribe_index(d, mode, options.window_s, options.hop_s, names,
                                                   resolve_device(options.device), options.progress, errors)
        finally:
            errors.close()
        summary.errors = len(errors.entries)
        summary.error_list = errors.entries
        kept = {**(info or {}), **({"profile": profile} if profile else {}), "transcribe": mode}  # recorded choices
        summary.rows = rebuild(d, enc_record=encoder_record(enc, options), options=options, source=str(src_path),
                               incremental=True, info=kept)
    summary.seconds = time.perf_counter() - t0
    return summary


def _settings(info: dict | None, enc, options: IndexOptions) -> dict:
    """What each shard of this run records: this index's id and the settings that made its rows."""
    from simsearch.audio import landmark_kinds

    return {"index_id": (info or {}).get("index_id") or uuid.uuid4().hex, "encoder": encoder_record(enc, options),
            "window_s": options.window_s, "hop_s": options.hop_s, "label_regex": options.label_regex,
            "fingerprint": landmark_kinds.describe(options.landmarks or landmark_kinds.DEFAULT)
            if options.fingerprint else None}


def rebuild(d: IndexDir, enc_record: dict | None = None, options: IndexOptions | None = None,
            source: str | None = None, incremental: bool = False, index_type: str | None = None,
            max_memory: str | int | None = None, info: dict | None = None) -> int:
    """Commit a new state: a FAISS file and index.json in line with the shards, the source of truth; returns rows.

    The FAISS file is new (faiss-<generation>.index) and index.json, written last, names it and the shards
    with their sha256, so a crash at any step leaves the previous state whole (see IndexDir.commit).

    `incremental` updates the existing FAISS index in place where its type allows (see index_build);
    otherwise, and from `simsearch rebuild`, it is built again. The index type and memory budget default to
    what index.json recorded, else "auto" without a budget.
    """
    from simsearch.audio import landmark_kinds
    from simsearch.store import planner, postings
    from simsearch.store.sync import extra_columns, has_landmarks, write_faiss

    if info is None:
        info = d.read_info() if d.exists() else {}
    if enc_record is None and not info:
        raise IndexFormatError(f"{d.root}: no index.json; cannot tell which encoder made the shards")
    if enc_record is None:  # `simsearch rebuild`: the shards' own record beats a damaged index.json
        enc_record = (_newest_settings(d) or {}).get("encoder") or info["encoder"]
    enc_record = dict(enc_record)
    dim = _shard_dim(d) or enc_record["dim"]  # the shards hold the vectors: their width is the truth
    enc_record["dim"] = dim
    old = info.get("faiss", {})
    meta = d.live_rows(["id", "path"])
    ids = np.asarray(meta.column("id").to_numpy(), dtype=np.int64)
    requested = index_type or getattr(options, "index_type", None) or old.get("requested") or "auto"
    budget = max_memory if max_memory is not None else getattr(options, "max_memory", None)
    budget = planner.parse_memory(budget if budget is not None else old.get("max_memory"))
    high_water = info.get("next_id")
    generation = int(info.get("generation", 0)) + 1
    record = write_faiss(d, ids, dim, old, requested, budget, incremental, target=d.root / f"faiss-{generation:06d}.index")
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
        "generation": generation,
        # ids are never handed out twice, even after their rows are gone (an old faiss.index may still hold them)
        "next_id": max(int(high_water or 0), int(ids.max()) + 1 if len(ids) else 0),
    })
    new.setdefault("created_at", now)
    recorded = new.pop("fingerprint", None)
    if has_landmarks(d):  # of the kind this run made, else the one the index or its newest shard recorded
        shard_fp = (d.shard_settings or _newest_settings(d) or {}).get("fingerprint")
        kind = getattr(options, "landmarks", None) or landmark_kinds.kind_of(shard_fp or recorded)
        new["fingerprint"] = landmark_kinds.describe(kind)
    new["postings"] = postings.sync(d, info, new.get("fingerprint"), generation, incremental)
    new["encoder"] = enc_record
    new["index_id"] = (d.shard_settings or {}).get("index_id") or info.get("index_id") or uuid.uuid4().hex
    if options is not None:
        new["window_s"] = options.window_s
        new["hop_s"] = options.hop_s
        new["label_regex"] = options.label_regex
    if source is not None:
        new["sources"] = sorted(set(new.get("sources", [])) | {str(Path(source).absolute())})
    d.commit(new, info)
    postings.remove_unlisted(d, new["postings"])
    return len(ids)


def _newest_settings(d: IndexDir) -> dict | None:
    shards = d.shard_paths()
    return integrity.shard_settings(shards[-1]) if shards else None


def _shard_dim(d: IndexDir) -> int | None:
    shards = d.shard_paths()
    return integrity.shard_dim(shards[-1]) if shards else None


def _versions() -> dict:
    import faiss
    import torch

    return {"torch": torch.__version__, "faiss": faiss.__version__, "numpy": np.__version__, "pyarrow": pa.__version__}

