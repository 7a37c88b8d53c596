"""The batch indexing job: sources -> reader -> encoder -> Parquet shards -> FAISS, resumable."""
from __future__ import annotations

import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from . import __version__
from . import faiss_index
from .audio import file_sha256
from .encoders import DEFAULT_ENCODER, Encoder, get_encoder, resolve_device
from .conditioning import (CONDITIONING, DEFAULT_BANDWIDTH_HZ, DEFAULT_LOUDNESS_DB,  # noqa: F401 (re-exported)
                           DEFAULT_NOISE_TWIN_DB, DEFAULT_TRIM_DB)
from .errors import IndexFormatError, SimsearchError
from .reader import Chunk, stream_chunks
from .sources import Item, collect
from .store import FORMAT_VERSION, LANDMARKS, IndexDir, shard_schema

log = logging.getLogger(__name__)
DEFAULT_WINDOW_S = 10.0
OFF = "off"  # an option given as "off" is recorded as None (not applied)


@dataclass
class IndexOptions:
    """Everything `simsearch index` takes besides the source and the output folder."""

    encoder: str = DEFAULT_ENCODER
    checkpoint: str | None = None
    device: str = "auto"
    batch_size: int | None = None  # None: 32 on CPU, the largest that pays off on a GPU (autobatch)
    window_s: float | None = None  # None: the index's recorded value, else DEFAULT_WINDOW_S
    hop_s: float | None = None
    label_regex: str | None = None
    pooling: str | None = None
    layer: int | None = None
    num_workers: int | None = None
    shard_rows: int = 2048
    strict: bool = False
    max_duration_s: float | None = None
    progress: bool = True
    loudness: float | str | None = None  # dBFS target; "off": none; None: the index's value, else DEFAULT_LOUDNESS_DB
    trim: float | str | None = None  # dB under the gated level; "off": none; None: the index's, else DEFAULT_TRIM_DB
    bandwidth: float | str | None = None  # low-pass Hz; "off": none; None: the index's, else DEFAULT_BANDWIDTH_HZ
    noise_twin: float | str | None = None  # twin SNR dB; "off": none; None: the index's, else DEFAULT_NOISE_TWIN_DB
    fingerprint: bool | None = None  # keep landmark fingerprints per row; None: the index's choice, else True
    engine: str = "local"  # "ray": decode and embed as a Ray Data job (simsearch/ray_engine.py)
    ray_address: str | None = None  # None: start a local Ray
    index_type: str | None = None  # auto|flat|hnsw|ivfpq; None: the index's recorded choice, else auto
    max_memory: str | int | None = None  # FAISS memory budget for auto ("8G"); None: the recorded one, else none

    def encoder_options(self) -> dict:
        """What the encoder is built with, recorded in index.json so queries rebuild the same one."""
        opts = {k: v for k, v in {"pooling": self.pooling, "layer": self.layer}.items() if v is not None}
        for key, default in CONDITIONING.items():
            value = getattr(self, key)
            opts[key] = default if value is None else None if value == OFF else float(value)
        return opts


@dataclass
class IndexSummary:
    """What one run did, for the closing line and for tests."""

    indexed: int = 0
    skipped: int = 0
    removed: int = 0
    errors: int = 0
    rows: int = 0
    seconds: float = 0.0
    error_list: list[dict] = field(default_factory=list)

    def line(self) -> str:
        return (f"indexed {self.indexed} files, skipped {self.skipped} unchanged, removed {self.removed}, "
                f"errors {self.errors}; {self.rows} rows in the index ({self.seconds:.1f} s)")


def encoder_record(enc: Encoder, options: IndexOptions) -> dict:
    """The encoder as index.json records it: enough to rebuild the same one at query time."""
    return {**enc.describe(), "options": options.encoder_options()}


def check_compatible(info: dict, enc: Encoder, options: IndexOptions, root: Path) -> None:
    """An index holds one encoder's space; refuse to mix another one into it."""
    old = info["encoder"]
    new = encoder_record(enc, options)
    for key in ("name", "checkpoint", "dim", "pooling", *CONDITIONING):
        if old.get(key) != new.get(key):
            raise IndexFormatError(
                f"{root} was built with encoder {old.get('name')} ({key}={old.get(key)!r}), not {new.get(key)!r}; "
                "use another --out folder")
    if (info.get("window_s"), info.get("hop_s")) != (options.window_s, options.hop_s):
        raise IndexFormatError(f"{root} uses window {info.get('window_s')} s / hop {info.get('hop_s')} s; "
                               "use the same values or another --out folder")


