"""The index folder on disk: Parquet shards (source of truth), index.json, errors log, write lock."""
from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from simsearch.errors import IndexFormatError, IndexLockedError
from simsearch.files import atomic_write_bytes, atomic_write_text

FORMAT_VERSION = 1
META_COLUMNS = ["id", "path", "sha256", "offset_s", "duration_s", "sample_rate", "label", "metadata"]
LANDMARKS = "landmarks"  # packed fingerprint landmarks per row (simsearch.audio.fingerprint), in indexes that keep them


def shard_schema(dim: int, extras: dict[str, int], landmarks: bool = False) -> pa.Schema:
    """One row per clip or window; extras are side outputs such as YAMNet's tag scores."""
    fields = [
        pa.field("id", pa.int64()),
        pa.field("path", pa.string()),
        pa.field("sha256", pa.string()),
        pa.field("offset_s", pa.float64()),
        pa.field("duration_s", pa.float64()),
        pa.field("sample_rate", pa.int32()),
        pa.field("label", pa.string()),
        pa.field("metadata", pa.string()),
        pa.field("embedding", pa.list_(pa.float32(), dim)),
    ]
    fields += [pa.field(name, pa.list_(pa.float32(), k)) for name, k in sorted(extras.items())]
    if landmarks:
        fields.append(pa.field(LANDMARKS, pa.binary()))
    return pa.schema(fields)


class IndexDir:
    """Paths and low-level reads/writes of one index folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.shards_dir = self.root / "shards"
        self.info_path = self.root / "index.json"
        self.faiss_path = self.root / "faiss.index"
        self.errors_path = self.root / "errors.jsonl"
        self.lock_path = self.root / ".lock"

    def exists(self) -> bool:
        return self.info_path.exists()

    def read_info(self) -> dict:
        if not self.info_path.exists():
            raise IndexFormatError(f"{self.root}: not an index folder (no index.json); build one with `simsearch index`")
        try:
            info = json.loads(self.info_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise IndexFormatError(f"{self.info_path}: unreadable ({e}); rebuild the index") from None
        for key in ("encoder", "dim", "metric"):
            if key not in info:
                raise IndexFormatError(f"{self.info_path}: missing '{key}'; rebuild the index")
        return info

    def write_info(self, info: dict) -> None:
        atomic_write_text(self.info_path, json.dumps(info, indent=2, sort_keys=True) + "\n")

    def shard_paths(self, names: list[str] | None = None) -> list[Path]:
        """Shards in write order (zero-padded sequence numbers); `names` restricts to a committed list."""
        if names is not None:
            return [self.shards_dir / n for n in sorted(names)]
        return sorted(self.shards_dir.glob("shard-*.parquet")) if self.shards_dir.exists() else []

    def next_shard_path(self) -> Path:
        shards = self.shard_paths()
        seq = int(shards[-1].stem.split("-")[1]) + 1 if shards else 0
        return self.shards_dir / f"shard-{seq:06d}.parquet"

    def write_shard(self, table: pa.Table, path: Path | None = None) -> Path:
        path = path or self.next_shard_path()
        atomic_write_bytes(path, lambda f: pq.write_table(table, f, compression="zstd"))
        return path

    def read_shard(self, path: Path, columns: list[str] | None = None) -> pa.Table:
        try:
            return pq.read_table(path, columns=columns)
        except FileNotFoundError:
            raise
        except (pa.ArrowInvalid, OSError) as e:
            raise IndexFormatError(f"{path}: corrupt shard ({e}); run `simsearch rebuild {self.root}` to set it "
                                   "aside, then `simsearch index` again to re-embed its files") from None

    def _owners(self, shards: list[Path]) -> dict[str, int]:
        """path -> position of the newest shard holding it (a re-embedded file shadows its older rows)."""
        owner = {}
        for i, p in enumerate(shards):
            for path in self.read_shard(p, ["path"]).column("path").to_pylist():
                owner[path] = i
        return owner

    def column_bytes(self, column: str, shards: list[str] | None = None) -> int:
        """Uncompressed size of one column over the shards, from the Parquet footers (no data is read)."""
        total = 0
        for p in self.shard_paths(shards):
            meta = pq.ParquetFile(p).metadata
            names = [meta.schema.column(j).path.split(".")[0] for j in range(meta.num_columns)]
            if column in names:
                j = names.index(column)
                total += sum(meta.row_group(g).column(j).total_uncompressed_size for g in range(meta.num_row_groups))
        return total

    def live_rows(self, columns: list[str] | None = None, shards: list[str] | None = None) -> pa.Table:
        """All rows of the given (default: all) shards; a path in several shards keeps its newest shard's rows."""
        paths = self.shard_paths(shards)
        owner, tables = self._owners(paths), []
        for i, p in enumerate(paths):
            want = columns if columns is None or "path" in columns else columns + ["path"]
            # Shards written before (or without) fingerprints have no landmarks column: their rows read as empty.
            blank = LANDMARKS in (want or []) and LANDMARKS not in pq.read_schema(p).names
            t = self.read_shard(p, [c for c in want if c != LANDMARKS] if blank else want)
            if blank:
                t = t.append_column(LANDMARKS, pa.nulls(t.num_rows, pa.binary()))
            keep = np.fromiter((owner[x] == i for x in t.column("path").to_pylist()), bool, t.num_rows)
            t = t.filter(pa.array(keep)) if not keep.all() else t
            tables.append(t.select(columns) if columns else t)
        if not tables:
            return pa.table({c: [] for c in (columns or META_COLUMNS)})
        return pa.concat_tables(tables, promote_options="default")

    def compact(self, drop: set[str] = frozenset()) -> int:
        """Remove rows of `drop` and rows shadowed by newer shards; returns rows removed.

        A shard that changes is written under a new sequence number before the old file goes, so a
        reader holding the last committed shard list either finds the old file or retries; no file
        that index.json lists is ever modified in place.
        """
        shards = self.shard_paths()
        owner, removed = self._owners(shards), 0
        for i, p in enumerate(shards):
            col = self.read_shard(p, ["path"]).column("path").to_pylist()
            gone = np.fromiter((x in drop or owner[x] != i for x in col), bool, len(col))
            if not gone.any():
                continue
            removed += int(gone.sum())
            if not gone.all():
                self.write_shard(self.read_shard(p).filter(pa.array(~gone)))
            p.unlink()
        return removed

    def quarantine_corrupt(self) -> list[Path]:
        """Move shards that cannot be read to shards/corrupt/, so the rest stays usable; returns them."""
        bad = []
        for p in self.shard_paths():
            try:
                pq.read_metadata(p)
                pq.read_table(p, columns=["id", "path"])
            except (pa.ArrowInvalid, OSError):
                dest = self.shards_dir / "corrupt" / p.name
                dest.parent.mkdir(exist_ok=True)
                os.replace(p, dest)
                bad.append(dest)
        return bad

    def remove_stale_temp_files(self) -> None:
        """Temp files left by a killed job are never valid data."""
        for d in (self.root, self.shards_dir):
            if d.exists():
                for tmp in d.glob(".*.tmp"):
                    tmp.unlink(missing_ok=True)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive write lock; a second writer fails at once instead of corrupting the folder."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise IndexLockedError(f"{self.root}: another job is writing this index; wait for it to finish") from None
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            yield
        finally:
            os.close(fd)

