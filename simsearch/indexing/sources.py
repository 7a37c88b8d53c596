"""Turn what the user points at (a folder or a CSV/Parquet manifest) into a list of items to index."""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import re
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from simsearch.audio import containers
from simsearch.audio.decode import AUDIO_EXTENSIONS
from simsearch.errors import AudioError, SimsearchError

log = logging.getLogger(__name__)
MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")
_KINDS = {stat.S_IFIFO: "a named pipe (FIFO)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory"}


@dataclass
class Item:
    """One file to index, with its label and any metadata columns the manifest carried."""

    path: str
    label: str | None = None
    metadata: dict = field(default_factory=dict)

    def metadata_json(self) -> str:
        return json.dumps(self.metadata, sort_keys=True, default=str)


@dataclass
class Unreadable:
    """A path the walk or the manifest met that cannot be indexed now; `folder`: a folder that could not be listed."""

    path: str
    reason: str
    folder: bool = False


class NotRegularFile(OSError):
    """The path is a pipe, device, socket or folder: reading it could block forever or never end."""


def not_regular(mode: int) -> str | None:
    """Why a file of this st_mode cannot be indexed, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return f"not a regular file: {_KINDS.get(stat.S_IFMT(mode), 'a special file')}"


def sha256_regular(path: str, chunk: int = 1 << 20) -> str:
    """Content hash of a regular file; refuses pipes and devices before reading, so hashing never hangs.

    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer; fstat on the open
    descriptor then checks the very file that would be read (a path swapped after a stat cannot slip by).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        reason = not_regular(os.fstat(fd).st_mode)
        if reason:
            raise NotRegularFile(reason)
        h = hashlib.sha256()
        with os.fdopen(fd, "rb", closefd=False) as f:
            while block := f.read(chunk):
                h.update(block)
        return h.hexdigest()
    finally:
        os.close(fd)


def _label_from_regex(name: str, pattern: re.Pattern | None) -> str | None:
    if pattern is None:
        return None
    m = pattern.search(name)
    if not m:
        return None
    return m.group(1) if m.groups() else m.group(0)


def walk_folder(root: Path, label_regex: str | None = None) -> tuple[list[Item], list[Unreadable]]:
    """Recursive walk; label = parent folder relative to root (None at the root) unless a regex is given."""
    pattern = re.compile(label_regex) if label_regex else None
    items, bad = [], []

    def on_error(err: OSError) -> None:
        bad.append(Unreadable(os.path.abspath(str(err.filename)), f"cannot list folder ({err.strerror})", folder=True))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames if d.lower().endswith(AUDIO_EXTENSIONS)]:
            if not name.lower().endswith(AUDIO_EXTENSIONS + containers.TAR_SUFFIXES):
                continue
            full = Path(dirpath) / name
            rel_parent = Path(dirpath).relative_to(root)
            if pattern is not None:
                label = _label_from_regex(name, pattern)
            else:
                label = str(rel_parent) if str(rel_parent) != "." else None
            try:
                reason = not_regular(os.stat(full).st_mode)  # follows links: a link to /dev/zero is a device
            except FileNotFoundError:
                reason = "broken symbolic link" if full.is_symlink() else "vanished while listing"
            except OSError as e:
                reason = f"cannot read ({e.strerror or e})"
            if reason:
                bad.append(Unreadable(os.path.abspath(full), reason))
            else:
                items.append(Item(os.path.abspath(full), label))
    return items, bad


def _typed(text: str) -> object:
    """A CSV cell as a number when its text is the number's own spelling, else the text itself.

    So an id column with blanks stays 999 (not 999.0), while "007" or "1.50" keep their spelling: a filter
    value always matches the text the manifest holds.
    """
    try:
        if re.fullmatch(r"-?\d+", text) and str(int(text)) == text:
            return int(text)
        x = float(text)
        if math.isfinite(x) and repr(x) == text:
            return x
    except ValueError:
        pass
    return text


def _read_csv(path: Path) -> tuple[list[dict], list[str]]:
    """CSV rows as dicts of typed cells (blank cells left out); bad quoting or binary data is one clear error."""
    reader = None
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, strict=True)
            header = next(reader, None)
            if not header or not any(h.strip() for h in header):
                raise SimsearchError(f"{path}: the manifest is empty; it needs a header row with a 'path' column")
            header = [h.strip() for h in header]
            rows = []
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue
                if len(cells) > len(header):
                    raise SimsearchError(f"{path}: line {reader.line_num} has {len(cells)} fields but the header has "
                                         f"{len(header)}; check the quoting of that line")
                rows.append({h: _typed(c) for h, c in zip(header, cells) if c.strip()})
            return rows, header
    except UnicodeDecodeError:
        raise SimsearchError(f"{path}: not a UTF-8 text CSV (binary data?); give a .csv or .parquet manifest") from None
    except csv.Error as e:
        line = reader.line_num if reader is not None else 1
        raise SimsearchError(f"{path}: not a readable CSV (line {line}: {e}); check its quoting") from None
    except OSError as e:
        raise SimsearchError(f"{path}: cannot read the manifest ({e.strerror or e})") from None


