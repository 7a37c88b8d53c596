"""Open an index folder and search it by example clip, by vector, or by text."""
from __future__ import annotations

import time
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import faiss_index
from .audio import decode, split_windows
from .encoders import Encoder, get_encoder
from .errors import IndexFormatError, SimsearchError
from .store import META_COLUMNS, IndexDir


class Index:
    """A read-only view of one index folder; the encoder loads on first query, once."""

    def __init__(self, root: str | Path, device: str = "auto"):
        self.dir = IndexDir(root)
        self.device = device
        self._encoder: Encoder | None = None
        self._load_snapshot()

    def _load_snapshot(self, attempts: int = 50) -> None:
        """Load index.json, its committed shards and faiss.index as one consistent state.

        A writer may commit while we read; if index.json's generation moved or a listed shard vanished,
        read again, so a search sees the old state or the new one, never a mix.
        """
        for attempt in range(attempts):
            info = self.dir.read_info()
            try:
                index = faiss_index.load(self.dir.faiss_path)
                rows = self.dir.live_rows(META_COLUMNS, info.get("shards")).to_pandas()
            except FileNotFoundError:
                time.sleep(0.1)
                continue
            if self.dir.read_info().get("generation") == info.get("generation"):
                break
            time.sleep(0.05)
        else:
            raise IndexFormatError(f"{self.dir.root}: the index kept changing while loading; try again")
        self.info, self.faiss, self.rows = info, index, rows.set_index("id", drop=False)
        root = self.dir.root
        if index.ntotal != len(rows) or not np.array_equal(np.sort(faiss_index.ids(index)), np.sort(rows["id"])):
            raise IndexFormatError(f"{root}: faiss.index holds {index.ntotal} vectors that do not match the "
                                   f"{len(rows)} rows of the shards; run `simsearch rebuild {root}`")
        if index.d != info["dim"]:
            raise IndexFormatError(f"{root}: faiss.index is {index.d}-d but index.json says {info['dim']}; "
                                   f"run `simsearch rebuild {root}`")

    @classmethod
    def open(cls, root: str | Path, device: str = "auto") -> "Index":
        return cls(root, device)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def encoder(self) -> Encoder:
        """The encoder recorded in index.json, so queries land in the same space as the rows."""
        if self._encoder is None:
            e = self.info["encoder"]
            self._encoder = get_encoder(e["name"], e.get("checkpoint"), self.device, **e.get("options", {}))
        return self._encoder

    @cached_property
    def extras(self) -> dict[str, np.ndarray]:
        """Side outputs stored per row (e.g. YAMNet tag scores), aligned with self.rows."""
        names = self.info.get("extras", [])
        if not names:
            return {}
        t = self.dir.live_rows(["id", *names], self.info.get("shards"))
        order = pd.Index(t.column("id").to_numpy()).get_indexer(self.rows.index)
        return {n: np.asarray(t.column(n).combine_chunks().flatten(), np.float32).reshape(t.num_rows, -1)[order]
                for n in names}

    def embeddings(self) -> np.ndarray:
        """All stored embeddings [N, dim], L2-normalised, in self.rows order."""
        t = self.dir.live_rows(["id", "embedding"], self.info.get("shards"))
        order = pd.Index(t.column("id").to_numpy()).get_indexer(self.rows.index)
        x = np.asarray(t.column("embedding").combine_chunks().flatten(), np.float32).reshape(t.num_rows, -1)
        return faiss_index.normalize(x[order])

    def embed_query(self, audio: Any) -> np.ndarray:
        """A clip as one normalised vector: windows as in the index, averaged after normalisation."""
        enc = self.encoder
        x = decode(audio, enc.sample_rate)
        windows = split_windows(x, enc.sample_rate, self.info.get("window_s", 10.0), self.info.get("hop_s"))
        emb = faiss_index.normalize(enc.embed_audio([w.samples for w in windows]))
        return faiss_index.normalize(emb.mean(axis=0, keepdims=True))[0]

    def search_vector(self, vector: np.ndarray, k: int = 10) -> list[dict]:
        """Nearest rows to a query vector in this index's space."""
        q = faiss_index.normalize(np.asarray(vector, np.float32).reshape(1, -1))
        if q.shape[1] != self.info["dim"]:
            raise SimsearchError(f"query vector is {q.shape[1]}-d; this index holds {self.info['dim']}-d vectors")
        k = max(1, min(int(k), len(self.rows)))
        scores, ids = self.faiss.search(q, k)
        return self.records(ids[0], scores[0])

    def search(self, audio: Any = None, text: str | None = None, k: int = 10) -> list[dict]:
        """Query by example (path, bytes, array or {"array","sampling_rate"}) or by text."""
        if (audio is None) == (text is None):
            raise SimsearchError("give exactly one of audio= or text=")
        if audio is not None:
            return self.search_vector(self.embed_query(audio), k)
        from .textsearch import search_text

        return search_text(self, text, k)

    def records(self, ids: np.ndarray, scores: np.ndarray) -> list[dict]:
        """Result rows in the documented JSON shape: rank, score, path, label, offset_s (+ duration_s, id)."""
        out = []
        for rank, (i, s) in enumerate(((i, s) for i, s in zip(ids, scores) if i >= 0), start=1):
            row = self.rows.loc[int(i)]
            out.append({"rank": rank, "score": round(float(s), 6), "path": row["path"],
                        "label": None if pd.isna(row["label"]) else row["label"],
                        "offset_s": float(row["offset_s"]), "duration_s": float(row["duration_s"]), "id": int(i)})
        return out
