"""Search an index exported to Milvus: the folder's settings embed the query, Milvus holds the rows and runs filters.

Results have the shape of Index.search: vectors are ranked by Milvus; in an index with fingerprints, the query's
landmark hashes pick candidate rows from the collection's sparse field, and the existing landmark tables check
their time offsets, so the cosine + landmark-bonus ranking is the in-memory one over those candidates.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from simsearch.audio import fingerprint, landmark_both, landmark_kinds
from simsearch.audio.decode import decode
from simsearch.encoders import Encoder
from simsearch.errors import SimsearchError
from simsearch.search.index import embed_query, recorded_encoder
from simsearch.store.folder import LANDMARKS, IndexDir
from simsearch.store.milvus_store import PAYLOAD, MilvusStore, collection_name, filter_expr
from simsearch.vectors import normalize

QUERY_MAX_S = 600.0  # as Index: a longer query is embedded from its first 10 minutes
CANDIDATES = 200  # rows the landmark hashes propose for the time-offset check


def query_hashes(marks: tuple) -> np.ndarray:
    """The hashes a kind's query landmarks look up (both kinds: pairs, then triplets tagged as stored)."""
    if isinstance(marks[0], tuple):
        pairs, triplets = marks
        return np.r_[pairs[0], np.asarray(triplets[0], np.uint32) | np.uint32(landmark_both.TRIPLET_BIT)]
    return np.asarray(marks[0], np.uint32)


