"""Collection whitening of fusion parts ('whiten(yamnet)+whiten(aisfx)+basic-pitch*3'): a PCA-whitening fitted once
on a seeded sample of the collection, so a part's cosine weighs the directions that tell the collection's sounds
apart rather than the few that every clip of the collection shares.

A frozen tagger's clip vectors of one kind of material (instrument notes, drum hits) all lie in a narrow cone: a
handful of directions say "music" or "percussion" and carry most of the length, so the nearest neighbours follow
pitch and loudness more than the instrument. Centring on the collection's mean and scaling each principal
direction to unit variance (keeping the components that explain KEEP of the variance, so the noise floor is not
blown up) spreads the cone out; on the rendered notes kNN rises from 0.80 to 0.95 (docs/benchmarks.md, "Music").

The fit belongs to the index: `simsearch index` fits it on the first run from up to FIT_FILES files (no labels
are read) and keeps it as WHITENING_FILE in the index folder; later runs, queries and re-builds use that file, so
every row and query of the index lands in the same space. A different collection needs a new index folder.
"""
from __future__ import annotations

import logging
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simsearch.errors import IndexFormatError, SimsearchError
from simsearch.files import atomic_write_bytes
from simsearch.vectors import normalize

log = logging.getLogger(__name__)
KEEP = 0.95  # share of the variance the kept directions explain
FIT_FILES = 1024  # files sampled for the fit (seeded); all their windows up to FIT_ROWS
FIT_ROWS = 8192
MIN_FIT_ROWS = 8  # fewer windows than this cannot say which directions matter
SEED = 0
WHITENING_FILE = "whitening.npz"
MARK = "whiten("


def marked(text: str) -> bool:
    """Whether a fusion part ('whiten(yamnet)*2') asks for whitening."""
    return text.strip().startswith(MARK)


def bare(text: str) -> str:
    """A fusion part without its whitening mark: 'whiten(yamnet)*2' -> 'yamnet*2'."""
    t = text.strip()
    if not marked(t):
        return t
    inner, close, rest = t[len(MARK):].partition(")")
    if not close or not inner.strip():
        raise SimsearchError(f"bad part {text!r}; write whiten(NAME), e.g. whiten(yamnet)*2")
    return inner.strip() + rest


@dataclass(frozen=True)
class Whitening:
    """One part's fitted map: centre on `mean`, project on the kept principal directions scaled to unit variance."""

    mean: np.ndarray  # [D]
    projection: np.ndarray  # [D, K]

    @property
    def dim(self) -> int:
        return int(self.projection.shape[1])

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Normalised part vectors [B, D] -> whitened, normalised [B, K]."""
        return normalize(((np.asarray(x, np.float32) - self.mean) @ self.projection).astype(np.float32))


def fit(x: np.ndarray, keep: float = KEEP) -> Whitening:
    """PCA-whitening of rows x [N, D]: the fewest directions that explain `keep` of the variance."""
    x = np.asarray(x, np.float64)
    if len(x) < 2:
        raise SimsearchError("whitening needs at least two windows to fit on")
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    var = s ** 2
    if var.sum() <= 0:
        raise SimsearchError("whitening cannot be fitted: every window gave the same vector")
    k = int(np.searchsorted(np.cumsum(var) / var.sum(), keep)) + 1
    k = min(k, int((var > var[0] * 1e-10).sum()))
    std = s[:k] / np.sqrt(len(x) - 1)
    return Whitening(mean.astype(np.float32), (vt[:k].T / std).astype(np.float32))


def save(path: Path, maps: dict[str, Whitening], rows: int, files: int) -> None:
    """Write the fitted maps atomically (a killed run leaves no half file)."""
    arrays = {f"{name}.mean": w.mean for name, w in maps.items()}
    arrays.update({f"{name}.projection": w.projection for name, w in maps.items()})
    atomic_write_bytes(path, lambda f: np.savez(f, rows=np.int64(rows), files=np.int64(files), **arrays))


def load(path: Path, parts: list[str]) -> dict[str, Whitening]:
    """The fitted maps of these parts, or a clear error when the file is missing or was fitted for other parts."""
    if not path.is_file():
        raise IndexFormatError(f"{path} is missing: this index's encoder whitens parts with a map fitted to its "
                               "collection; restore the file, or index the collection again into a new folder")
    try:
        with np.load(path) as z:
            missing = [p for p in parts if f"{p}.mean" not in z or f"{p}.projection" not in z]
            if missing:
                raise IndexFormatError(f"{path} holds no whitening for {', '.join(missing)}; index into a new folder")
            maps = {p: Whitening(np.asarray(z[f"{p}.mean"], np.float32), np.asarray(z[f"{p}.projection"], np.float32))
                    for p in parts}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise IndexFormatError(f"{path} is damaged ({type(e).__name__}); restore it, or index the collection again "
                               "into a new folder") from None
    for p, w in maps.items():
        if w.mean.ndim != 1 or w.projection.ndim != 2 or w.projection.shape[0] != w.mean.shape[0] \
                or not (np.isfinite(w.mean).all() and np.isfinite(w.projection).all()):
            raise IndexFormatError(f"{path}: the whitening of {p} is malformed; index the collection again into a "
                                   "new folder")
    return maps


def fit_sample(paths: list[str], files: int = FIT_FILES, seed: int = SEED) -> list[str]:
    """The files a fit reads: a seeded sample, so the same collection gives the same map."""
    return random.Random(seed).sample(sorted(paths), min(files, len(paths)))


def fit_parts(part_vectors: dict[str, list[np.ndarray]], keep: float = KEEP) -> dict[str, Whitening]:
    """One map per part from its gathered normalised window vectors."""
    maps = {name: fit(np.concatenate(v), keep) for name, v in part_vectors.items()}
    for name, w in maps.items():
        log.info("whitening %s: %d -> %d dims", name, w.mean.shape[0], w.dim)
    return maps
