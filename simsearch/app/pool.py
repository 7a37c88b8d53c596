"""The indexes the app serves, opened once at start-up: where they are, what they may play, their kNN banks."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from simsearch.app.clips import ClipStore
from simsearch.audio import containers
from simsearch.classify.knn import labelled_bank
from simsearch.classify.probe import PROBE_WEIGHTS
from simsearch.errors import SimsearchError
from simsearch.search.index import Index
from simsearch.search.text import text_mode

MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")
DEFAULT_INDEX_ROOT = "indexes"


def find_index_dirs(paths: list[str | Path] | None = None, default_root: str | Path = DEFAULT_INDEX_ROOT) -> list[Path]:
    """Index folders named, or every index folder one level under each folder named (default: ./indexes)."""
    found: list[Path] = []
    for p in map(Path, paths or [default_root]):
        if (p / "index.json").is_file():
            found.append(p.resolve())
        elif p.is_dir():
            kids = sorted(c.resolve() for c in p.iterdir() if (c / "index.json").is_file())
            if not kids:
                raise SimsearchError(f"{p}: neither an index folder nor a folder of them; build one with "
                                     f"`simsearch index SRC --out {p / 'NAME'}`")
            found += kids
        else:
            raise SimsearchError(f"{p}: no such index folder; build one with `simsearch index SRC --out {p}` "
                                 "or pass --index DIR")
    return list(dict.fromkeys(found))


def source_roots(info: dict) -> list[Path]:
    """Folders whose indexed rows results may play: each indexed folder, or the folder holding an indexed manifest."""
    roots = []
    for s in info.get("sources", []):
        p = Path(s).resolve()
        roots.append(p.parent if p.suffix.lower() in MANIFEST_SUFFIXES and not p.is_dir() else p)
    return list(dict.fromkeys(roots))


def inside(path: str | Path, roots: list[Path]) -> bool:
    """True when the path, links resolved, lies within one of the roots (a clip in a container: the container)."""
    member = containers.split_member(path)
    real = (member[0] if member else Path(path)).resolve()
    return any(real == r or real.is_relative_to(r) for r in roots)


@dataclass
class Served:
    """One index the app serves, opened once: the Index, the roots its rows must lie in, and its kNN bank."""

    name: str
    index: Index
    roots: list[Path]
    knn_bank: np.ndarray  # normalised embeddings of the labelled rows [M, D]; M is 0 without labels
    knn_labels: list[list[str]]
    knn_rows: pd.DataFrame  # the labelled rows, aligned with knn_bank

    @property
    def has_probe(self) -> bool:
        return (self.index.dir.root / PROBE_WEIGHTS).is_file()


def open_served(name: str, root: Path, device: str = "auto", warm: bool = True) -> Served:
    """Open an index, keep the labelled rows kNN votes over, and (warm=True) load and run its encoder once."""
    index = Index.open(root, device=device)
    bank, labels, ids = labelled_bank(index)
    served = Served(name, index, source_roots(index.info), bank, labels, index.rows.loc[ids])
    if warm:
        warm_up(index)
    return served


def warm_up(index: Index) -> None:
    """Load the encoder (and the text model for tag search) now, so the first request is not the slow one."""
    enc = index.encoder
    rng = np.random.default_rng(0)
    enc.embed_batch([(0.1 * rng.standard_normal(enc.sample_rate)).astype(np.float32)])
    index.landmark_table  # noqa: B018 - cached property: reads the fingerprints once
    mode = text_mode(index)
    if mode == "tags":
        from simsearch.encoders.tag_text import class_embeddings
        from simsearch.encoders.yamnet import load_class_names

        index.extras  # noqa: B018 - cached property: reads tag scores once
        class_embeddings(load_class_names())
    elif mode == "clap":
        enc.embed_text(["warm up"])


class IndexPool:
    """Every index the app serves, keyed by a short display name; each opened once at start-up."""

    def __init__(self, dirs: list[str | Path], device: str = "auto", warm: bool = True, clip_ttl_s: float = 900.0):
        if not dirs:
            raise SimsearchError("no index folders to serve; build one with `simsearch index SRC --out indexes/NAME`")
        self.served: dict[str, Served] = {}
        for d in map(Path, dirs):
            name = d.name if d.name not in self.served else str(d)
            self.served[name] = open_served(name, d, device, warm)
        self.clips = ClipStore(clip_ttl_s)  # result audio is copied or cut here; sources are never served directly

    @property
    def clip_dir(self) -> Path:
        return self.clips.dir

    @property
    def names(self) -> list[str]:
        return list(self.served)

    def get(self, name: str | None) -> Served:
        if not name:
            return next(iter(self.served.values()))
        if name not in self.served:
            raise SimsearchError(f"unknown index {name!r}; choose one of: {', '.join(self.served)}")
        return self.served[name]

    def close(self) -> None:
        """Remove the clip folder now rather than at interpreter exit."""
        self.clips.close()