class MilvusIndex:
    """An index folder's settings (index.json) with its rows served by a Milvus collection it was exported to."""

    def __init__(self, root: str | Path, uri: str, collection: str | None = None, device: str = "auto",
                 candidates: int = CANDIDATES, token: str | None = None, search_params: dict | None = None):
        self.dir = IndexDir(root)
        self.info = self.dir.read_info()
        self.store = MilvusStore(uri, collection or collection_name(str(root)), token)
        state = self.store.state()
        if not state:
            raise SimsearchError(f"{uri} has no collection {self.store.collection}; make it with "
                                 f"`simsearch export {root} --to milvus {uri}`")
        if state["settings"].get("encoder") != self.info["encoder"]:
            raise SimsearchError(f"collection {self.store.collection} was exported from another encoder; export "
                                 f"{root} again (`simsearch export {root} --to milvus {uri}`)")
        self.metadata_keys = state.get("metadata_keys", [])
        self.device, self.candidates, self.search_params = device, candidates, search_params
        self._encoder: Encoder | None = None

    @classmethod
    def open(cls, root: str | Path, uri: str, **kw) -> "MilvusIndex":
        return cls(root, uri, **kw)

    def __len__(self) -> int:
        return self.store.count()

    @property
    def encoder(self) -> Encoder:
        """The encoder index.json records, as Index loads it."""
        if self._encoder is None:
            self._encoder = recorded_encoder(self.info, self.device, self.dir.root)
        return self._encoder

    def embed_samples(self, x: np.ndarray) -> np.ndarray:
        """A decoded query as one normalised vector: windows as in the index, averaged after normalisation."""
        return embed_query(self.encoder, self.info, x)[0]

    def records(self, ids: np.ndarray, scores: np.ndarray, extra: dict | None = None) -> list[dict]:
        """Result rows in Index.records' shape, read from the collection."""
        rows = self.store.fetch(ids, PAYLOAD)
        return [{"rank": rank, "score": round(float(s), 6), "path": rows[int(i)]["path"], "label": rows[int(i)]["label"],
                 "offset_s": float(rows[int(i)]["offset_s"]), "duration_s": float(rows[int(i)]["duration_s"]),
                 "id": int(i), **(extra or {}).get(int(i), {})}
                for rank, (i, s) in enumerate(zip(ids, scores), start=1)]

    def search_vector(self, vector: np.ndarray, k: int = 10, filter: dict | None = None,
                      group_by_file: bool = False) -> list[dict]:
        """Nearest rows to a vector among those passing `filter` (the filter runs inside Milvus)."""
        if np.asarray(vector).size != self.info["dim"]:
            raise SimsearchError(f"query vector is {np.asarray(vector).size}-d; this index holds {self.info['dim']}-d")
        ids, scores = self.store.search(vector, max(1, int(k)), filter_expr(filter, self.metadata_keys), group_by_file,
                                        self.search_params)
        return self.records(ids, scores)

    def search(self, audio: Any = None, text: str | None = None, k: int = 10, filter: dict | None = None,
               group_by_file: bool = False, exclude_same: bool = False) -> list[dict]:
        """Query by example, as Index.search (text search runs on the index folder itself)."""
        if text is not None or audio is None:
            raise SimsearchError("searching a Milvus collection takes an audio query; search text on the index folder")
        x = decode(audio, self.encoder.sample_rate, max_seconds=QUERY_MAX_S)
        vector = self.embed_samples(x)
        fp = self.info.get("fingerprint")
        kind = landmark_kinds.kind_of(fp) if fp else None
        if kind not in landmark_kinds.KINDS or not landmark_kinds.module(kind).compatible(fp):
            if exclude_same:
                raise SimsearchError(f"{self.dir.root} keeps no landmark fingerprints, so it cannot tell the same "
                                     "recording apart; re-index without --no-fingerprint to use exclude_same")
            return self.search_vector(vector, k, filter, group_by_file)
        return self._with_landmarks(vector, landmark_kinds.module(kind).query_landmarks(x, self.encoder.sample_rate),
                                    kind, k, filter, group_by_file, exclude_same)

    def _with_landmarks(self, vector: np.ndarray, marks: tuple, kind: str, k: int, filter: dict | None,
                        group_by_file: bool, exclude_same: bool) -> list[dict]:
        """Cosine hits plus the rows the landmark hashes propose, scored by the landmark table, fused as Index does."""
        expr = filter_expr(filter, self.metadata_keys)
        cand = self.store.landmark_candidates(query_hashes(marks), self.candidates, expr)
        rows = self.store.fetch(cand, ["path", LANDMARKS])
        match = dict(zip(cand.tolist(), self._scores(rows, cand, marks, kind)))
        same = {i for i, m in match.items() if exclude_same and m >= fingerprint.SAME_RECORDING}
        same_paths = {rows[i]["path"] for i in same}
        hit_ids, _ = self.store.search(vector, max(1, int(k)) + len(same), expr, group_by_file, self.search_params)
        extra_ids = np.array([i for i in hit_ids.tolist() if i not in match], np.int64)
        if len(extra_ids):  # cosine hits the hashes did not propose still get their own match score
            more = self.store.fetch(extra_ids, ["path", LANDMARKS])
            rows.update(more)
            match.update(zip(extra_ids.tolist(), self._scores(more, extra_ids, marks, kind)))
        proposed = [i for i in cand.tolist() if fingerprint.bonus(match[i]) > 0]
        ids = np.unique(np.r_[hit_ids, np.array(proposed, np.int64)])
        ids = np.array([i for i in ids.tolist() if i not in same and not (group_by_file and rows[i]["path"] in same_paths)],
                       np.int64)
        if not len(ids):
            return []
        vecs = self.store.fetch(ids, ["embedding"])
        cosine = np.array([vecs[i]["embedding"] for i in ids.tolist()], np.float32) @ normalize(vector.reshape(1, -1))[0]
        scores = np.array([match[i] for i in ids.tolist()])
        extra = {i: {"cosine": round(float(c), 6), "match": round(float(m), 2)} for i, c, m in zip(ids.tolist(), cosine, scores)}
        fused = fingerprint.fuse(cosine, scores)
        order = np.argsort(-fused, kind="stable")
        ids, fused = ids[order], fused[order].astype(np.float32)
        if group_by_file:
            _, first = np.unique([rows[i]["path"] for i in ids.tolist()], return_index=True)
            first = np.sort(first)
            ids, fused = ids[first], fused[first]
        return self.records(ids[:k], fused[:k], extra)

    @staticmethod
    def _scores(rows: dict[int, dict], ids: np.ndarray, marks: tuple, kind: str) -> np.ndarray:
        """Each row's landmark match score (time offsets checked by the kind's own table)."""
        if not len(ids):
            return np.zeros(0)
        table = landmark_kinds.table_class(kind).build([rows[int(i)][LANDMARKS] for i in ids])
        return table.scores(*marks)
