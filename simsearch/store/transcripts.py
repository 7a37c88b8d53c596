"""Spoken words beside the shards: transcripts/part-*.parquet, one row per transcribed window, keyed by content.

A window is keyed by its file's sha256 and its offset, not by row id, so transcripts survive re-labelling,
compaction and `simsearch rebuild`, a removed row simply finds no partner, and a file indexed twice is transcribed
once. Part files are immutable and written atomically, so a crash loses at most the part being written; a reader
takes every part there is (a key found twice keeps its newest), so no index.json entry has to name them.
"""
from __future__ import annotations

import json
import time
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from simsearch.files import atomic_write_bytes
from simsearch.store.folder import IndexDir

DIR = "transcripts"
MERGE_PARTS = 8  # more parts than this are merged into one (dropping windows no row has any more)
SCHEMA = pa.schema([
    pa.field("sha256", pa.string()),
    pa.field("offset_ms", pa.int64()),
    pa.field("text", pa.string()),
    pa.field("words", pa.string()),  # JSON [[word, start_s, end_s, probability], ...], times within the window
    pa.field("no_speech", pa.float32()),
])


def offset_key(offset_s) -> np.ndarray:
    """Window offsets as whole milliseconds, the join key beside sha256."""
    return np.round(np.asarray(offset_s, dtype=np.float64) * 1000).astype(np.int64)


def _parts(d: IndexDir) -> list:
    folder = d.root / DIR
    return sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []


def read(d: IndexDir) -> pd.DataFrame:
    """Every transcribed window (sha256, offset_ms, text, words, no_speech); empty when there are none."""
    tables = []
    for path in _parts(d):
        try:
            tables.append(pq.read_table(path, schema=SCHEMA))
        except FileNotFoundError:  # merged away by a writer since we listed the folder
            continue
    if not tables:
        return SCHEMA.empty_table().to_pandas()
    df = pa.concat_tables(tables).to_pandas()
    return df.drop_duplicates(["sha256", "offset_ms"], keep="last").reset_index(drop=True)


def write_part(d: IndexDir, rows: list[dict]) -> None:
    """One new immutable part file of transcribed windows (dicts with the SCHEMA's fields; words as a list)."""
    if rows:
        _write(d, pa.Table.from_pylist([{**r, "words": json.dumps(r["words"])} for r in rows], schema=SCHEMA))


def _write(d: IndexDir, table: pa.Table) -> None:
    name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"  # sorts oldest first: newest wins on read
    atomic_write_bytes(d.root / DIR / name,
                       lambda f: pq.write_table(table, f, compression="zstd"))


def merge(d: IndexDir, live: pd.DataFrame) -> None:
    """Fold many parts into one holding only the windows of `live` rows (sha256, offset_s); the new part is
    written before the old ones go, so a reader in between sees duplicates (which it drops), never a gap."""
    parts = _parts(d)
    if len(parts) <= MERGE_PARTS:
        return
    df = read(d)
    keep = pd.MultiIndex.from_arrays([live["sha256"], offset_key(live["offset_s"])])
    df = df[pd.MultiIndex.from_arrays([df["sha256"], df["offset_ms"]]).isin(keep)]
    _write(d, pa.Table.from_pandas(df, schema=SCHEMA, preserve_index=False))
    for path in parts:
        path.unlink(missing_ok=True)


def for_rows(d: IndexDir, rows: pd.DataFrame) -> pd.DataFrame:
    """Transcripts aligned with `rows` (same index; columns text, words as lists, no_speech); NaN where none."""
    df = read(d)
    key = pd.DataFrame({"sha256": rows["sha256"].to_numpy(), "offset_ms": offset_key(rows["offset_s"])},
                       index=rows.index)
    out = key.merge(df, on=["sha256", "offset_ms"], how="left")
    out.index = rows.index
    out["words"] = [json.loads(w) if isinstance(w, str) else [] for w in out["words"]]
    return out[["text", "words", "no_speech"]]
