"""Cut a recording into the (possibly overlapping) windows that become index rows."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np


@dataclass
class Window:
    """One piece of a recording, already mono and at the encoder's rate."""

    offset_s: float
    duration_s: float
    samples: np.ndarray
    source_rate: int = 0  # the file's own sample rate, kept as metadata
    landmarks: bytes | None = None  # packed fingerprint landmarks (simsearch.audio.fingerprint), when the index keeps them


def iter_window_starts(n_frames: int, sr: int, window_s: float, hop_s: float) -> Iterator[tuple[int, int]]:
    """(start, length) in frames, lazily: a header may declare billions of frames, the list need not exist.

    A trailing piece shorter than 1 s is dropped unless it is the only one.
    """
    win = max(1, int(round(window_s * sr)))
    hop = max(1, int(round(hop_s * sr)))
    if n_frames <= win:
        yield 0, n_frames
        return
    for start in range(0, n_frames, hop):
        length = min(win, n_frames - start)
        if start > 0 and length < min(sr, win):
            return
        yield start, length
        if start + length >= n_frames:
            return


def window_starts(n_frames: int, sr: int, window_s: float, hop_s: float) -> list[tuple[int, int]]:
    """(start, length) in frames; a trailing piece shorter than 1 s is dropped unless it is the only one."""
    return list(iter_window_starts(n_frames, sr, window_s, hop_s))


def split_windows(x: np.ndarray, sample_rate: int, window_s: float, hop_s: float | None = None) -> list[Window]:
    """Cut an in-memory waveform the same way iter_windows cuts a file."""
    hop_s = window_s if hop_s is None else hop_s
    return [Window(s / sample_rate, n / sample_rate, x[s:s + n], sample_rate)
            for s, n in window_starts(len(x), sample_rate, window_s, hop_s)]

