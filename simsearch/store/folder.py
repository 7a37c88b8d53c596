"""The index folder on disk: Parquet shards (source of truth), index.json, errors log, write lock."""
from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from simsearch.errors import IndexFormatError, IndexLockedError
from simsearch.files import atomic_write_bytes, atomic_write_text, file_sha256

FORMAT_VERSION = 2  # 2: index.json names its faiss file and records each shard's sha256 and settings
CRASH_ENV = "SIMSEARCH_CRASH_AT"  # crash tests: "N" ends the process just before its N-th durable write
SETTINGS_KEY = b"simsearch"  # Parquet schema metadata: the settings that made a shard (see integrity.py)
META_COLUMNS = ["id", "path", "sha256", "offset_s", "duration_s", "sample_rate", "label", "metadata"]
LANDMARKS = "landmarks"  # packed fingerprint landmarks per row (simsearch.audio.fingerprint), in indexes that keep them


_write_steps = 0


def write_step() -> None:
    """Count durable writes; with SIMSEARCH_CRASH_AT=N the N-th one exits as a kill would, for crash-point tests."""
    global _write_steps
    _write_steps += 1
    if os.environ.get(CRASH_ENV) == str(_write_steps):
        os._exit(70)


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
        self.quarantine_dir = self.shards_dir / "quarantine"
        # A writer's working set: shard names set aside or compacted away stay on disk, unread, until the
        # next commit no longer lists them (readers of the committed index.json may still be loading them).
        self.excluded: set[str] = set()
        self.written_sha: dict[str, str] = {}  # sha256 of shards this process wrote, recorded at commit
        self.shard_settings: dict | None = None  # recorded in each shard this process writes

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
        write_step()
        atomic_write_text(self.info_path, json.dumps(info, indent=2, sort_keys=True) + "\n")

    def _all_shards(self) -> list[Path]:
        return sorted(self.shards_dir.glob("shard-*.parquet")) if self.shards_dir.exists() else []

    def shard_paths(self, names: list[str] | None = None) -> list[Path]:
        """Shards in write order (zero-padded sequence numbers); `names` restricts to a committed list."""
        if names is not None:
            return [self.shards_dir / Path(n).name for n in sorted(names)]
        return [p for p in self._all_shards() if p.name not in self.excluded]

    def next_shard_path(self) -> Path:
        shards = self._all_shards()  # excluded files still hold their names until the commit deletes them
        seq = int(shards[-1].stem.split("-")[1]) + 1 if shards else 0
        return self.shards_dir / f"shard-{seq:06d}.parquet"

    def write_shard(self, table: pa.Table, path: Path | None = None) -> Path:
        """Write a new shard (never one a commit lists), with page checksums and this run's settings."""
        path = path or self.next_shard_path()
        if self.shard_settings is not None:
            table = table.replace_schema_metadata({SETTINGS_KEY: json.dumps(self.shard_settings, sort_keys=True)})
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd", write_page_checksum=True)
        data = buf.getvalue()
        write_step()
        atomic_write_bytes(path, lambda f: f.write(data))
        self.written_sha[path.name] = hashlib.sha256(data).hexdigest()
        return path

    def read_shard(self, path: Path, columns: list[str] | None = None) -> pa.Table:
        try:
            return pq.read_table(path, columns=columns, page_checksum_verification=True)
        except FileNotFoundError:
            raise
        except (pa.ArrowInvalid, OSError) as e:
            raise IndexFormatError(f"{path}: corrupt shard ({e}); run `simsearch rebuild {self.root}` to set it "
                                   "aside, then `simsearch index` again to re-embed its files") from None

    def faiss_file(self, info: dict) -> Path:
        """The FAISS file a committed index.json names (indexes from before format 2 used faiss.index)."""
        return self.root / Path(info.get("faiss", {}).get("file") or self.faiss_path.name).name

    def commit(self, info: dict, previous: dict) -> None:
        """Make `info` the committed state (one atomic rename of index.json), then delete what it no longer names.

        Every file `previous` listed stays until the new index.json is on disk and fsynced, so a reader that
        loaded the old index.json finds its files or sees the generation moved and reads again.
        """
        shards = self.shard_paths()
        old_sums = previous.get("shard_sha256", {}) if previous else {}
        sums = {}
        for p in shards:
            known = self.written_sha.get(p.name) or old_sums.get(p.name)
            sums[p.name] = known or file_sha256(p)
        info["shards"] = [p.name for p in shards]  # the committed set readers load (see Index.open)
        info["shard_sha256"] = sums
        self.write_info(info)
        keep = set(info["shards"])
        for p in self._all_shards():
            if p.name not in keep:
                write_step()
                p.unlink(missing_ok=True)
        faiss_keep = self.faiss_file(info).name
        for p in [self.faiss_path, *self.root.glob("faiss-*.index")]:
            if p.name != faiss_keep and p.exists():
                write_step()
                p.unlink(missing_ok=True)
        self.excluded.clear()
        self.written_sha.clear()

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
        tables = list(self.iter_live(columns, shards))
        if not tables:
            return pa.table({c: [] for c in (columns or META_COLUMNS)})
        return pa.concat_tables(tables, promote_options="default")

    def iter_live(self, columns: list[str] | None = None, shards: list[str] | None = None) -> Iterator[pa.Table]:
        """live_rows one shard at a time (the same rows, in the same order), so a pass over a collection larger
        than memory holds one shard."""
        paths = self.shard_paths(shards)
        owner = self._owners(paths)
        for i, p in enumerate(paths):
            want = columns if columns is None or "path" in columns else columns + ["path"]
            # Shards written before (or without) fingerprints have no landmarks column: their rows read as empty.
            blank = LANDMARKS in (want or []) and LANDMARKS not in pq.read_schema(p).names
            t = self.read_shard(p, [c for c in want if c != LANDMARKS] if blank else want)
            if blank:
                t = t.append_column(LANDMARKS, pa.nulls(t.num_rows, pa.binary()))
            keep = np.fromiter((owner[x] == i for x in t.column("path").to_pylist()), bool, t.num_rows)
            t = t.filter(pa.array(keep)) if not keep.all() else t
            yield t.select(columns) if columns else t

    def compact(self, drop: set[str] = frozenset()) -> int:
        """Remove rows of `drop` and rows shadowed by newer shards; returns rows removed.

        A shard that changes is written anew under the next sequence number and the old one leaves the
        working set only: it is deleted by commit() once the new index.json no longer lists it, so a
        crash anywhere before that leaves the last committed state whole.
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
            self.excluded.add(p.name)
        return removed

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

