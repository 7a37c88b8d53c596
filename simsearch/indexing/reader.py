"""Decode and resample files in worker processes, streaming each file as chunks of windows."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from simsearch.audio import landmark_kinds
from simsearch.audio.decode import iter_windows
from simsearch.audio.windows import Window
from simsearch.errors import AudioError

if TYPE_CHECKING:
    from simsearch.indexing.options import IndexOptions

CHUNK_WINDOWS = 16  # windows per message: bounds worker memory for hour-long files


@dataclass(frozen=True)
class ReadSettings:
    """How every file of a run is read: the encoder's rate, the windows, the length limit, landmarks or not."""

    sample_rate: int
    window_s: float
    hop_s: float
    max_duration_s: float | None = None
    fingerprint: bool = False
    landmarks: str = landmark_kinds.DEFAULT  # their kind

    @classmethod
    def of(cls, options: IndexOptions, sample_rate: int) -> ReadSettings:
        """The settings an indexing run reads with (its options' windows resolved against the index's record)."""
        return cls(sample_rate, options.window_s, options.hop_s, options.max_duration_s, bool(options.fingerprint),
                   options.landmarks or landmark_kinds.DEFAULT)


@dataclass
class Chunk:
    """Part of one file: `last` marks its final chunk; `error` means the file is bad and must be dropped."""

    item: int
    windows: list[Window] = field(default_factory=list)
    last: bool = False
    error: str | None = None


class WindowStream(IterableDataset):
    """Yields Chunks for the given file paths; workers take every n-th file."""

    def __init__(self, paths: list[str], settings: ReadSettings):
        self.paths, self.settings = paths, settings

    def __iter__(self):
        info = get_worker_info()
        start, step = (info.id, info.num_workers) if info else (0, 1)
        for i in range(start, len(self.paths), step):
            yield from self.read_file(i)

    def read_file(self, i: int):
        """One file's Chunks; a file the decoder rejects yields a single Chunk with the reason."""
        st = self.settings
        pending: list[Window] = []
        index_landmarks = landmark_kinds.module(st.landmarks).index_landmarks
        try:
            for w in iter_windows(self.paths[i], st.sample_rate, st.window_s, st.hop_s, st.max_duration_s):
                if st.fingerprint:  # here, in the worker, so the encoder's cores never do it
                    w.landmarks = index_landmarks(w.samples, st.sample_rate)
                pending.append(w)
                if len(pending) == CHUNK_WINDOWS:
                    yield Chunk(i, pending)
                    pending = []
        except AudioError as e:
            yield Chunk(i, last=True, error=e.reason)
            return
        except (MemoryError, ValueError, OSError) as e:  # anything else a hostile file can trigger in the decoder
            yield Chunk(i, last=True, error=f"{type(e).__name__}: {e}")
            return
        yield Chunk(i, pending, last=True)


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # workers share the cores; the encoder gets the rest


def _identity(x):
    return x


def default_workers() -> int:
    """Leave one core for the encoder; decoding rarely needs more than a few processes."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def stream_chunks(paths: list[str], settings: ReadSettings, num_workers: int | None = None):
    """Iterate Chunks, decoded in `num_workers` processes (0 = in this process)."""
    ds = WindowStream(paths, settings)
    workers = default_workers() if num_workers is None else num_workers
    workers = min(workers, len(paths))
    if workers == 0:
        return iter(ds)
    return iter(DataLoader(ds, batch_size=None, num_workers=workers, collate_fn=_identity,
                           worker_init_fn=_one_thread, prefetch_factor=4, persistent_workers=False))


def stack_padded(batch: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """[B, max_len] zero-padded waveforms and their lengths."""
    lengths = np.array([len(x) for x in batch], dtype=np.int64)
    out = np.zeros((len(batch), int(lengths.max())), dtype=np.float32)
    for i, x in enumerate(batch):
        out[i, : len(x)] = x
    return out, lengths

