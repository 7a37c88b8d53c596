"""An index folder mirrored into a Milvus collection, so search can run on a server (or cluster) instead of in memory.

Each live row becomes one entity: its normalised vector, the payload filters need (path, label, offsets, the file's
duration, sample rate, sha256, manifest metadata) and, in indexes with fingerprints, its landmark hashes as a sparse
vector of counts (candidate generation) beside its packed landmarks (the time-offset check on those candidates).
The collection records which shards it holds, so a later export sends only new shards and deletes what left the
index. A URI ending in .db is a milvus-lite file run inside this process; http://host:19530 is a Milvus server.
"""
from __future__ import annotations

import base64
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from simsearch.errors import SimsearchError
from simsearch.store.folder import LANDMARKS, IndexDir
from simsearch.vectors import normalize

STATE_KEY = "simsearch.state"  # collection property: the shards exported, and the index settings they were made with
BATCH_ROWS = 1000  # entities per insert call (well under Milvus's message size limit at 1024-d)
MAX_LANDMARK_BYTES = 49_152  # base64 of this fits a VARCHAR(65535): 6144 landmarks, about a minute of audio
NO_LANDMARKS = 2**32 - 2  # sparse vectors need one entry: rows without landmarks get this hash no query has
COLUMNS = ("label", "path", "sha256", "sample_rate")  # filter keys that are columns (as simsearch.search.filters)
READ_COLUMNS = ["id", "path", "sha256", "offset_s", "duration_s", "sample_rate", "label", "metadata", "embedding"]
PAYLOAD = ["path", "label", "offset_s", "duration_s"]  # what a result row shows


def client(uri: str, token: str | None = None):
    """A MilvusClient for a server URI or a milvus-lite .db file (started in this process)."""
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise SimsearchError("Milvus support needs pymilvus (and milvus-lite for a local .db file): "
                             "pip install -e '.[milvus]'") from None
    if uri.endswith(".db"):  # milvus-lite's in-process server logs calls it does not implement; the client copes
        logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
    return MilvusClient(uri, token=token) if token else MilvusClient(uri)


def collection_name(root: str) -> str:
    """A valid collection name from an index folder's name (letters, digits, underscores; starts with a letter)."""
    name = re.sub(r"\W", "_", str(root).rstrip("/").split("/")[-1])
    return f"simsearch_{name}"[:255]


def hash_counts(hashes: np.ndarray) -> dict[int, float]:
    """A sparse vector {hash: count} of landmark hashes (the query side uses one per distinct hash)."""
    h, n = np.unique(np.asarray(hashes, np.uint32), return_counts=True)
    h, n = h[h < NO_LANDMARKS], n[h < NO_LANDMARKS]
    return {int(a): float(b) for a, b in zip(h, n)} if len(h) else {NO_LANDMARKS: 1e-6}


def blob_hashes(blob: bytes | None) -> np.ndarray:
    """Every landmark hash in a row's packed landmarks (all kinds store 8-byte (hash, time) pairs)."""
    return np.frombuffer(blob, np.int32).reshape(-1, 2)[:, 0].view(np.uint32) if blob else np.zeros(0, np.uint32)


def _text(v: Any) -> str:
    """A string literal for a Milvus expression."""
    return json.dumps(str(v), ensure_ascii=False)


def _like(glob: str) -> str:
    """A shell glob as a LIKE pattern: * -> %, ? -> _, the pattern characters of LIKE escaped."""
    if "[" in glob:
        raise SimsearchError(f"path_glob {glob!r}: character classes ([...]) are not supported in Milvus; use * and ?")
    out = "".join({"*": "%", "?": "_", "%": "\\%", "_": "\\_", "\\": "\\\\"}.get(c, c) for c in glob)
    return _text(out)


def _values(v: Any) -> list[str]:
    return [str(x) for x in (v if isinstance(v, (list, tuple, set)) else [v])]


