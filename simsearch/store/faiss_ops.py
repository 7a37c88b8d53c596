"""FAISS indexes over the shards' vectors (flat, HNSW, IVF-PQ): cosine as inner product on L2-normalised vectors."""
from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from simsearch.errors import IndexFormatError
from simsearch.files import atomic_write_bytes
from simsearch.vectors import normalize

KINDS = ("flat", "hnsw", "ivfpq")
REFINES = ("none", "sq8", "flat")
IP = faiss.METRIC_INNER_PRODUCT


def empty(kind: str, dim: int, params: dict | None = None) -> faiss.Index:
    """An untrained, empty index whose search results are the shards' row ids.

    flat and HNSW sit in an IndexIDMap2; plain IVF-PQ keeps the ids in its inverted lists (so remove_ids
    stays correct); IVF-PQ with a refine stage sits in an IndexIDMap2 because IndexRefine has no ids.
    """
    p = params or {}
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if kind == "hnsw":
        h = faiss.IndexHNSWFlat(dim, int(p.get("M", 32)), IP)
        h.hnsw.efConstruction = int(p.get("efConstruction", 40))
        return faiss.IndexIDMap2(h)
    if kind == "ivfpq":
        ivf = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, int(p["nlist"]), int(p["m"]), int(p.get("nbits", 8)), IP)
        ivf.cp.spherical = True  # centroids on the sphere, as the data are
        ivf.cp.niter = int(p.get("niter", 15))
        ivf.pq.cp.niter = int(p.get("niter", 15))
        ivf.pq.cp.max_points_per_centroid = int(p.get("pq_points_per_centroid", 100))  # PQ training dominates build time
        ivf.pq.cp.min_points_per_centroid = 3  # small collections train fine on fewer; spares FAISS's stderr warnings
        refine = p.get("refine", "none")
        if refine == "none":
            return ivf
        store = (faiss.IndexFlatIP(dim) if refine == "flat"
                 else faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, IP))
        return faiss.IndexIDMap2(faiss.IndexRefine(ivf, store))
    raise ValueError(f"unknown index type {kind!r}; choose one of {KINDS}")


def needs_training(kind: str) -> bool:
    return kind == "ivfpq"


def build(vectors: np.ndarray, ids: np.ndarray, kind: str = "flat", params: dict | None = None,
          train: np.ndarray | None = None) -> faiss.Index:
    """Build an index of `kind` holding `vectors` under `ids`; IVF-PQ trains on `train` (default: all vectors)."""
    index = empty(kind, vectors.shape[1], params)
    if needs_training(kind):
        index.train(normalize(vectors if train is None else train))
    add(index, vectors, ids)
    return index


def add(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray, chunk: int = 100_000) -> None:
    """Add vectors under their row ids, in chunks so normalised copies stay small."""
    for s in range(0, len(ids), chunk):
        index.add_with_ids(normalize(vectors[s:s + chunk]), np.ascontiguousarray(ids[s:s + chunk], dtype=np.int64))


def can_remove(kind: str, params: dict | None = None) -> bool:
    """Whether remove_ids is exact and cheap: flat (IDMap2 renumbers) and plain IVF-PQ (ids live in the lists)."""
    return kind == "flat" or (kind == "ivfpq" and (params or {}).get("refine", "none") == "none")


def remove(index: faiss.Index, ids: np.ndarray) -> int:
    """Remove rows by id; only for types where can_remove() is true."""
    if not len(ids):
        return 0
    return int(index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))))


