"""Audio kept inside containers, read in place: WebDataset-style tar shards and Hugging Face datasets saved to disk.

Large collections are rarely loose files. A clip inside a container has a path of its own, CONTAINER#MEMBER
(`/data/shard-000017.tar#sample42.flac`, `/data/fsdd-ds#train/731`), which search results carry and every stage
reads through here, so nothing is unpacked: a tar member is read from its offset in the archive, a dataset row from
the memory-mapped Arrow file. A member larger than MAX_MEMBER_BYTES is refused before it is read.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import tarfile
import threading
from pathlib import Path, PurePosixPath
from typing import Iterator

from simsearch.errors import AudioError

SEP = "#"
MAX_MEMBER_BYTES = 512 << 20  # one clip inside a container; larger ones are split files, not clips
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
SIDECARS = ("cls", "label", "txt", "json")  # WebDataset files beside the audio of a sample that say what it is
_lock = threading.Lock()


def is_tar(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(TAR_SUFFIXES)


def is_dataset(path: Path) -> bool:
    """A Hugging Face dataset folder written by save_to_disk (one split, or a DatasetDict)."""
    return path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file())


def split_member(path: str | Path) -> tuple[Path, str] | None:
    """(container, member) for a CONTAINER#MEMBER path whose container exists; None for an ordinary path."""
    text = str(path)
    if SEP not in text or Path(text).exists():
        return None
    head, _, member = text.rpartition(SEP)
    container = Path(head)
    return (container, member) if member and (is_tar(container) or is_dataset(container)) else None


def member_path(container: Path, member: str) -> str:
    return f"{container}{SEP}{member}"


def read_member(path: str | Path) -> bytes:
    """The bytes of one clip inside a container (AudioError when it is missing or too large)."""
    container, member = _checked(path)
    if is_tar(container):
        with tarfile.open(container) as tar:
            try:
                info = tar.getmember(member)
            except KeyError:
                raise AudioError(str(path), f"no member {member!r} in {container.name}") from None
            _check_size(path, info.size)
            f = tar.extractfile(info)
            if f is None:
                raise AudioError(str(path), "is not a regular file inside the archive")
            return f.read()
    split, row = _dataset_key(path, member)
    ds, column = _dataset(container, split)
    if not 0 <= row < len(ds):
        raise AudioError(str(path), f"no row {row} in {container.name} ({len(ds)} rows)")
    value = ds[row][column]
    data = (value or {}).get("bytes")
    if data is None and (value or {}).get("path"):  # audio kept as a file beside the dataset: only inside it
        source = (container / value["path"]).resolve()
        if not source.is_relative_to(container.resolve()):
            raise AudioError(str(path), f"the dataset row points outside {container.name} ({value['path']}); refused")
        _check_size(path, source.stat().st_size if source.is_file() else 0)
        data = source.read_bytes() if source.is_file() else None
    if data is None:
        raise AudioError(str(path), "the dataset row holds no audio bytes")
    _check_size(path, len(data))
    return data


def open_member(path: str | Path) -> io.BytesIO:
    return io.BytesIO(read_member(path))


def member_sha256(path: str | Path) -> str:
    return hashlib.sha256(read_member(path)).hexdigest()


def member_exists(path: str | Path) -> bool:
    """Whether a container still holds this member (False when the container itself is gone)."""
    try:
        read_member(path)
    except (AudioError, OSError):
        return False
    return True


def _checked(path: str | Path) -> tuple[Path, str]:
    found = split_member(path)
    if found is None:
        raise AudioError(str(path), "no such container (a tar shard or a saved dataset) for this member path")
    return found


def _check_size(path: str | Path, size: int) -> None:
    if size > MAX_MEMBER_BYTES:
        raise AudioError(str(path), f"{size} bytes inside the container, over the limit of {MAX_MEMBER_BYTES} "
                                    "for one clip")


def _dataset_key(path: str | Path, member: str) -> tuple[str | None, int]:
    split, _, row = member.rpartition("/")
    try:
        return split or None, int(row)
    except ValueError:
        raise AudioError(str(path), f"dataset member {member!r} is not SPLIT/ROW") from None


