"""Open an index folder and search it by example clip, by vector, or by text."""
from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from simsearch.audio.decode import decode
from simsearch.audio.windows import split_windows
from simsearch.encoders import Encoder, get_encoder
from simsearch.encoders.backends import query_backends
from simsearch.encoders.copynet import load_trained
from simsearch.encoders.whitening import WHITENING_FILE
from simsearch.errors import IndexFormatError, SimsearchError
from simsearch.search import filters
from simsearch.search.landmarks import load_landmark_table, search_with_landmarks
from simsearch.store import faiss_ops
from simsearch.store.folder import META_COLUMNS, IndexDir
from simsearch.store.postings import Postings
from simsearch.vectors import normalize, pooled

if TYPE_CHECKING:
    from simsearch.audio.fingerprint import LandmarkTable
    from simsearch.search.words import WordIndex


log = logging.getLogger(__name__)
EXACT_FILTER_ROWS = 20_000  # filters passing fewer rows than this are answered by exact scoring of those rows
QUERY_MAX_S = 600.0  # a longer query is embedded from its first 10 minutes (decode logs a warning)
QUERY_BATCH = 8  # windows per encoder call, so a long query never goes through the model as one giant batch
# The fields ranking and results need, read when the index opens; the rest (sha256, sample rate, manifest metadata)
# only when a filter, a text query or a caller asks for Index.rows.
CORE_COLUMNS = ["id", "path", "offset_s", "duration_s", "label"]


def recorded_encoder(info: dict, device: str, root: Path) -> Encoder:
    """The encoder index.json records, so queries land in the same space as the rows (on this machine's fastest
    backend where the rows' vectors agree across backends, with the whitening fitted to the index's collection)."""
    e = info["encoder"]
    options = {**e.get("options", {}), "backend": query_backends(e["name"], e.get("options", {}).get("backend"))}
    if e.get("whitened"):
        options["whitening"] = Path(root) / WHITENING_FILE
    enc = get_encoder(e["name"], e.get("checkpoint"), device, **options)
    load_trained(enc, root)  # a copynet part trained on the index's collection
    return enc


