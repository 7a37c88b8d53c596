"""Landmark postings on disk: hash -> (row id, frame) lists beside the shards, memory-mapped so a query reads only
its own hashes' postings and search memory does not grow with the collection's landmarks.

The postings live in segments under postings/: each covers a set of committed shards (named with their sha256 in
index.json) and holds two .npy files, `seg-G-I.npy` ([3, M] uint32: hash, row within the segment, packed frame;
sorted by hash) and `seg-G-I.ids.npy` (int64: the row id of each row within the segment). A commit writes a new
segment for the shards no segment covers yet, rewrites small or mostly dead segments together with them, and keeps
the rest, so adding rows rewrites little. Rows removed or replaced later stay in their segment until it is
rewritten; search drops them because their ids are no longer live, or their shard is no longer one the segment
covers (compaction moves a shard's surviving rows, ids and all, into a new shard and so into a new segment).
Every file is written atomically under a name no committed index.json uses, and old ones are deleted only after
the new index.json names the new ones.
"""
from __future__ import annotations

import logging
import mmap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from simsearch.errors import IndexFormatError
from simsearch.files import atomic_write_bytes, file_sha256
from simsearch.store.folder import LANDMARKS, IndexDir, write_step

log = logging.getLogger(__name__)
FOLDER = "postings"
VERSION = 1
SEGMENT_POSTINGS = 64_000_000  # postings per segment (768 MB on disk; building one takes about 2 GB of memory)
SMALL = 0.5  # a segment under this share of SEGMENT_POSTINGS is rewritten with the next commit's new shards
DEAD = 0.3  # ... and so is one whose shards have lost this share of its rows


def folder(d: IndexDir) -> Path:
    return d.root / FOLDER


def _landmark_arrays(d: IndexDir, shard: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row ids [R], landmarks per row [R], packed (hash, frame) int32 pairs [M, 2]) of one shard's rows."""
    if LANDMARKS not in pq.read_schema(shard).names:
        ids = d.read_shard(shard, ["id"]).column("id").to_numpy()
        return np.asarray(ids, np.int64), np.zeros(len(ids), np.int64), np.zeros((0, 2), np.int32)
    t = d.read_shard(shard, ["id", LANDMARKS])
    arr = t.column(LANDMARKS).combine_chunks()
    ids = np.asarray(t.column("id").to_numpy(), np.int64)
    if len(arr) == 0:
        return ids, np.zeros(0, np.int64), np.zeros((0, 2), np.int32)
    offsets = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset:arr.offset + len(arr) + 1]
    data = np.frombuffer(arr.buffers()[2], np.uint8) if arr.buffers()[2] is not None else np.zeros(0, np.uint8)
    pairs = data[offsets[0]:offsets[-1]].view(np.int32).reshape(-1, 2)
    return ids, np.diff(offsets).astype(np.int64) // 8, pairs


def _write_npy(path: Path, parts: list[np.ndarray], dtype: str, shape: tuple) -> None:
    """One .npy file written from parts in order (no stacked copy in memory), atomically."""
    def write(f):
        np.lib.format.write_array_header_1_0(f, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape})
        for p in parts:
            f.write(np.ascontiguousarray(p, dtype).tobytes())
    write_step()
    atomic_write_bytes(path, write)