@functools.lru_cache(maxsize=16)
def _dataset(container: Path, split: str | None):
    """The split, memory-mapped, with its audio column left as bytes (decoded here with soundfile)."""
    from datasets import Audio, DatasetDict, load_from_disk

    with _lock:
        ds = load_from_disk(str(container))
    if isinstance(ds, DatasetDict):
        if split not in ds:
            raise AudioError(str(container), f"no split {split!r} (has {', '.join(ds)})")
        ds = ds[split]
    column = audio_column(ds)
    return ds.cast_column(column, Audio(decode=False)), column


def audio_column(ds) -> str:
    from datasets import Audio

    found = [name for name, feature in ds.features.items() if isinstance(feature, Audio)]
    if not found:
        raise AudioError("<dataset>", f"no Audio column (columns: {', '.join(ds.features)})")
    return found[0]


def dataset_members(container: Path) -> Iterator[tuple[str, str | None, dict]]:
    """(member path, label, metadata) per row of a saved dataset: a ClassLabel or string `label` column names the
    row, the other plain columns become metadata."""
    from datasets import ClassLabel, DatasetDict, load_from_disk

    ds = load_from_disk(str(container), keep_in_memory=False)
    splits = ds.items() if isinstance(ds, DatasetDict) else [(None, ds)]
    for split, part in splits:
        column = audio_column(part)
        plain = [n for n, f in part.features.items() if n != column and getattr(f, "dtype", None) in
                 ("string", "large_string", "int64", "int32", "float64", "float32", "bool")]
        names = part.features["label"].names if isinstance(part.features.get("label"), ClassLabel) else None
        rows = part.select_columns(plain).to_list() if plain else [{} for _ in range(len(part))]
        for row, values in enumerate(rows):
            label = values.pop("label", None)
            if names is not None and label is not None:
                label = names[int(label)]
            member = f"{split}/{row}" if split else str(row)
            yield member_path(container, member), None if label is None else str(label), values


def tar_members(container: Path, audio_suffixes: tuple[str, ...]) -> Iterator[tuple[str, str | None, dict]]:
    """(member path, label, metadata) per audio file in a tar shard. WebDataset groups a sample's files by key
    (the name up to the first dot): a .cls/.label/.txt file beside the audio gives its label, a .json its
    metadata (and label, if it has one); without those the member's folder inside the archive is the label."""
    with tarfile.open(container) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        sidecar: dict[tuple[str, str], bytes] = {}
        for m in members:
            key, _, ext = _key(m.name)
            if ext in SIDECARS and m.size <= 1 << 20:
                sidecar[(key, ext)] = tar.extractfile(m).read()
        for m in members:
            if not m.name.lower().endswith(audio_suffixes):
                continue
            key = _key(m.name)[0]
            meta: dict = {}
            if (key, "json") in sidecar:
                try:
                    loaded = json.loads(sidecar[(key, "json")])
                    meta = loaded if isinstance(loaded, dict) else {}
                except ValueError:
                    meta = {}
            label = next((sidecar[(key, e)].decode("utf-8", "replace").strip() for e in ("cls", "label", "txt")
                          if (key, e) in sidecar), None) or meta.pop("label", None)
            parent = str(PurePosixPath(m.name).parent)
            if label is None and parent not in ("", "."):
                label = parent
            yield member_path(container, m.name), None if label is None else str(label), meta


def _key(name: str) -> tuple[str, str, str]:
    """WebDataset key of a member: its path up to the first dot of the file name, and what follows."""
    p = PurePosixPath(name)
    stem, _, ext = p.name.partition(".")
    return str(p.parent / stem), stem, ext.lower()


def saved_dataset(ds, fallback: Path) -> Path:
    """The folder a Hugging Face dataset object lives in on disk: the one it was loaded from (load_from_disk), else
    `fallback`, where it is saved once (again only when its content changed), so search results can point into it."""
    from datasets import DatasetDict

    if isinstance(ds, DatasetDict):
        dirs = {Path(f["filename"]).parent.parent for files in ds.cache_files.values() for f in files}
    else:
        dirs = {Path(f["filename"]).parent for f in ds.cache_files}
    if len(dirs) == 1 and is_dataset(next(iter(dirs))):
        return next(iter(dirs))
    fingerprint = json.dumps({k: v._fingerprint for k, v in ds.items()} if isinstance(ds, DatasetDict)
                             else ds._fingerprint)
    mark = fallback / ".simsearch-fingerprint"
    if not (is_dataset(fallback) and mark.is_file() and mark.read_text() == fingerprint):
        ds.save_to_disk(str(fallback))
        mark.write_text(fingerprint)
    return fallback
