"""Shard writer (rows to Parquet, flushed as they fill) and the per-run error log of skipped files."""
from __future__ import annotations

import json
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from simsearch.errors import SimsearchError
from simsearch.indexing.sources import Item
from simsearch.store.folder import LANDMARKS, IndexDir, shard_schema

log = logging.getLogger(__name__)


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


def write_relabelled(d: IndexDir, relabel: dict[str, Item]) -> int:
    """Copy the rows of files whose label or metadata changed (content unchanged) into new shards with the new values.

    The copies keep their ids and vectors, so faiss.index is untouched; being newer, they shadow the old rows,
    which compaction then removes. Returns the rows rewritten.
    """
    if not relabel:
        return 0
    shards = d.shard_paths()
    target = pq.read_schema(shards[-1])  # written like the newest shard, whose columns say what the index keeps
    owner, done = d._owners(shards), 0
    for i, p in enumerate(shards):
        mine = [path for path in relabel if owner.get(path) == i]
        if not mine:
            continue
        t = d.read_shard(p)
        t = t.filter(pc.is_in(t.column("path"), pa.array(mine, pa.string())))
        paths = t.column("path").to_pylist()
        cols = {"label": pa.array([relabel[x].label for x in paths], pa.string()),
                "metadata": pa.array([relabel[x].metadata_json() for x in paths], pa.string())}
        out = [cols.get(f.name, t.column(f.name) if f.name in t.column_names else pa.nulls(t.num_rows, f.type))
               for f in target]
        d.write_shard(pa.Table.from_arrays(out, schema=target.remove_metadata()))
        done += t.num_rows
    return done


class ErrorLog:
    """errors.jsonl for this run: one line per bad file, flushed as it happens."""

    def __init__(self, path: Path, strict: bool):
        self.f = open(path, "w")
        self.strict, self.entries = strict, []

    def add(self, path: str, reason: str, fatal: bool = True) -> None:
        """Record a problem; under --strict a `fatal` one stops the run (a shard set aside is repaired, not fatal)."""
        entry = {"path": path, "reason": reason}
        self.entries.append(entry)
        self.f.write(json.dumps(entry) + "\n")
        self.f.flush()
        log.warning("skipped %s: %s", path, reason)
        if self.strict and fatal:
            raise SimsearchError(f"{path}: {reason} (--strict)")

    def close(self) -> None:
        self.f.close()