def filter_expr(spec: dict | None, metadata_keys: list[str]) -> str:
    """A search filter dict (simsearch.search.filters) as a Milvus boolean expression; "" passes every row."""
    parts = []
    for key, want in (spec or {}).items():
        vals = _values(want)
        if key == "path_glob":
            parts.append("(" + " or ".join(f"path like {_like(g)}" for g in vals) + ")")
        elif key == "min_duration":
            parts.append(f"file_duration_s >= {float(want) - 1e-6!r}")
        elif key == "max_duration":
            parts.append(f"file_duration_s <= {float(want) + 1e-6!r}")
        elif key == "sample_rate":  # a column of ints, compared as text like the in-memory filter
            ints = [int(v) for v in vals if v.lstrip("-").isdigit() and str(int(v)) == v]
            parts.append(f"sample_rate in {ints}")
        elif key in COLUMNS:
            parts.append(f"{key} in [{', '.join(map(_text, vals))}]")
        elif key in metadata_keys:
            parts.append("(" + " or ".join(f"metadata[{_text(key)}] == {_text(v)}" for v in vals) + ")")
        else:
            known = ", ".join([*COLUMNS, "path_glob", "min_duration", "max_duration", *metadata_keys])
            raise SimsearchError(f"unknown filter key {key!r}; this index has: {known}")
    return " and ".join(parts)


def _metadata(text: str | None) -> dict[str, str]:
    """Manifest metadata as strings, as the in-memory filter compares them (missing values left out)."""
    parsed = json.loads(text) if isinstance(text, str) and text else {}
    return {str(k): str(v) for k, v in parsed.items() if v is not None and not (isinstance(v, float) and v != v)}


def _ranges(names: list[str]) -> str:
    """Shard names (shard-NNNNNN.parquet) as compact sequence ranges: "0-41,45"."""
    seqs, out = sorted(int(n.split("-")[1].split(".")[0]) for n in names), []
    for s in seqs:
        if out and out[-1][1] == s - 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in out)


def _names(ranges: str) -> list[str]:
    out = []
    for part in filter(None, ranges.split(",")):
        a, _, b = part.partition("-")
        out += [f"shard-{s:06d}.parquet" for s in range(int(a), int(b or a) + 1)]
    return out