class ShardWriter:
    """Buffers whole files' rows and writes a shard once enough have gathered."""

    def __init__(self, d: IndexDir, dim: int, extras: dict[str, int], shard_rows: int, next_id: int,
                 landmarks: bool = False):
        self.d, self.shard_rows, self.next_id = d, shard_rows, next_id
        self.schema = shard_schema(dim, extras, landmarks)
        self.extras, self.landmarks = sorted(extras), landmarks
        self.rows: dict[str, list] = {f.name: [] for f in self.schema}
        # Shards are compressed and fsynced on a background thread so the encoder never waits on the disk.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        self._writes: list[Future] = []

    def add_file(self, item: Item, sha: str, sample_rate: int, windows: list, outputs: list[dict]) -> None:
        for w, out in zip(windows, outputs):
            self.rows["id"].append(self.next_id)
            self.next_id += 1
            self.rows["path"].append(item.path)
            self.rows["sha256"].append(sha)
            self.rows["offset_s"].append(float(w[0]))
            self.rows["duration_s"].append(float(w[1]))
            self.rows["sample_rate"].append(sample_rate)
            self.rows["label"].append(item.label)
            self.rows["metadata"].append(item.metadata_json())
            self.rows["embedding"].append(out["embedding"])
            for name in self.extras:
                self.rows[name].append(out[name])
            if self.landmarks:
                self.rows[LANDMARKS].append(out.get(LANDMARKS) or b"")
        if len(self.rows["id"]) >= self.shard_rows:
            self._submit()

    def flush(self) -> None:
        """Write what is buffered and wait until every shard is on disk."""
        self._submit()
        for fut in self._writes:
            fut.result()
        self._writes = []

    def _submit(self) -> None:
        if not self.rows["id"]:
            return
        while len(self._writes) >= 2:  # at most two shards in flight bounds the memory they hold
            self._writes.pop(0).result()
        cols = {}
        for f in self.schema:
            vals = self.rows[f.name]
            if pa.types.is_fixed_size_list(f.type):
                flat = pa.array(np.stack(vals).astype(np.float32).ravel(), pa.float32())
                cols[f.name] = pa.FixedSizeListArray.from_arrays(flat, f.type.list_size)
            else:
                cols[f.name] = pa.array(vals, f.type)
        self._writes.append(self._pool.submit(self.d.write_shard, pa.table(cols, schema=self.schema)))
        self.rows = {f.name: [] for f in self.schema}


class ErrorLog:
    """errors.jsonl for this run: one line per bad file, flushed as it happens."""

    def __init__(self, path: Path, strict: bool):
        self.f = open(path, "w")
        self.strict, self.entries = strict, []

    def add(self, path: str, reason: str) -> None:
        entry = {"path": path, "reason": reason}
        self.entries.append(entry)
        self.f.write(json.dumps(entry) + "\n")
        self.f.flush()
        log.warning("skipped %s: %s", path, reason)
        if self.strict:
            raise SimsearchError(f"{path}: {reason} (--strict)")

    def close(self) -> None:
        self.f.close()


BUCKET_BATCHES = 4  # windows gathered before sorting by length: enough to cut padding, few enough to bound memory


def _embed_pending(enc: Encoder, pending: list, batch_size: int, flush_all: bool) -> list:
    """Embed (item, window_index, samples) in batches of similar length; returns (item, window_index, output).

    Sorting a few batches' worth by length before cutting batches means short clips are not padded to
    the longest one in the queue; the leftover (< one batch) waits for the next round or the final flush.
    """
    if not flush_all and len(pending) < batch_size * BUCKET_BATCHES:
        return []
    pending.sort(key=lambda p: len(p[2]))
    take = len(pending) if flush_all else len(pending) // batch_size * batch_size
    ready, pending[:] = pending[:take], pending[take:]
    done = []
    for s in range(0, len(ready), batch_size):
        batch = ready[s:s + batch_size]
        out = enc.embed_batch([b[2] for b in batch])
        for j, (item, wi, _) in enumerate(batch):
            done.append((item, wi, {k: v[j] for k, v in out.items()}))
    return done


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

                from .autobatch import find_batch_size

                options = replace(options, batch_size=find_batch_size(enc, resolve_device(options.device),
                                                                      options.window_s))
            if options.engine == "ray":
                from .ray_engine import embed_files_ray

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


def _with_recorded_defaults(options: IndexOptions, info: dict | None) -> IndexOptions:
    """On resume, settings the user did not repeat come from index.json, so a re-run means 'the same again'."""
    from dataclasses import replace

    info = info or {}
    window = options.window_s if options.window_s is not None else info.get("window_s", DEFAULT_WINDOW_S)
    hop = options.hop_s if options.hop_s is not None else info.get("hop_s", window)
    regex = options.label_regex if options.label_regex is not None else info.get("label_regex")
    conditioning = {}
    for key in CONDITIONING:  # indexes from before these options recorded none: keep them off
        value = getattr(options, key)
        if value is None and info:
            recorded = info.get("encoder", {}).get("options", {}).get(key)
            value = OFF if recorded is None else recorded
        conditioning[key] = value
    fingerprint = options.fingerprint
    if fingerprint is None:  # indexes from before fingerprints keep none, so all their rows stay alike
        fingerprint = "fingerprint" in info if info else True
    return replace(options, window_s=window, hop_s=hop, label_regex=regex, fingerprint=fingerprint, **conditioning)