def _read_parquet(path: Path) -> tuple[list[dict], list[str]]:
    """Parquet rows with their own types (an int column with nulls stays int); a corrupt file is one clear error."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise SimsearchError(f"{path}: not a readable Parquet file ({first})") from None
    rows = [{k: v for k, v in r.items() if v is not None and not (isinstance(v, float) and v != v)}
            for r in table.to_pylist()]
    return rows, table.column_names


def read_manifest(path: Path, label_regex: str | None = None) -> tuple[list[Item], list[Unreadable]]:
    """CSV or Parquet with a `path` column; `label` and every other column are kept. One item per file."""
    if path.suffix.lower() == ".csv":
        rows, columns = _read_csv(path)
    else:
        rows, columns = _read_parquet(path)
    if "path" not in columns:
        shown = ", ".join(repr(str(c))[:40] for c in columns[:10]) + (", ..." if len(columns) > 10 else "")
        raise SimsearchError(f"{path}: manifest needs a 'path' column (has: {shown or 'none'})")
    pattern = re.compile(label_regex) if label_regex else None
    first_line = 2 if path.suffix.lower() == ".csv" else 1
    items, bad, seen = [], [], {}
    for n, row in enumerate(rows, start=first_line):
        raw = row.pop("path", None)
        if raw is None or not str(raw).strip():
            bad.append(Unreadable(str(path), f"row {n}: blank 'path' cell; row skipped"))
            continue
        p = Path(str(raw))
        full = os.path.abspath(p if p.is_absolute() else path.parent / p)  # also folds ./a/../b spellings
        label = row.pop("label", None)
        label = None if label is None else str(label)
        if pattern is not None and label is None:
            label = _label_from_regex(Path(full).name, pattern)
        item = Item(full, label, row)
        key = os.path.realpath(full)  # the same file however it is spelled (links, relative parts)
        if key in seen:
            kept_n, kept = seen[key]
            if (kept.label, kept.metadata_json()) != (item.label, item.metadata_json()):
                bad.append(Unreadable(full, f"listed again in row {n} with other label or metadata; "
                                            f"kept the first listing (row {kept_n})"))
            else:
                log.info("%s: row %d repeats row %d; indexed once", path, n, kept_n)
            continue
        seen[key] = (n, item)
        items.append(item)
    return items, bad


def container_items(src: Path, label_regex: str | None = None) -> tuple[list[Item], list[Unreadable]]:
    """Items of a tar shard or a saved Hugging Face dataset, one per clip inside, read in place (audio.containers)."""
    pattern = re.compile(label_regex) if label_regex else None
    try:
        found = (containers.tar_members(src, AUDIO_EXTENSIONS) if containers.is_tar(src)
                 else containers.dataset_members(src))
        items = []
        for path, label, meta in found:
            if pattern is not None:
                label = _label_from_regex(PurePosixPath(path.rpartition(containers.SEP)[2]).name, pattern)
            items.append(Item(path, label, meta))
        return items, []
    except (OSError, tarfile.TarError, ValueError, AudioError) as e:
        return [], [Unreadable(str(src), f"cannot read the container ({e})")]


def with_shards(items: list[Item], bad: list[Unreadable], label_regex: str | None) -> tuple[list[Item], list[Unreadable]]:
    """A folder's tar shards (WebDataset) opened into their clips, beside the folder's loose audio files."""
    out = []
    for item in items:
        if containers.is_tar(Path(item.path)):
            inner, why = container_items(Path(item.path), label_regex)
            out += inner
            bad += why
        else:
            out.append(item)
    return out, bad


def collect(src: str | Path, label_regex: str | None = None) -> tuple[list[Item], list[Unreadable]]:
    """Items from a folder (its tar shards opened), a manifest file, a tar shard or a saved Hugging Face dataset,
    and the paths that cannot be indexed (with why)."""
    src = Path(src)
    if containers.is_dataset(src) or containers.is_tar(src):
        return container_items(src, label_regex)
    if src.is_dir():
        return with_shards(*walk_folder(src, label_regex), label_regex)
    if src.is_file() and src.suffix.lower() in MANIFEST_SUFFIXES:
        return read_manifest(src, label_regex)
    if not src.exists():
        raise SimsearchError(f"{src}: no such folder or manifest")
    raise SimsearchError(f"{src}: expected a folder of audio, a .csv/.parquet manifest with a 'path' column, a .tar "
                         "shard, or a Hugging Face dataset saved with save_to_disk")