def ids(index: faiss.Index) -> np.ndarray:
    """The row ids an index holds, whichever way it stores them."""
    if hasattr(index, "id_map"):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    ivf = faiss.extract_index_ivf(index)
    lists = ivf.invlists
    parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
             for i in range(ivf.nlist) if lists.list_size(i)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def search(index: faiss.Index, kind: str, q: np.ndarray, k: int, knobs: dict | None = None,
           allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """k nearest by inner product, with the index's search knobs and, when given, only among `allowed` ids.

    The filter runs inside FAISS (an IDSelector in the search parameters), so results are rows that pass.
    """
    knobs = knobs or {}
    q = np.ascontiguousarray(q, dtype=np.float32)
    sel = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64)) if allowed is not None else None
    if kind == "flat":
        return index.search(q, k, params=faiss.SearchParameters(sel=sel) if sel is not None else None)
    if kind == "hnsw":
        params = faiss.SearchParametersHNSW(efSearch=max(int(knobs.get("efSearch", 64)), k))
        if sel is not None:
            params.sel = sel
        return index.search(q, k, params=params)
    if kind != "ivfpq":
        raise ValueError(f"unknown index type {kind!r}")
    ivf_params = faiss.SearchParametersIVF(nprobe=int(knobs.get("nprobe", 16)))
    if not hasattr(index, "id_map"):  # plain IVF-PQ: the lists hold the row ids themselves
        if sel is not None:
            ivf_params.sel = sel
        return index.search(q, k, params=ivf_params)
    # IDMap2 over IndexRefine: the refine wrapper passes only base_index_params down, so the selector is
    # translated to internal positions here and set on the IVF's own parameters.
    id_map = faiss.rev_swig_ptr(index.id_map.data(), index.id_map.size())  # a view: no copy per query
    if allowed is not None:
        pos = np.flatnonzero(np.isin(id_map, allowed)).astype(np.int64)
        sel = faiss.IDSelectorBatch(pos)
        ivf_params.sel = sel
    params = faiss.IndexRefineSearchParameters(k_factor=float(knobs.get("k_factor", 4)), base_index_params=ivf_params)
    D, L = faiss.downcast_index(index.index).search(q, k, params=params)
    return D, np.where(L >= 0, id_map[np.maximum(L, 0)], -1)


def reconstruct(index: faiss.Index, row_ids: np.ndarray) -> np.ndarray | None:
    """Stored vectors by row id where the index keeps them exactly (flat, HNSW, a flat re-ranking store); else None."""
    if not hasattr(index, "id_map"):
        return None
    inner = faiss.downcast_index(index.index)
    if isinstance(inner, faiss.IndexRefine) and not isinstance(faiss.downcast_index(inner.refine_index), faiss.IndexFlat):
        return None  # SQ8 codes: close, but not the vectors
    if not len(row_ids):
        return np.zeros((0, index.d), np.float32)
    return index.reconstruct_batch(np.ascontiguousarray(row_ids, dtype=np.int64))


def widen(kind: str, knobs: dict) -> dict:
    """Search knobs that look at four times as many candidates (for filters that leave too few)."""
    if kind == "hnsw":
        return {**knobs, "efSearch": 4 * int(knobs.get("efSearch", 64))}
    if kind == "ivfpq":
        return {**knobs, "nprobe": 4 * int(knobs.get("nprobe", 16)), "k_factor": 2 * float(knobs.get("k_factor", 4))}
    return knobs


def memory_bytes(index: faiss.Index) -> int:
    """Size of the serialised index: close to what it takes in RAM."""
    return int(faiss.serialize_index(index).size)


def save(index: faiss.Index, path: Path) -> None:
    """Serialise and swap in atomically, so a reader never loads half an index."""
    data = faiss.serialize_index(index)
    atomic_write_bytes(path, lambda f: f.write(data.tobytes()))


def load(path: Path, mmap: bool = False) -> faiss.Index:
    """Read an index file, turning FAISS's C++ errors into a message with the fix; `mmap` (read-only use: search)
    maps the stored vectors and codes from the file instead of copying them into memory."""
    if not Path(path).exists():
        raise IndexFormatError(f"{path}: missing; run `simsearch rebuild {Path(path).parent}` to rebuild it from the shards")
    try:
        if mmap:
            return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
        return faiss.deserialize_index(np.fromfile(path, dtype=np.uint8))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else "unreadable"
        raise IndexFormatError(f"{path}: corrupt FAISS index ({first}); run `simsearch rebuild {Path(path).parent}`") from None

