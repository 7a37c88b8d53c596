"""Shard integrity: check shards against the checksums and settings they were committed with; set bad ones aside."""
from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from simsearch.errors import IndexFormatError
from simsearch.files import atomic_write_text, file_sha256
from simsearch.store.folder import META_COLUMNS, SETTINGS_KEY, IndexDir, write_step

log = logging.getLogger(__name__)
SETTINGS = ("index_id", "encoder", "window_s", "hop_s", "label_regex", "fingerprint")
SAME_SPACE = ("name", "checkpoint", "pooling")  # encoder keys that must agree for rows to share one space


def settings_of(info: dict) -> dict:
    """What every shard records about how it was made (so index.json can be restored from the shards)."""
    return {k: info.get(k) for k in SETTINGS}


def shard_settings(path: Path) -> dict | None:
    """The settings a shard was written with; None for shards from before they were recorded."""
    meta = pq.read_schema(path).metadata or {}
    try:
        return json.loads(meta[SETTINGS_KEY]) if SETTINGS_KEY in meta else None
    except (ValueError, UnicodeDecodeError):
        return None


def shard_dim(path: Path) -> int | None:
    """The width of a shard's embedding column, read from its footer."""
    schema = pq.read_schema(path)
    if "embedding" not in schema.names or not pa.types.is_fixed_size_list(schema.field("embedding").type):
        return None
    return schema.field("embedding").type.list_size


def recover_info(d: IndexDir) -> dict | None:
    """index.json's settings from the newest shard that records them, for a folder whose index.json was lost or broken.

    None when there are no shards. Shards from before settings were recorded cannot say which encoder or
    windows made them: then refuse rather than guess, since mixing settings would silently corrupt the index.
    """
    shards = d.shard_paths()
    if not shards:
        return None
    for p in reversed(shards):
        try:
            s = shard_settings(p)
        except (pa.ArrowInvalid, OSError):
            continue
        if s and s.get("encoder"):
            dim = shard_dim(p) or s["encoder"].get("dim")
            info = {**{k: v for k, v in s.items() if v is not None}, "dim": dim, "metric": "cosine"}
            info["encoder"] = {**s["encoder"], "dim": dim}
            info["shards"] = []  # none committed: every shard must show it is this index's own
            log.warning("%s: no usable index.json; restored its settings from %s", d.root, p.name)
            return info
    raise IndexFormatError(f"{d.root}: index.json is missing or broken and its shards do not record which encoder and "
                           "windows made them; restore index.json from a backup, or index into a new --out folder")


def _problem(p: Path) -> str | None:
    """Why a shard cannot be used as it is (unreadable, or not a simsearch shard), read in full."""
    try:
        names = pq.read_schema(p).names
        missing = [c for c in [*META_COLUMNS, "embedding"] if c not in names]
        if missing:
            return f"not a simsearch shard (no {', '.join(missing)} column)"
        pq.read_table(p, page_checksum_verification=True)
    except (pa.ArrowInvalid, OSError) as e:
        return f"corrupt ({str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__})"
    return None


def _seq(p: Path) -> int:
    try:
        return int(p.stem.split("-")[1])
    except (IndexError, ValueError):
        return -1


def verify(d: IndexDir, info: dict) -> list[tuple[Path, str]]:
    """Set aside shards that are corrupt, changed since their commit, or not this index's; returns (where, why).

    Committed shards are checked against the sha256 index.json recorded; others must be readable, carry
    this index's id and settings, and be newer than every committed shard (a killed run only ever wrote
    above them; an older unlisted one was compacted away by a commit that died before deleting it).
    The vector width every shard must have comes from the committed shards, not from index.json.
    """
    listed = set(info["shards"]) if "shards" in info else None
    sums = info.get("shard_sha256", {})
    top = max((_seq(Path(n)) for n in listed), default=-1) if listed else -1
    own_id = info.get("index_id")
    bad, ok = {}, []
    for p in d.shard_paths():
        committed = listed is None or p.name in listed
        if committed and p.name in sums:
            same = file_sha256(p) == sums[p.name]
            reason = None if same else "its bytes changed since it was committed (corrupted or replaced)"
        elif committed:
            reason = _problem(p)
        elif _seq(p) <= top:
            d.excluded.add(p.name)  # deleted by the next commit: no committed state lists it
            continue
        else:
            reason = _problem(p) or _foreign(p, info, own_id)
        if reason:
            bad[p] = reason
        else:
            ok.append((p, committed))
    dims = Counter(shard_dim(p) for p, committed in ok if committed) or Counter(shard_dim(p) for p, _ in ok)
    want = dims.most_common(1)[0][0] if dims else info.get("dim")
    for p, _ in ok:
        if want is not None and shard_dim(p) != want:
            bad[p] = f"it holds {shard_dim(p)}-d vectors; this index holds {want}-d"
    return [(quarantine(d, p, why), why) for p, why in sorted(bad.items())]


def _foreign(p: Path, info: dict, own_id: str | None) -> str | None:
    """Why an uncommitted shard is not this index's own (None when it is)."""
    s = shard_settings(p)
    if own_id and (s or {}).get("index_id") != own_id:
        return "it was not written by this index (copied in from another one?)"
    if s and info.get("encoder"):
        enc, mine = s.get("encoder") or {}, info["encoder"]
        if any(enc.get(k) != mine.get(k) for k in SAME_SPACE) or \
                (s.get("window_s"), s.get("hop_s")) != (info.get("window_s"), info.get("hop_s")):
            return "it was made with other encoder or window settings than this index"
    return None


def quarantine(d: IndexDir, p: Path, reason: str) -> Path:
    """Link a bad shard into shards/quarantine/ (with why) and leave it out of the working set.

    The original name is deleted by the next commit, not now: the committed index.json may still list it.
    """
    d.quarantine_dir.mkdir(parents=True, exist_ok=True)
    dest = d.quarantine_dir / p.name
    n = 0
    while dest.exists() and not os.path.samefile(dest, p):
        n += 1
        dest = d.quarantine_dir / f"{p.stem}.{n}{p.suffix}"
    if not dest.exists():
        write_step()
        try:
            os.link(p, dest)
        except OSError:
            shutil.copy2(p, dest)
    atomic_write_text(dest.with_suffix(".txt"), f"{p.name}: set aside because {reason}\n")
    d.excluded.add(p.name)
    log.warning("set aside shard %s: %s", p.name, reason)
    return dest
