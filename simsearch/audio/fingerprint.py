"""Landmark fingerprints: find the very recording a query was copied from, through noise, codecs, crops and delays.

Embeddings say what a sound is like; a noisy or cut copy of a clip can drift far enough that another clip of the
same kind comes first. Spectral-peak landmarks (pairs of local maxima of the spectrogram, hashed by their two
frequencies and time gap, the scheme of Wang's 2003 Shazam paper) survive additive noise, band limits and
codecs because the strongest peaks stay where they were, and a crop or a late start keeps the peaks it has at one
constant time offset. The index stores each row's landmarks; a query's landmarks that land on one row at a
consistent offset add a bonus to that row's cosine (`fuse`), so an exact-copy match goes first and everything
else mostly keeps its embedding order.

Landmarks are computed at 8 kHz so a copy band-limited to 4 kHz (a phone line) keeps them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RATE = 8000  # landmarks use the band every copy keeps (a phone line passes 4 kHz)
N_FFT = 1024  # 128 ms windows, 7.8 Hz bins: finer bins give more distinct hashes
HOP = 128  # 16 ms frames: a spoken word still gets dozens of frames
NEIGHBOURHOOD = (15, 7)  # a peak is the maximum of +-7 bins (55 Hz) x +-3 frames (48 ms) around it
RANGE_DB = 60.0  # peaks more than this under the loudest one are ignored
SILENCE_DB = -100.0  # ... and so is anything under this STFT magnitude (far under 16-bit quantisation): silence
PEAKS_PER_S = 40.0  # the strongest peaks are kept, this many per second ...
MIN_PEAKS = 24  # ... but at least this many, so clicks and single drum hits get landmarks too
FAN_OUT = 5  # each anchor peak pairs with this many later (or simultaneous, higher) peaks
MAX_DT = 48  # frames (0.77 s) an anchor's targets may lie ahead
MAX_DF = 40  # bins (310 Hz) they may lie above or below it
SHIFTS = 2  # query-side frame grids at 0 and half a hop: a query starting at any sample lands near the stored one
# The bonus, chosen on the robustness table (docs/benchmarks.md) under the constraint that leave-one-out neighbours
# of clean clips (different recordings) keep their label accuracy: 99.9 % of chance agreements between different
# clips score under 5 and earn little, a changed copy's 10-60 moves its original past clips of the same kind.
MIN_SCORE = 3.0  # match scores under this add nothing
FULL_SCORE = 30.0  # a score this high earns the whole bonus
BONUS = 0.4  # added to the cosine of a full match
MAX_IN_MEMORY = 150_000_000  # landmarks (12 bytes each in the table, ~1.8 GB): above this search skips them
SAME_RECORDING = 10.0  # reported as "the same recording"; different recordings reach it in 0.016 % of pairs


def describe() -> dict:
    """What index.json records, so a later reader knows how the stored landmarks were made."""
    return {"rate": RATE, "n_fft": N_FFT, "hop": HOP, "peaks_per_s": PEAKS_PER_S, "min_peaks": MIN_PEAKS,
            "fan_out": FAN_OUT, "max_dt": MAX_DT, "max_df": MAX_DF, "stored_grids": 1, "query_grids": SHIFTS,
            "min_score": MIN_SCORE, "full_score": FULL_SCORE, "bonus": BONUS}


def compatible(recorded: dict) -> bool:
    """Whether landmarks recorded with these settings can match the ones this version makes."""
    now = describe()
    return all(recorded.get(k) == now[k] for k in ("rate", "n_fft", "hop", "peaks_per_s", "min_peaks", "fan_out",
                                                    "max_dt", "max_df", "stored_grids"))


def _levels(x: np.ndarray, sample_rate: int, hop: int) -> np.ndarray:
    """Log power spectrogram [bins, frames] at RATE with frames every `hop` samples, frame j centred on j * hop."""
    import torch

    from simsearch.audio.resample import resample

    x = np.nan_to_num(np.asarray(x, dtype=np.float32).reshape(-1))
    if x.size == 0:
        return np.zeros((N_FFT // 2 + 1, 0), np.float32)
    y = resample(x, sample_rate, RATE) if sample_rate != RATE else x
    # Zero padding (not reflection) at the edges: a clip that starts on its first sample then looks the same as a
    # copy that starts late, after silence.
    y = np.pad(y, (N_FFT // 2, N_FFT // 2))
    spec = torch.stft(torch.from_numpy(y), N_FFT, hop, window=torch.hann_window(N_FFT), center=False,
                      return_complex=True)
    level = (10.0 * torch.log10(spec.real.square() + spec.imag.square() + 1e-18)).numpy()
    level[0] = -300.0  # DC
    return level


def spectral_peaks(level: np.ndarray, neighbourhood: tuple[int, int] = NEIGHBOURHOOD,
                   peaks_per_s: float = PEAKS_PER_S) -> tuple[np.ndarray, np.ndarray]:
    """(frequency bin, frame) of the strongest local maxima of a log spectrogram, sorted by frame then bin; the
    triplet landmarks take the same peaks over log-frequency bins."""
    from scipy.ndimage import maximum_filter

    if level.shape[1] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    local = maximum_filter(level, size=neighbourhood, mode="constant", cval=-400.0)
    f, t = np.nonzero((level == local) & (level > max(level.max() - RANGE_DB, SILENCE_DB)))
    n = max(MIN_PEAKS, int(peaks_per_s * level.shape[1] * HOP / RATE))
    keep = np.argsort(-level[f, t], kind="stable")[:n]
    f, t = f[keep], t[keep]
    order = np.lexsort((f, t))
    return f[order].astype(np.int64), t[order].astype(np.int64)


def _pairs(f: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hash uint32, anchor frame int32): each anchor paired with the next FAN_OUT peaks within MAX_DT frames and
    MAX_DF bins, in (frame, bin) order."""
    n = len(f)
    ends = np.searchsorted(t, t + MAX_DT, "right")
    width = int((ends - np.arange(n)).max()) if n else 0
    if width <= 1:
        return np.zeros(0, np.uint32), np.zeros(0, np.int32)
    i = np.arange(n)[:, None]
    j = i + np.arange(1, width)[None, :]  # candidate targets of each anchor
    ok = j < ends[:, None]
    j = np.minimum(j, n - 1)
    ok &= np.abs(f[j] - f[i]) <= MAX_DF
    ok &= np.cumsum(ok, axis=1) <= FAN_OUT
    a, b = np.broadcast_to(i, j.shape)[ok], j[ok]
    hashes = (f[a] << 16) | ((f[b] - f[a] + 64) << 8) | (t[b] - t[a])
    return hashes.astype(np.uint32), t[a].astype(np.int32)


