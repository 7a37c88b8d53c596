"""FAISS index built from the shards: cosine similarity as inner product on L2-normalised vectors."""
from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from .errors import IndexFormatError
from .store import atomic_write_bytes


def normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation; zero rows stay zero instead of becoming NaN."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def build(vectors: np.ndarray, ids: np.ndarray, kind: str = "flat") -> faiss.Index:
    """An ID-mapped index so FAISS results are the shards' row ids."""
    dim = vectors.shape[1]
    if kind != "flat":
        raise ValueError(f"unknown index type {kind!r}")
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if len(ids):
        index.add_with_ids(normalize(vectors), np.ascontiguousarray(ids, dtype=np.int64))
    return index


def ids(index: faiss.Index) -> np.ndarray:
    """The row ids an ID-mapped index holds."""
    return faiss.vector_to_array(index.id_map).astype(np.int64)


def save(index: faiss.Index, path: Path) -> None:
    """Serialise and swap in atomically, so a reader never loads half an index."""
    data = faiss.serialize_index(index)
    atomic_write_bytes(path, lambda f: f.write(data.tobytes()))


def load(path: Path) -> faiss.Index:
    """Read an index file, turning FAISS's C++ errors into a message with the fix."""
    if not Path(path).exists():
        raise IndexFormatError(f"{path}: missing; run `simsearch rebuild {Path(path).parent}` to rebuild it from the shards")
    try:
        return faiss.deserialize_index(np.fromfile(path, dtype=np.uint8))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else "unreadable"
        raise IndexFormatError(f"{path}: corrupt FAISS index ({first}); run `simsearch rebuild {Path(path).parent}`") from None