def _embed_files(d: IndexDir, enc: Encoder, todo: list[Item], shas: dict, options: IndexOptions, next_id: int,
                 errors: ErrorLog) -> int:
    """Stream windows through the encoder; a file's rows are written only once all its windows are embedded."""
    if not todo:
        return 0
    extras = {k: v.shape[-1] for k, v in enc.embed_batch([np.zeros(enc.sample_rate, np.float32) + 1e-3]).items()
              if k != "embedding"}
    writer = ShardWriter(d, enc.dim, extras, options.shard_rows, next_id, bool(options.fingerprint))
    pending: list = []  # (item index, window index, samples)
    state: dict[int, dict] = {}  # item index -> {"windows": [(offset, dur)], "out": {wi: output}, "last": bool}
    indexed = 0
    bar = tqdm(total=len(todo), desc=f"embedding ({enc.name})", unit="file", disable=not options.progress)

    def finish_ready() -> None:
        nonlocal indexed
        for i in [i for i, s in state.items() if s["last"] and len(s["out"]) == len(s["windows"])]:
            s = state.pop(i)
            outs = [{**s["out"][k], LANDMARKS: s["landmarks"][k]} for k in range(len(s["windows"]))]
            writer.add_file(todo[i], shas[todo[i].path], s.get("sr", enc.sample_rate), s["windows"], outs)
            indexed += 1
            bar.update(1)

    def absorb(results: list) -> None:
        for i, wi, out in results:
            if i in state:
                state[i]["out"][wi] = out

    chunks = stream_chunks([t.path for t in todo], enc.sample_rate, options.window_s, options.hop_s, options.num_workers,
                           options.max_duration_s, bool(options.fingerprint))
    for chunk in chunks:
        chunk: Chunk
        s = state.setdefault(chunk.item, {"windows": [], "out": {}, "landmarks": [], "last": False})
        if chunk.error:
            state.pop(chunk.item)
            pending[:] = [p for p in pending if p[0] != chunk.item]
            errors.add(todo[chunk.item].path, chunk.error)
            bar.update(1)
            continue
        for w in chunk.windows:
            pending.append((chunk.item, len(s["windows"]), w.samples))
            s["windows"].append((w.offset_s, w.duration_s))
            s["landmarks"].append(w.landmarks)
            s["sr"] = w.source_rate
        s["last"] = chunk.last
        absorb(_embed_pending(enc, pending, options.batch_size, flush_all=False))
        finish_ready()
    absorb(_embed_pending(enc, pending, options.batch_size, flush_all=True))
    finish_ready()
    writer.flush()
    bar.close()
    return indexed


def rebuild(d: IndexDir, enc_record: dict | None = None, options: IndexOptions | None = None,
            source: str | None = None, incremental: bool = False, index_type: str | None = None,
            max_memory: str | int | None = None) -> int:
    """Bring faiss.index and index.json in line with the shards, the source of truth; returns the row count.

    `incremental` updates the existing FAISS index in place where its type allows (see index_build);
    otherwise, and from `simsearch rebuild`, it is built again. The index type and memory budget default to
    what index.json recorded, else "auto" without a budget.
    """
    from . import ann
    from . import fingerprint
    from .index_build import extra_columns, has_landmarks, write_faiss

    info = d.read_info() if d.exists() else {}
    if enc_record is None and not info:
        raise IndexFormatError(f"{d.root}: no index.json; cannot tell which encoder made the shards")
    dim = (enc_record or info["encoder"])["dim"]
    old = info.get("faiss", {})
    meta = d.live_rows(["id", "path"])
    ids = np.asarray(meta.column("id").to_numpy(), dtype=np.int64)
    requested = index_type or getattr(options, "index_type", None) or old.get("requested") or "auto"
    budget = max_memory if max_memory is not None else getattr(options, "max_memory", None)
    budget = ann.parse_memory(budget if budget is not None else old.get("max_memory"))
    high_water = info.get("next_id")
    record = write_faiss(d, ids, dim, old, requested, budget, incremental, high_water)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    new = dict(info)
    new.update({
        "format_version": FORMAT_VERSION,
        "simsearch_version": __version__,
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


__all__ = ["IndexOptions", "IndexSummary", "run_index", "rebuild"]