def _build_segment(d: IndexDir, name: str, shards: list[tuple[Path, str]]) -> dict:
    """Write one segment over these (shard, sha256) and return its record."""
    ids, rows, hashes, times, base, layout = [], [], [], [], 0, []
    for p, _ in shards:
        i, per_row, pairs = _landmark_arrays(d, p)
        layout.append([p.name, base, len(i)])
        ids.append(i)
        rows.append(np.repeat(np.arange(base, base + len(i), dtype=np.uint32), per_row))
        hashes.append(pairs[:, 0].view(np.uint32))
        times.append(pairs[:, 1].view(np.uint32))
        base += len(i)
    h = np.concatenate(hashes) if hashes else np.zeros(0, np.uint32)
    order = np.argsort(h, kind="stable")  # within a hash: shard order, then row order, then the row's own order
    h = h[order]
    r = np.concatenate(rows)[order] if rows else np.zeros(0, np.uint32)
    t = np.concatenate(times)[order] if times else np.zeros(0, np.uint32)
    del order, hashes, rows, times
    out = folder(d)
    _write_npy(out / f"{name}.npy", [h, r, t], "<u4", (3, len(h)))
    all_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    _write_npy(out / f"{name}.ids.npy", [all_ids], "<i8", (len(all_ids),))
    return {"name": name, "shards": {p.name: sha for p, sha in shards}, "layout": layout, "postings": int(len(h)),
            "rows": int(len(all_ids)), "bytes": (out / f"{name}.npy").stat().st_size,
            "sha256": {"postings": file_sha256(out / f"{name}.npy"), "ids": file_sha256(out / f"{name}.ids.npy")}}


def _files_present(d: IndexDir, seg: dict) -> bool:
    p = folder(d) / f"{seg['name']}.npy"
    return p.exists() and p.stat().st_size == seg.get("bytes") and (folder(d) / f"{seg['name']}.ids.npy").exists()


def shard_shas(d: IndexDir, info: dict) -> dict[str, str]:
    """sha256 of every shard the next commit lists (those this process wrote, those index.json knows, else hashed)."""
    old = info.get("shard_sha256", {}) if info else {}
    return {p.name: d.written_sha.get(p.name) or old.get(p.name) or file_sha256(p) for p in d.shard_paths()}


def sync(d: IndexDir, info: dict, fingerprint: dict | None, generation: int, incremental: bool = True) -> dict | None:
    """The postings record for the commit about to happen: segments covering exactly the shards it lists.

    When `incremental`, keeps each committed segment that is at least SMALL full and whose shards still hold at
    least 1 - DEAD of its rows (it then covers only the shards still there), and writes new segments for every
    other shard; otherwise writes them all. None when the index keeps no landmarks.
    """
    if not fingerprint:
        return None
    old = (info or {}).get("postings") or {}
    shas = shard_shas(d, info or {})
    paths = {p.name: p for p in d.shard_paths()}
    keep: list[dict] = []
    if incremental and old.get("version") == VERSION and old.get("fingerprint") == fingerprint:
        for seg in old.get("segments", []):
            still = [n for n, s in seg["shards"].items() if shas.get(n) == s]
            gone = len(seg["shards"]) - len(still)
            if not still or not _files_present(d, seg):
                continue
            live = sum(count for name, _, count in seg["layout"] if name in still)
            if seg["postings"] >= SMALL * SEGMENT_POSTINGS and live >= (1 - DEAD) * seg["rows"]:
                keep.append({**seg, "shards": {n: seg["shards"][n] for n in still}} if gone else seg)
    covered = {n for seg in keep for n in seg["shards"]}
    todo = [(paths[n], shas[n]) for n in sorted(paths) if n not in covered]
    segments = list(keep)
    batch: list[tuple[Path, str]] = []
    size = 0
    for p, sha in todo:  # pack shards into segments of at most SEGMENT_POSTINGS (a bigger shard gets its own)
        n = d.column_bytes(LANDMARKS, [p.name]) // 8
        if batch and size + n > SEGMENT_POSTINGS:
            segments.append(_build_segment(d, f"seg-{generation:06d}-{len(segments):03d}", batch))
            batch, size = [], 0
        batch.append((p, sha))
        size += n
    if batch:
        segments.append(_build_segment(d, f"seg-{generation:06d}-{len(segments):03d}", batch))
    return {"version": VERSION, "fingerprint": fingerprint, "segments": segments,
            "postings": int(sum(s["postings"] for s in segments))}


def remove_unlisted(d: IndexDir, record: dict | None) -> None:
    """After a commit: delete postings files the committed index.json no longer names (and leftover temp files)."""
    out = folder(d)
    if not out.exists():
        return
    names = {s["name"] for s in (record or {}).get("segments", [])}
    for p in sorted(out.iterdir()):
        if p.name.split(".")[0] not in names or p.name.startswith("."):
            write_step()
            p.unlink(missing_ok=True)