def embed_query(enc: Encoder, info: dict, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """A decoded query as the index sees it: windows as in the index, (normalised mean of their embeddings [D],
    mean side outputs, the window embeddings [T, D]); never one giant batch through the model."""
    windows = split_windows(x, enc.sample_rate, info.get("window_s") or 10.0, info.get("hop_s"))
    parts = [enc.embed_batch([w.samples for w in windows[i:i + QUERY_BATCH]], query=True)
             for i in range(0, len(windows), QUERY_BATCH)]
    out = {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}
    extras = {k: np.asarray(v, np.float32).mean(axis=0) for k, v in out.items() if k != "embedding"}
    return pooled(out["embedding"])[0], extras, np.asarray(out["embedding"], np.float32)


class Index:
    """A read-only view of one index folder; the encoder loads on first query, once."""

    def __init__(self, root: str | Path, device: str = "auto", nprobe: int | None = None,
                 ef_search: int | None = None, k_factor: float | None = None):
        self.dir = IndexDir(root)
        self.device = device
        self._encoder: Encoder | None = None
        self._load_snapshot()
        overrides = {"nprobe": nprobe, "efSearch": ef_search, "k_factor": k_factor}
        # Search knobs: the ones tuned at build time to recall@10 >= 0.95, unless the caller says otherwise.
        self.knobs = {**self.info.get("faiss", {}).get("search", {}),
                      **{k: v for k, v in overrides.items() if v is not None}}
        self.kind = self.info.get("faiss", {}).get("type", "flat")

    def _load_snapshot(self, attempts: int = 50) -> None:
        """Load index.json, its committed shards and the FAISS file it names as one consistent state.

        A writer may commit while we read; if index.json's generation moved or a listed file vanished,
        read again, so a search sees the old state or the new one, never a mix. Writers never delete a
        file the committed index.json lists, so one missing while the generation stands was lost by hand.
        """
        root = self.dir.root
        for _ in range(attempts):
            info = self.dir.read_info()
            faiss_file = self.dir.faiss_file(info)
            try:
                rows = self.dir.live_rows(CORE_COLUMNS, info.get("shards")).to_pandas()
                if not faiss_file.exists():
                    raise FileNotFoundError(faiss_file)
                index = faiss_ops.load(faiss_file, mmap=True)
                # Mapped now, with the state they belong to: a writer deleting them later leaves our maps readable.
                postings = Postings(self.dir, info["postings"]) if info.get("postings") else None
            except FileNotFoundError as e:
                if self.dir.read_info().get("generation") != info.get("generation"):
                    continue  # a writer committed and deleted the files we were reading: read the new state
                name = Path(e.filename or str(e)).name
                raise IndexFormatError(f"{root}: {name}, which this index needs, is missing (deleted or moved?); "
                                       f"run `simsearch rebuild {root}` to rebuild the index from the files that "
                                       "remain, then `simsearch index` on the source to re-embed what it lost") from None
            except (pa.ArrowInvalid, IndexFormatError) as e:  # a corrupt file, or shards that do not fit together
                if self.dir.read_info().get("generation") != info.get("generation"):
                    continue
                if isinstance(e, IndexFormatError):
                    raise
                raise IndexFormatError(f"{root}: the shards index.json lists do not fit together ({str(e)[:160]}); "
                                       f"run `simsearch rebuild {root}` to set aside the odd ones") from None
            if self.dir.read_info().get("generation") == info.get("generation"):
                break
        else:
            raise IndexFormatError(f"{root}: the index kept changing while loading; try again")
        self.info, self.faiss, self.core_rows = info, index, rows.set_index("id", drop=False)
        self.postings = postings
        name = faiss_file.name
        if not self.core_rows.index.is_unique:
            raise IndexFormatError(f"{root}: the shards hold rows with the same id (a shard copied in from another "
                                   f"index?); run `simsearch rebuild {root}` to set aside the foreign ones")
        if index.ntotal != len(rows) or not np.array_equal(np.sort(faiss_ops.ids(index)), np.sort(rows["id"])):
            raise IndexFormatError(f"{root}: {name} holds {index.ntotal} vectors that do not match the "
                                   f"{len(rows)} rows of the shards; run `simsearch rebuild {root}`")
        if index.d != info["dim"]:
            raise IndexFormatError(f"{root}: {name} is {index.d}-d but index.json says {info['dim']}; "
                                   f"run `simsearch rebuild {root}`")

    @classmethod
    def open(cls, root: str | Path, device: str = "auto", nprobe: int | None = None, ef_search: int | None = None,
             k_factor: float | None = None) -> "Index":
        """Open an index folder; nprobe (IVF-PQ), ef_search (HNSW), k_factor (IVF-PQ re-ranking) override the tuned knobs."""
        return cls(root, device, nprobe=nprobe, ef_search=ef_search, k_factor=k_factor)

    def __len__(self) -> int:
        return len(self.core_rows)

    @property
    def encoder(self) -> Encoder:
        """The encoder recorded in index.json, so queries land in the same space as the rows."""
        if self._encoder is None:
            self._encoder = recorded_encoder(self.info, self.device, self.dir.root)
        return self._encoder

    @cached_property
    def extras(self) -> dict[str, np.ndarray]:
        """Side outputs stored per row (e.g. YAMNet tag scores), aligned with self.rows."""
        names = self.info.get("extras", [])
        if not names:
            return {}
        t = self.dir.live_rows(["id", *names], self.info.get("shards"))
        order = pd.Index(t.column("id").to_numpy()).get_indexer(self.core_rows.index)
        return {n: np.asarray(t.column(n).combine_chunks().flatten(), np.float32).reshape(t.num_rows, -1)[order]
                for n in names}

    def embeddings(self) -> np.ndarray:
        """All stored embeddings [N, dim], L2-normalised, in self.rows order."""
        t = self.dir.live_rows(["id", "embedding"], self.info.get("shards"))
        order = pd.Index(t.column("id").to_numpy()).get_indexer(self.core_rows.index)
        x = np.asarray(t.column("embedding").combine_chunks().flatten(), np.float32).reshape(t.num_rows, -1)
        return normalize(x[order])

    def embed_query(self, audio: Any) -> np.ndarray:
        """A clip as one normalised vector: windows as in the index, averaged after normalisation."""
        return self.embed_clip(audio)[0]

    def embed_clip(self, audio: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """A query clip as the index sees it: (normalised mean of window embeddings [D], mean side outputs)."""
        return self.embed_clip_windows(audio)[:2]

    def embed_clip_windows(self, audio: Any) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """embed_clip, plus the clip's window embeddings [T, D] (what an attention-pooling probe reads)."""
        return self._embed_samples(decode(audio, self.encoder.sample_rate, max_seconds=QUERY_MAX_S))

    def _embed_samples(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        return embed_query(self.encoder, self.info, x)

    def search_vector(self, vector: np.ndarray, k: int = 10, filter: dict | None = None,
                      group_by_file: bool = False) -> list[dict]:
        """Nearest rows to a query vector in this index's space, only among rows passing `filter`.

        Always k results when at least k rows (k files with group_by_file) pass: the filter runs inside FAISS,
        and when the approximate index runs out of candidates the passing rows are searched exactly.
        """
        q = normalize(np.asarray(vector, np.float32).reshape(1, -1))
        if q.shape[1] != self.info["dim"]:
            raise SimsearchError(f"query vector is {q.shape[1]}-d; this index holds {self.info['dim']}-d vectors")
        keep = self.filter_mask(filter) if filter else None
        allowed = None if keep is None or keep.all() else self.core_rows["id"].to_numpy()[keep]
        ids, scores = self._nearest(q, max(1, int(k)), allowed, group_by_file, keep)
        return self.records(ids, scores)

    def search(self, audio: Any = None, text: str | None = None, k: int = 10, filter: dict | None = None,
               group_by_file: bool = False, exclude_same: bool = False,
               fields: tuple[str, ...] | None = None) -> list[dict]:
        """Query by example (path, bytes, array or {"array","sampling_rate"}) or by text.

        filter: {"label": "dog" or [...], any manifest metadata key: value(s), "path_glob": "*/drums/*",
        "min_duration": s, "max_duration": s}; group_by_file: best window per file.
        In an index with landmark fingerprints, an audio query's rows also carry "cosine" and "match" (the landmark
        score), and "score" is the cosine plus the match bonus (simsearch.audio.fingerprint), so copies of the query's own
        recording come first; exclude_same leaves out rows whose landmarks say they are the query's own recording
        (match >= fingerprint.SAME_RECORDING), for "other sounds like this one".
        A text query matches `fields` (default both): "words" (file name, folders, label, metadata; BM25) and
        "sound" (CLAP or AudioSet tags), fused by reciprocal rank; each hit carries "why" (simsearch.search.text).
        """
        if (audio is None) == (text is None):
            raise SimsearchError("give exactly one of audio= or text=")
        if fields is not None and audio is not None:
            raise SimsearchError("fields is for text queries (words and/or sound)")
        if exclude_same and audio is None:
            raise SimsearchError("exclude_same is for audio queries (it compares the query's landmarks)")
        if audio is not None:
            x = decode(audio, self.encoder.sample_rate, max_seconds=QUERY_MAX_S)
            vector = self._embed_samples(x)[0]
            if self.landmark_table is None:
                if exclude_same:
                    raise SimsearchError(f"{self.dir.root} keeps no landmark fingerprints, so it cannot tell the same "
                                         "recording apart; re-index without --no-fingerprint to use exclude_same")
                return self.search_vector(vector, k, filter, group_by_file)
            return search_with_landmarks(self, vector, x, k, filter, group_by_file, exclude_same)
        from simsearch.search.text import search_text_fields

        return search_text_fields(self, text, k, filter, group_by_file, fields)

    @cached_property
    def rows(self) -> pd.DataFrame:
        """Every stored field of every row (META_COLUMNS, indexed by id, in core_rows order), read on first use."""
        t = self.dir.live_rows(META_COLUMNS, self.info.get("shards")).to_pandas().set_index("id", drop=False)
        if not t.index.equals(self.core_rows.index):
            raise IndexFormatError(f"{self.dir.root}: the shards changed while reading; open the index again")
        return t

    @cached_property
    def words(self) -> "WordIndex":
        """BM25 over each row's file/folder/label/metadata words, built on first text query from self.rows."""
        from simsearch.search.words import WordIndex, name_docs

        return WordIndex(name_docs(self.rows))

    @cached_property
    def tag_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Each stored tag's mean and spread over the index's rows: text search and zero-shot calibrate to them."""
        from simsearch.encoders.tag_text import tag_stats

        return tag_stats(self.extras["tag_scores"])

    @cached_property
    def transcripts(self) -> pd.DataFrame | None:
        """What was said in each row (text, words with times and probabilities; self.rows order), or None for an
        index that keeps no spoken words."""
        from simsearch.store import transcripts

        if self.info.get("transcribe", "off") == "off" and not (self.dir.root / transcripts.DIR).is_dir():
            return None
        return transcripts.for_rows(self.dir, self.rows)

    @cached_property
    def spoken(self) -> "WordIndex | None":
        """BM25 over the words said in each row, counted by Whisper's confidence; None without transcripts."""
        from simsearch.search.words import WordIndex, spoken_docs

        return None if self.transcripts is None else WordIndex(spoken_docs(self.transcripts["words"]))

    @cached_property
    def landmark_table(self) -> "LandmarkTable | None":
        """Every row's fingerprint landmarks (in self.rows order); None for an index made without them."""
        return load_landmark_table(self)

    def filter_mask(self, filter: dict) -> np.ndarray:
        """Which rows (in self.rows order) pass a filter dict (see search); only a filter on other fields than
        label, path and duration reads the rest of the rows' fields."""
        if set(filter) <= {"label", "path", *filters.SPECIAL}:
            return filters.mask(self.core_rows, filter, None, self._file_durations)
        return filters.mask(self.rows, filter, self._metadata, self._file_durations)

    @cached_property
    def _metadata(self) -> pd.DataFrame:
        return filters.metadata_frame(self.rows)

    @cached_property
    def _file_durations(self) -> np.ndarray:
        return filters.file_durations(self.core_rows)

    def best_per_file(self, ids: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keep the first (best) hit of each file; input is sorted by score."""
        paths = self.core_rows["path"].reindex(ids).to_numpy()
        _, first = np.unique(paths, return_index=True)
        first = np.sort(first)
        return ids[first], scores[first]

    def _nearest(self, q: np.ndarray, k: int, allowed: np.ndarray | None, group_by_file: bool,
                 keep: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Ids and scores of the k best rows (or files), over-fetching until enough pass, exact as a last resort."""
        n_pass = len(self.core_rows) if allowed is None else len(allowed)
        if n_pass == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if group_by_file:
            paths = self.core_rows["path"] if keep is None else self.core_rows["path"][keep]
            want = min(k, paths.nunique())
        else:
            want = min(k, n_pass)
        # A flat index filters exactly inside FAISS; a selective filter over an approximate index is cheaper
        # and surer to answer by scoring the few passing rows directly.
        exact = allowed is not None and self.kind != "flat" and n_pass <= EXACT_FILTER_ROWS
        fetch = min(n_pass, want * 4 if group_by_file else want)
        knobs, widened = dict(self.knobs), 0
        while True:
            if exact:
                scores, ids = self._exact(q, fetch, allowed)
            else:
                D, I = faiss_ops.search(self.faiss, self.kind, q, fetch, knobs, allowed)
                ok = I[0] >= 0
                ids, scores = I[0][ok], D[0][ok]
            got = len(ids)
            if group_by_file:
                ids, scores = self.best_per_file(ids, scores)
            if len(ids) >= want or got >= n_pass:
                return ids[:k], scores[:k]
            if got < fetch and not exact and self.kind != "flat":
                # The approximate index ran out of candidates: look wider, then score the passing rows exactly.
                if widened < 2:
                    knobs, widened = faiss_ops.widen(self.kind, knobs), widened + 1
                else:
                    exact = True
                continue
            if fetch >= n_pass:
                return ids[:k], scores[:k]
            fetch = min(n_pass, fetch * 4)

    def _exact(self, q: np.ndarray, n: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the n best among `allowed` (None: all rows) by brute force over their vectors."""
        ids = self.core_rows["id"].to_numpy() if allowed is None else np.asarray(allowed, np.int64)
        s = self.vectors_for(ids) @ q[0]
        top = np.argpartition(-s, min(n, len(s)) - 1)[:n] if n < len(s) else np.arange(len(s))
        top = top[np.argsort(-s[top], kind="stable")]
        return s[top], ids[top]

    def vectors_for(self, ids: np.ndarray, approximate: bool = False) -> np.ndarray:
        """Normalised vectors of the given row ids: from FAISS where it keeps them, else from the shards;
        `approximate` also takes FAISS's SQ8 re-ranking codes (cosines within about 0.001, without holding every
        vector in memory)."""
        x = faiss_ops.reconstruct(self.faiss, ids)
        if x is None and approximate and self.info.get("faiss", {}).get("params", {}).get("refine") == "sq8":
            x = normalize(self.faiss.reconstruct_batch(np.ascontiguousarray(ids, dtype=np.int64)))
        if x is None and not self._vectors_fit:
            x = self._shard_vectors(np.asarray(ids, np.int64))
        return x if x is not None else self._stored_vectors[self.core_rows.index.get_indexer(ids)]

    @cached_property
    def _stored_vectors(self) -> np.ndarray:
        """All embeddings from the shards (for index types that cannot give vectors back), loaded once."""
        return self.embeddings()

    @cached_property
    def _vectors_fit(self) -> bool:
        """Whether every vector fits in memory beside the FAISS index, within the index's --max-memory (if any)."""
        record = self.info.get("faiss", {})
        budget = record.get("max_memory")
        need = len(self.core_rows) * int(self.info["dim"]) * 4 + int(record.get("memory_bytes") or 0)
        return budget is None or need <= int(budget)

    @cached_property
    def _shard_id_ranges(self) -> list[tuple[Path, int, int]]:
        """(shard, smallest id, largest id) of the committed shards, from their footers."""
        import pyarrow.parquet as pq

        out = []
        for p in self.dir.shard_paths(self.info.get("shards")):
            meta = pq.ParquetFile(p).metadata
            j = [meta.schema.column(c).name for c in range(meta.num_columns)].index("id")
            stats = [meta.row_group(g).column(j).statistics for g in range(meta.num_row_groups)]
            if stats and all(st is not None and st.has_min_max for st in stats):
                out.append((p, min(st.min for st in stats), max(st.max for st in stats)))
            else:
                out.append((p, -2**63, 2**63 - 1))
        return out

    def _shard_vectors(self, ids: np.ndarray) -> np.ndarray:
        """Normalised vectors of these ids read from the shards that can hold them (nothing else stays in memory)."""
        found: dict[int, np.ndarray] = {}
        for p, lo, hi in self._shard_id_ranges:
            if not ((ids >= lo) & (ids <= hi)).any():
                continue
            t = self.dir.read_shard(p, ["id", "embedding"])
            hit = np.isin(t.column("id").to_numpy(), ids)
            if hit.any():
                t = t.filter(pa.array(hit))
                x = np.asarray(t.column("embedding").combine_chunks().flatten(), np.float32).reshape(t.num_rows, -1)
                found.update(zip(t.column("id").to_pylist(), x))
        return normalize(np.stack([found[int(i)] for i in ids])) if len(ids) else np.zeros((0, self.info["dim"]), np.float32)

    def records(self, ids: np.ndarray, scores: np.ndarray) -> list[dict]:
        """Result rows in the documented JSON shape: rank, score, path, label, offset_s (+ duration_s, id)."""
        ids, scores = np.asarray(ids, np.int64), np.asarray(scores)
        keep = ids >= 0
        ids, scores = ids[keep], scores[keep]
        pos = self.core_rows.index.get_indexer(ids)  # one look-up for all hits
        if (pos < 0).any():
            raise KeyError(f"row ids not in this index: {ids[pos < 0][:5].tolist()}")
        rows = self.core_rows.iloc[pos]
        return [{"rank": rank, "score": round(float(s), 6), "path": path, "label": None if pd.isna(label) else label,
                 "offset_s": float(o), "duration_s": float(d), "id": int(i)}
                for rank, (i, s, path, label, o, d) in enumerate(zip(ids, scores, rows["path"], rows["label"],
                                                                     rows["offset_s"], rows["duration_s"]), start=1)]