class MilvusStore:
    """One Milvus collection holding one index folder's rows."""

    def __init__(self, uri: str, collection: str, token: str | None = None, milvus_client=None):
        self.uri, self.collection = uri, collection
        self.client = milvus_client or client(uri, token)

    def exists(self) -> bool:
        return self.client.has_collection(self.collection)

    def state(self) -> dict:
        """What the collection holds: {"shards": [...], "settings": {...}, "metadata_keys": [...]}; {} if nothing."""
        if not self.exists():
            return {}
        self.client.load_collection(self.collection)  # a server (or .db file) opened anew holds it released
        props = self.client.describe_collection(self.collection).get("properties") or {}
        state = json.loads(props.get(STATE_KEY) or "{}")
        state["shards"] = _names(state.get("shards", ""))
        return state

    def _save_state(self, shards: list[str], settings: dict, metadata_keys: set[str]) -> None:
        state = {"shards": _ranges(shards), "settings": settings, "metadata_keys": sorted(metadata_keys)}
        self.client.alter_collection_properties(self.collection, properties={STATE_KEY: json.dumps(state)})

    def _create(self, dim: int, landmarks: bool, index_type: str) -> None:
        from pymilvus import DataType

        s = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        s.add_field("id", DataType.INT64, is_primary=True)
        s.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
        s.add_field("path", DataType.VARCHAR, max_length=65535)
        s.add_field("sha256", DataType.VARCHAR, max_length=64)
        s.add_field("offset_s", DataType.DOUBLE)
        s.add_field("duration_s", DataType.DOUBLE)
        s.add_field("file_duration_s", DataType.DOUBLE)
        s.add_field("sample_rate", DataType.INT32)
        s.add_field("label", DataType.VARCHAR, max_length=65535, nullable=True)
        s.add_field("metadata", DataType.JSON)
        s.add_field("shard", DataType.VARCHAR, max_length=64)
        ip = self.client.prepare_index_params()
        params = {"M": 32, "efConstruction": 200} if index_type == "HNSW" else {}
        ip.add_index("embedding", index_type=index_type, metric_type="IP", params=params)
        ip.add_index("shard", index_type="INVERTED")
        ip.add_index("path", index_type="INVERTED")
        if landmarks:
            s.add_field("hashes", DataType.SPARSE_FLOAT_VECTOR)
            s.add_field(LANDMARKS, DataType.VARCHAR, max_length=65535)
            ip.add_index("hashes", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
        self.client.create_collection(self.collection, schema=s, index_params=ip)

    def export(self, index_dir: IndexDir, index_type: str = "AUTOINDEX",
               progress: Callable[[str], None] | None = None) -> dict:
        """Bring the collection in step with the index's committed shards: delete rows of shards it no longer lists
        and rows newer shards shadow, insert rows of shards not exported yet. Returns counts and seconds."""
        t0 = time.perf_counter()
        info = index_dir.read_info()
        committed = info.get("shards") or [p.name for p in index_dir.shard_paths()]
        settings = {k: info.get(k) for k in ("encoder", "dim", "metric", "fingerprint", "window_s", "hop_s")}
        state = self.state()
        old = state.get("settings", {})
        if state and (old.get("encoder"), old.get("dim"), bool(old.get("fingerprint"))) != \
                (settings["encoder"], settings["dim"], bool(settings["fingerprint"])):
            raise SimsearchError(f"collection {self.collection} was made from an index with other settings (encoder "
                                 f"{old.get('encoder')}, {old.get('dim')}-d, landmarks {bool(old.get('fingerprint'))}); "
                                 "export to a new --collection, or add --drop to replace it")
        if not state:
            self._create(int(info["dim"]), "fingerprint" in info, index_type)
        exported = [s for s in state.get("shards", []) if s]
        meta_keys = set(state.get("metadata_keys", []))
        gone = sorted(set(exported) - set(committed))
        new = [s for s in committed if s not in set(exported)]
        removed = 0
        if gone:
            removed += self._delete(f"shard in [{', '.join(map(_text, gone))}]")
        live = set(index_dir.live_rows(["id"], committed).column("id").to_pylist()) if new else set()
        kept = [s for s in exported if s in set(committed)]
        if new and kept:  # rows of re-embedded files in shards already exported are shadowed by the new shards
            stale = [i for s in kept for i in index_dir.read_shard(index_dir.shards_dir / s, ["id"]).column("id").to_pylist()
                     if i not in live]
            for j in range(0, len(stale), BATCH_ROWS):
                removed += self._delete(ids=stale[j:j + BATCH_ROWS])
        done, added = [s for s in exported if s not in gone], 0
        for s in new:
            added += self._insert_shard(index_dir, s, live, meta_keys, "fingerprint" in info)
            done.append(s)
            self._save_state(done, settings, meta_keys)
            if progress:
                progress(f"{s}: {added} rows added so far")
        if not new:
            self._save_state(done, settings, meta_keys)
        self.client.flush(self.collection)  # seal what was sent, so searches use the built index, not a raw scan
        return {"added": added, "removed": removed, "shards_added": len(new), "shards_removed": len(gone),
                "rows": self.count(), "seconds": round(time.perf_counter() - t0, 2)}

    def _delete(self, filter: str = "", ids: list[int] | None = None) -> int:
        res = self.client.delete(self.collection, ids=ids) if ids is not None else \
            self.client.delete(self.collection, filter=filter)
        return res.get("delete_count", 0) if isinstance(res, dict) else len(res)

    def _insert_shard(self, index_dir: IndexDir, shard: str, live: set[int], meta_keys: set[str],
                      landmarks: bool) -> int:
        """Upsert one shard's live rows (idempotent: an interrupted export re-sends the shard)."""
        path = index_dir.shards_dir / shard
        t = index_dir.read_shard(path, READ_COLUMNS + ([LANDMARKS] if landmarks else []))
        ids = t.column("id").to_numpy()
        keep = np.fromiter((i in live for i in ids), bool, len(ids))
        t = t.filter(pa.array(keep)) if not keep.all() else t
        if not t.num_rows:
            return 0
        vectors = normalize(np.asarray(t.column("embedding").combine_chunks().flatten(), np.float32)
                            .reshape(t.num_rows, -1))
        cols = {c: t.column(c).to_pylist() for c in READ_COLUMNS if c != "embedding"}
        ends: dict[str, float] = {}  # all rows of a file live in its newest shard: its duration is theirs
        for p, o, d in zip(cols["path"], cols["offset_s"], cols["duration_s"]):
            ends[p] = max(ends.get(p, 0.0), float(o) + float(d))
        blobs = t.column(LANDMARKS).to_pylist() if landmarks else None
        rows = []
        for j in range(t.num_rows):
            meta = _metadata(cols["metadata"][j])
            meta_keys.update(meta)
            row = {"id": int(cols["id"][j]), "embedding": vectors[j].tolist(), "path": cols["path"][j],
                   "sha256": cols["sha256"][j] or "", "offset_s": float(cols["offset_s"][j]),
                   "duration_s": float(cols["duration_s"][j]), "file_duration_s": ends[cols["path"][j]],
                   "sample_rate": int(cols["sample_rate"][j] or 0), "label": cols["label"][j] or None,
                   "metadata": meta, "shard": shard}
            if landmarks:
                blob = (blobs[j] or b"")[:MAX_LANDMARK_BYTES]
                row["hashes"] = hash_counts(blob_hashes(blob))
                row[LANDMARKS] = base64.b64encode(blob).decode()
            rows.append(row)
        for j in range(0, len(rows), BATCH_ROWS):
            self.client.upsert(self.collection, rows[j:j + BATCH_ROWS])
        return len(rows)

    def count(self) -> int:
        res = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def search(self, vector: np.ndarray, k: int, expr: str = "", group_by_file: bool = False,
               search_params: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, inner products) of the k nearest entities passing `expr`, best first (best window per file)."""
        q = normalize(np.asarray(vector, np.float32).reshape(1, -1))[0]
        kw = {"group_by_field": "path"} if group_by_file else {}
        res = self.client.search(self.collection, data=[q.tolist()], anns_field="embedding", limit=int(k),
                                 filter=expr, output_fields=["id"],
                                 search_params={"metric_type": "IP", "params": search_params or {}}, **kw)[0]
        return np.array([h["id"] for h in res], np.int64), np.array([h["distance"] for h in res], np.float32)

    def landmark_candidates(self, hashes: np.ndarray, k: int, expr: str = "") -> np.ndarray:
        """Ids of the k entities sharing the most landmark hashes with a query (weighted by their own counts)."""
        q = {h: 1.0 for h in hash_counts(hashes)}
        res = self.client.search(self.collection, data=[q], anns_field="hashes", limit=int(k), filter=expr,
                                 output_fields=["id"], search_params={"metric_type": "IP"})[0]
        return np.array([h["id"] for h in res], np.int64)

    def fetch(self, ids: np.ndarray, fields: list[str]) -> dict[int, dict]:
        """id -> the given fields of those entities (packed landmarks decoded to bytes)."""
        out: dict[int, dict] = {}
        ids = [int(i) for i in ids]
        for j in range(0, len(ids), BATCH_ROWS):
            for r in self.client.get(self.collection, ids=ids[j:j + BATCH_ROWS], output_fields=fields):
                if LANDMARKS in r:
                    r[LANDMARKS] = base64.b64decode(r[LANDMARKS]) if r[LANDMARKS] else b""
                out[int(r["id"])] = r
        return out

    def drop(self) -> None:
        if self.exists():
            self.client.drop_collection(self.collection)
