"""The first run's fit of a whitening fusion's map (simsearch.encoders.whitening): windows of a seeded sample of the
collection, read exactly as the indexer reads them, through the parts before whitening."""
from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from simsearch.encoders import whitening
from simsearch.errors import SimsearchError
from simsearch.indexing.options import IndexOptions
from simsearch.indexing.reader import ReadSettings, stream_chunks
from simsearch.store.folder import IndexDir

log = logging.getLogger(__name__)
FIT_BATCH = 16


def ensure_whitening(d: IndexDir, enc, paths: list[str], options: IndexOptions, info: dict | None) -> None:
    """Load the index's fitted map into `enc`, fitting it first for a new index (an index with rows never gets a
    new map: its rows would no longer share one space)."""
    if not getattr(enc, "whitened_parts", None):
        return
    path = d.root / whitening.WHITENING_FILE
    if not path.is_file() and not info:
        maps, rows, files = fit_maps(enc, paths, options)
        whitening.save(path, maps, rows, files)
        log.info("%s: whitening of %s fitted on %d windows of %d files", d.root, ", ".join(maps), rows, files)
    enc.load_whitening(path)


def fit_maps(enc, paths: list[str], options: IndexOptions) -> tuple[dict[str, whitening.Whitening], int, int]:
    """(one map per whitened part, windows read, files read) from the seeded sample of `paths`."""
    sample = whitening.fit_sample(paths)
    settings = replace(ReadSettings.of(options, enc.sample_rate), fingerprint=False)
    gathered: dict[str, list[np.ndarray]] = {name: [] for name in enc.whitened_parts}
    batch: list[np.ndarray] = []
    rows, files = 0, set()

    def flush() -> None:
        vectors, _ = enc.part_vectors(batch, only=list(gathered))  # the other parts need no fit
        for name, v in vectors.items():
            gathered[name].append(v)
        batch.clear()

    for chunk in stream_chunks(sample, settings, options.num_workers):
        if chunk.error:
            continue  # the indexing pass reports it
        for w in chunk.windows[: whitening.FIT_ROWS - rows]:
            batch.append(w.samples)
            rows += 1
            files.add(chunk.item)
            if len(batch) >= FIT_BATCH:
                flush()
        if rows >= whitening.FIT_ROWS:
            break
    if batch:
        flush()
    if rows < whitening.MIN_FIT_ROWS:
        raise SimsearchError(f"{enc.name!r} whitens parts with a map fitted to the collection, and only {rows} "
                             f"readable window(s) were found to fit it on (at least {whitening.MIN_FIT_ROWS}); index "
                             "more files, or leave out whiten(...) for a collection this small")
    return whitening.fit_parts(gathered), rows, len(files)