@dataclass
class Segment:
    """One segment's files, memory-mapped."""

    hashes: np.ndarray  # uint32 [M], sorted
    rows: np.ndarray  # uint32 [M], row within the segment
    times: np.ndarray  # uint32 [M], the stored frame word (int32 bits)
    ids: np.ndarray  # int64 [R]
    valid: np.ndarray | None  # bool [R]: rows of shards still committed (None: all); a compacted shard's rows
    # live on in a newer shard, under the same ids, and so in a newer segment


class Postings:
    """The committed segments of one index, memory-mapped: look-ups read only the pages of the hashes asked for."""

    def __init__(self, d: IndexDir, record: dict):
        self.record = record
        self.segments = []
        for seg in record.get("segments", []):
            try:
                post = np.load(folder(d) / f"{seg['name']}.npy", mmap_mode="r")
                ids = np.load(folder(d) / f"{seg['name']}.ids.npy", mmap_mode="r")
            except (ValueError, OSError) as e:
                if isinstance(e, FileNotFoundError):
                    raise
                post, ids = None, None
            if post is None or post.shape != (3, seg["postings"]) or ids.shape != (seg["rows"],):
                raise IndexFormatError(f"{d.root}: landmark postings {seg['name']} are damaged or do not match "
                                       f"index.json; run `simsearch rebuild {d.root}` to build them again")
            for arr in (post, ids):  # look-ups touch scattered pages: read-ahead would only fill memory
                m = getattr(arr, "_mmap", None)
                if m is not None and hasattr(mmap, "MADV_RANDOM"):
                    m.madvise(mmap.MADV_RANDOM)
            valid = None
            if len(seg["shards"]) < len(seg["layout"]):
                valid = np.zeros(len(ids), bool)
                for name, start, count in seg["layout"]:
                    valid[start:start + count] = name in seg["shards"]
            self.segments.append(Segment(post[0], post[1], post[2], ids, valid))

    def lookup(self, hashes: np.ndarray, budget: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(hash uint32, row id int64, frame word int32) of every stored posting of these hashes, per segment in
        hash order; with a `budget`, only the rarest hashes whose postings together stay within it."""
        want = np.unique(np.asarray(hashes, np.uint32))
        spans = [(s, *self._span(s, want)) for s in self.segments if len(s.hashes)]
        per_hash = np.sum([c for _, _, c in spans], axis=0) if budget is not None and spans else None
        if per_hash is not None and per_hash.sum() > budget:
            order = np.argsort(per_hash, kind="stable")  # rarest first: they say the most about a match
            kept = np.zeros(len(want), bool)
            kept[order[np.cumsum(per_hash[order]) <= budget]] = True
            spans = [(s, lo, np.where(kept, counts, 0)) for s, lo, counts in spans]
        out_h, out_id, out_t = [], [], []
        for s, lo, counts in spans:
            total = int(counts.sum())
            if not total:
                continue
            idx = np.repeat(lo - np.cumsum(np.r_[0, counts[:-1]]), counts) + np.arange(total)
            h, rows = np.repeat(want, counts), np.asarray(s.rows[idx], np.int64)
            if s.valid is not None:
                ok = s.valid[rows]
                idx, h, rows = idx[ok], h[ok], rows[ok]
            out_h.append(h)
            out_id.append(np.asarray(s.ids[rows], np.int64))
            out_t.append(np.asarray(s.times[idx]).view(np.int32))
        if not out_h:
            return np.zeros(0, np.uint32), np.zeros(0, np.int64), np.zeros(0, np.int32)
        return np.concatenate(out_h), np.concatenate(out_id), np.concatenate(out_t)

    @staticmethod
    def _span(s: Segment, want: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(first position, count) of each wanted hash's postings in a segment."""
        lo = np.searchsorted(s.hashes, want, "left")
        return lo, np.searchsorted(s.hashes, want, "right") - lo