def landmarks(x: np.ndarray, sample_rate: int, grids: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(hash uint32, anchor frame int32) of one clip: spectral-peak pairs on `grids` frame grids offset by
    HOP / grids (one spectrogram at that finer hop, split; frames numbered within each grid)."""
    level = _levels(x, sample_rate, HOP // grids)
    parts = [_pairs(*spectral_peaks(level[:, s::grids])) for s in range(grids)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def query_landmarks(x: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """A query's landmarks on SHIFTS grids, so whatever sample it starts on, one grid lines up with the stored one
    (done on the query side because queries are few and rows are many)."""
    return landmarks(x, sample_rate, SHIFTS)


def index_landmarks(x: np.ndarray, sample_rate: int) -> bytes:
    """A stored row's landmarks (one grid), packed as int32 (hash, frame) pairs."""
    h, t = landmarks(x, sample_rate)
    return np.stack([h.view(np.int32), t], axis=1).astype(np.int32).tobytes()


def unpack(blob: bytes | None) -> tuple[np.ndarray, np.ndarray]:
    """(hash uint32, frame int32) from index_landmarks' bytes."""
    if not blob:
        return np.zeros(0, np.uint32), np.zeros(0, np.int32)
    pairs = np.frombuffer(blob, np.int32).reshape(-1, 2)
    return pairs[:, 0].view(np.uint32), pairs[:, 1]


class FromBlobs:
    """`build` for every landmark table kind: its from_arrow over the rows' packed landmarks."""

    @classmethod
    def build(cls, blobs: list[bytes | None]):
        """One table from the rows' packed landmarks (row position = place in `blobs`)."""
        import pyarrow as pa

        return cls.from_arrow(pa.array(blobs, pa.binary()), np.arange(len(blobs)), len(blobs))


@dataclass
class LandmarkTable(FromBlobs):
    """Every stored landmark sorted by hash, for look-ups of a query's landmarks."""

    hashes: np.ndarray  # uint32 [M], sorted
    rows: np.ndarray  # int32 [M], row position (0..n_rows-1)
    times: np.ndarray  # int32 [M]
    n_rows: int

    @classmethod
    def from_arrow(cls, column, positions: np.ndarray, n_rows: int) -> "LandmarkTable":
        """From a binary Arrow column of packed landmarks read straight from the shards (no Python objects per
        row); element i belongs to row position positions[i]; nulls hold none."""
        import pyarrow as pa

        arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        if len(arr) == 0:
            return cls(np.zeros(0, np.uint32), np.zeros(0, np.int32), np.zeros(0, np.int32), n_rows)
        offsets = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset:arr.offset + len(arr) + 1]
        data = np.frombuffer(arr.buffers()[2], np.uint8) if arr.buffers()[2] is not None else np.zeros(0, np.uint8)
        pairs = data[offsets[0]:offsets[-1]].view(np.int32).reshape(-1, 2)
        rows = np.repeat(np.asarray(positions, np.int32), np.diff(offsets) // 8)
        order = np.argsort(pairs[:, 0].view(np.uint32), kind="stable")
        return cls(pairs[order, 0].view(np.uint32), rows[order], pairs[order, 1].copy(), n_rows)

    def scores(self, hashes: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Match score of every row [n_rows]: the landmarks agreeing on the best offset (+-1 frame), times the
        share of the row's matches that agree, so sustained tones that repeat one hash everywhere score low."""
        out = np.zeros(self.n_rows, np.float64)
        lo = np.searchsorted(self.hashes, hashes, "left")
        hi = np.searchsorted(self.hashes, hashes, "right")
        counts = hi - lo
        if not counts.sum():
            return out
        idx = np.repeat(lo - np.cumsum(np.r_[0, counts[:-1]]), counts) + np.arange(counts.sum())
        rows = self.rows[idx].astype(np.int64)
        offsets = self.times[idx].astype(np.int64) - np.repeat(times.astype(np.int64), counts)
        span = int(offsets.max() - offsets.min()) + 3
        keys, n = np.unique(rows * span + (offsets - offsets.min() + 1), return_counts=True)
        near = n.copy()
        for d in (-1, 1):  # an offset and its two neighbours count together
            pos = np.searchsorted(keys, keys + d)
            hit = (pos < len(keys)) & (keys[np.minimum(pos, len(keys) - 1)] == keys + d)
            near[hit] += n[pos[hit]]
        peak = np.zeros(self.n_rows, np.float64)
        np.maximum.at(peak, keys // span, near)
        total = np.bincount(rows, minlength=self.n_rows).astype(np.float64)
        return np.where(total > 0, peak * np.minimum(1.0, peak / np.maximum(total, 1.0)), 0.0)


def bonus(scores: np.ndarray) -> np.ndarray:
    """What a match score adds to a cosine: nothing under MIN_SCORE, rising to BONUS at FULL_SCORE."""
    scores = np.asarray(scores, np.float64)
    return np.where(scores >= MIN_SCORE, BONUS * np.minimum(1.0, scores / FULL_SCORE), 0.0)


def fuse(cosines: np.ndarray, scores: np.ndarray | None) -> np.ndarray:
    """Ranking score: cosine plus the landmark bonus (the same rule for search and for the robustness table);
    cosine alone where there are no landmarks (scores None)."""
    cosines = np.asarray(cosines, np.float64)
    return cosines if scores is None else cosines + bonus(scores)

