"""Triplet landmarks: find the recording a query was copied from through pitch shifts, tempo and speed changes.

Pair landmarks (simsearch.audio.fingerprint) hash absolute frequencies and frame gaps, so a copy a semitone higher
or 10 % faster shares none of them. Here, in the spirit of Panako (Six & Leman, 2014), three spectral peaks close
in time are hashed by what such changes keep: on a log-frequency axis a pitch shift adds one constant to every
peak, so the two frequency differences stay; a tempo change scales every time gap, so the ratio of the two gaps
stays. Matching then asks that one row's matches agree on a single time scale, time offset and frequency shift:
a coarse vote over a grid of scales finds that (scale, offset, shift) cell, and a line fit through the cell's
matches counts the ones that lie on it. Scores use fingerprint's scale (bonus, same-recording threshold).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from simsearch.audio import fingerprint

KIND = "triplets-v1"
RATE = fingerprint.RATE  # 8 kHz, as pairs: a phone-band copy keeps its landmarks
N_FFT = 1024  # 128 ms windows: low notes still get separate log bins
HOP = fingerprint.HOP  # 16 ms frames, as pairs (the peak picker counts peaks per second in them)
F_MIN, F_MAX = 100.0, 3800.0  # Hz: the log axis covers voices and most melodies, under the phone band's edge
BINS_PER_OCTAVE = 24  # quarter tones: a semitone shift moves every peak by 2 bins
NEIGHBOURHOOD = (7, 7)  # a peak is the maximum of +-3 log bins (1.5 semitones) x +-3 frames (48 ms)
PEAKS_PER_S = 50.0  # more than pairs: each triplet needs all three peaks to survive
FAN_OUT = 5  # an anchor pairs up the next 5 peaks in reach: up to 10 triplets per anchor
MAX_DT = 40  # frames (0.64 s) from the anchor to the last peak
MAX_DF = 30  # log bins (1.25 octaves) a peak may lie above or below the anchor
RATIO_LEVELS = 8  # the gap ratio (t2 - t1) / (t3 - t1) in this many steps (<= 15: 4 bits)
MAX_SCALE = 1.16  # time scales between 1/1.16 and 1.16 (tempo and speed +-10 % with room)
SCALE_STEP = 1.02  # the scale grid of the coarse vote
MAX_SHIFT = 7  # log bins (3.5 semitones) of pitch shift matched
OFFSET_BIN = 4  # frames: coarse offset bins (widened for long queries, where a 1 % scale error moves more)
FIT_TOLERANCE = 2.0  # frames a match may lie off the fitted line
MIN_MATCHES = 3  # rows with fewer raw matches are not voted on (their score could not reach MIN_SCORE)
SHARE = 0.5  # a row whose consistent matches are under this share of its raw matches scores lower (drones, stacks)


def describe() -> dict:
    """What index.json records about these landmarks (with "kind", which tells search how to match them)."""
    return {"kind": KIND, "rate": RATE, "n_fft": N_FFT, "hop": HOP, "f_min": F_MIN, "f_max": F_MAX,
            "bins_per_octave": BINS_PER_OCTAVE, "peaks_per_s": PEAKS_PER_S, "min_peaks": fingerprint.MIN_PEAKS,
            "fan_out": FAN_OUT, "max_dt": MAX_DT, "max_df": MAX_DF, "ratio_levels": RATIO_LEVELS,
            "max_scale": MAX_SCALE, "max_shift": MAX_SHIFT, "min_score": fingerprint.MIN_SCORE,
            "full_score": fingerprint.FULL_SCORE, "bonus": fingerprint.BONUS}


def compatible(recorded: dict) -> bool:
    """Whether stored triplets were made as this version makes them (matching settings may differ)."""
    now = describe()
    return all(recorded.get(k) == now[k] for k in ("kind", "rate", "n_fft", "hop", "f_min", "f_max",
                                                    "bins_per_octave", "peaks_per_s", "min_peaks", "fan_out",
                                                    "max_dt", "max_df", "ratio_levels"))


@lru_cache(maxsize=1)
def _log_filters() -> np.ndarray:
    """Triangular filters [log bins, FFT bins] at log-spaced centres, each at least one FFT bin wide, so a pitch
    shift becomes a shift along the log axis."""
    n_bins = int(np.floor(BINS_PER_OCTAVE * np.log2(F_MAX / F_MIN))) + 1
    centres = F_MIN * 2.0 ** (np.arange(n_bins) / BINS_PER_OCTAVE)
    fft_hz = np.arange(N_FFT // 2 + 1) * RATE / N_FFT
    width = np.maximum(centres * (2.0 ** (1.0 / BINS_PER_OCTAVE) - 1.0), RATE / N_FFT)
    w = np.maximum(0.0, 1.0 - np.abs(fft_hz[None, :] - centres[:, None]) / width[:, None])
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def _levels(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Log-frequency power in dB [log bins, frames] at RATE, frame j centred on j * HOP."""
    import torch

    from simsearch.audio.resample import resample

    x = np.nan_to_num(np.asarray(x, dtype=np.float32).reshape(-1))
    filters = _log_filters()
    if x.size == 0:
        return np.zeros((len(filters), 0), np.float32)
    y = resample(x, sample_rate, RATE) if sample_rate != RATE else x
    y = np.pad(y, (N_FFT // 2, N_FFT // 2))  # zeros, as pairs do: a late start looks like a clip that starts late
    spec = torch.stft(torch.from_numpy(y), N_FFT, HOP, window=torch.hann_window(N_FFT), center=False,
                      return_complex=True)
    power = (spec.real.square() + spec.imag.square()).numpy()
    return (10.0 * np.log10(filters @ power + 1e-18)).astype(np.float32)


def _triplets(f: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hash uint32, anchor frame, anchor log bin): each anchor with every two of its next FAN_OUT peaks in reach;
    the hash holds the two log-frequency differences and the quantised gap ratio."""
    n = len(f)
    empty = (np.zeros(0, np.uint32), np.zeros(0, np.int64), np.zeros(0, np.int64))
    if n < 3:
        return empty
    ends = np.searchsorted(t, t + MAX_DT, "right")
    width = int((ends - np.arange(n)).max())
    if width <= 2:
        return empty
    i = np.arange(n)[:, None]
    j = i + np.arange(1, width)[None, :]
    ok = (j < ends[:, None])
    j = np.minimum(j, n - 1)
    ok &= np.abs(f[j] - f[i]) <= MAX_DF
    ok &= np.cumsum(ok, axis=1) <= FAN_OUT
    a, b = np.broadcast_to(i, j.shape)[ok], j[ok]  # anchor, target pairs, grouped by anchor in target order
    order = np.argsort(a, kind="stable")
    a, b = a[order], b[order]
    firsts = np.searchsorted(a, np.arange(n))
    counts = np.bincount(a, minlength=n)
    u, v = np.triu_indices(FAN_OUT, 1)  # every (second, third) choice among an anchor's targets
    anchors = np.repeat(np.arange(n), len(u))
    su, sv = np.tile(u, n), np.tile(v, n)
    use = sv < counts[anchors]
    anchors, p2, p3 = anchors[use], b[firsts[anchors[use]] + su[use]], b[firsts[anchors[use]] + sv[use]]
    dt13, dt12 = t[p3] - t[anchors], t[p2] - t[anchors]
    # The gap ratio in RATIO_LEVELS steps; three simultaneous peaks (a drum hit's partials) get a level of their own.
    ratio = np.where(dt13 > 0, np.minimum(RATIO_LEVELS - 1, (dt12 * RATIO_LEVELS) // np.maximum(dt13, 1)), RATIO_LEVELS)
    hashes = ((f[p2] - f[anchors] + 64) << 11) | ((f[p3] - f[anchors] + 64) << 4) | ratio
    return hashes.astype(np.uint32), t[anchors], f[anchors]


def landmarks(x: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hash uint32, anchor frame int32, anchor log bin int32) of one clip."""
    h, t, f = _triplets(*fingerprint.spectral_peaks(_levels(x, sample_rate), NEIGHBOURHOOD, PEAKS_PER_S))
    return h, t.astype(np.int32), f.astype(np.int32)


def query_landmarks(x: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A query's landmarks: the same as a stored row's (the line fit tolerates the frame grid's half hop)."""
    return landmarks(x, sample_rate)


def index_landmarks(x: np.ndarray, sample_rate: int) -> bytes:
    """A stored row's landmarks packed as int32 pairs (hash, frame << 8 | log bin): 8 bytes each, as pairs."""
    h, t, f = landmarks(x, sample_rate)
    return np.stack([h.view(np.int32), (t << 8) | f], axis=1).astype(np.int32).tobytes()


def unpack(blob: bytes | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hash uint32, frame int32, log bin int32) from index_landmarks' bytes."""
    if not blob:
        return np.zeros(0, np.uint32), np.zeros(0, np.int32), np.zeros(0, np.int32)
    packed = np.frombuffer(blob, np.int32).reshape(-1, 2)
    return packed[:, 0].view(np.uint32), packed[:, 1] >> 8, packed[:, 1] & 255


def _neighbour_sums(keys: np.ndarray, n: np.ndarray, steps: list[int]) -> np.ndarray:
    """Each sorted unique key's count plus its neighbours' at key + step for every step."""
    near = n.copy()
    for d in steps:
        pos = np.searchsorted(keys, keys + d)
        hit = (pos < len(keys)) & (keys[np.minimum(pos, len(keys) - 1)] == keys + d)
        near[hit] += n[pos[hit]]
    return near


@dataclass
class TripletTable(fingerprint.FromBlobs):
    """Every stored triplet sorted by hash, for look-ups of a query's triplets."""

    hashes: np.ndarray  # uint32 [M], sorted
    rows: np.ndarray  # int32 [M]
    times: np.ndarray  # int32 [M], anchor frame
    freqs: np.ndarray  # int32 [M], anchor log bin
    n_rows: int

    @classmethod
    def from_arrow(cls, column, positions: np.ndarray, n_rows: int) -> "TripletTable":
        """From a binary Arrow column of packed triplets (as fingerprint.LandmarkTable.from_arrow)."""
        base = fingerprint.LandmarkTable.from_arrow(column, positions, n_rows)
        return cls(base.hashes, base.rows, base.times >> 8, base.times & 255, n_rows)

    def scores(self, hashes: np.ndarray, times: np.ndarray, freqs: np.ndarray) -> np.ndarray:
        """Match score of every row [n_rows] (fingerprint's scale)."""
        return self.match(hashes, times, freqs)[0]

    def match(self, hashes, times, freqs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(score, time scale stored/query, log-bin shift stored - query) of every row: the query triplets that
        agree on one line stored_frame = scale * query_frame + offset and one shift, counted once each."""
        score, scale, shift = np.zeros(self.n_rows), np.ones(self.n_rows), np.zeros(self.n_rows)
        lo = np.searchsorted(self.hashes, hashes, "left")
        counts = np.searchsorted(self.hashes, hashes, "right") - lo
        if not counts.sum():
            return score, scale, shift
        idx = np.repeat(lo - np.cumsum(np.r_[0, counts[:-1]]), counts) + np.arange(counts.sum())
        q = np.repeat(np.arange(len(hashes)), counts)
        rows = self.rows[idx].astype(np.int64)
        df = self.freqs[idx].astype(np.int64) - np.asarray(freqs, np.int64)[q]
        raw = np.bincount(rows, minlength=self.n_rows).astype(np.float64)
        keep = (np.abs(df) <= MAX_SHIFT) & (raw[rows] >= MIN_MATCHES)
        if not keep.any():
            return score, scale, shift
        idx, q, rows, df = idx[keep], q[keep], rows[keep], df[keep]
        tq = np.asarray(times, np.float64)[q]
        tq -= (tq.min() + tq.max()) / 2  # centred: a scale off by one grid step moves the ends the least
        tr = self.times[idx].astype(np.float64)
        # Coarse vote on (row, scale, offset bin, shift); neighbouring offset bins and shifts count together.
        scales = SCALE_STEP ** np.arange(-round(np.log(MAX_SCALE) / np.log(SCALE_STEP)),
                                         round(np.log(MAX_SCALE) / np.log(SCALE_STEP)) + 1)
        width = max(OFFSET_BIN, np.ceil((SCALE_STEP - 1) / 2 * np.abs(tq).max() * 1.5))
        bins = np.floor((tr[None, :] - scales[:, None] * tq[None, :]) / width).astype(np.int64)  # [scales, M]
        span_o = int(bins.max() - bins.min()) + 3
        span_s = 2 * MAX_SHIFT + 3
        g = np.broadcast_to(np.arange(len(scales))[:, None], bins.shape)
        cell = ((rows[None, :] * len(scales) + g) * span_o + (bins - bins.min() + 1)) * span_s + (df + MAX_SHIFT + 1)
        keys, n = np.unique(cell.ravel(), return_counts=True)
        near = _neighbour_sums(keys, n, [do * span_s + ds for do in (-1, 0, 1) for ds in (-1, 0, 1) if do or ds])
        best = np.zeros(self.n_rows, np.int64)
        key_rows = keys // (span_s * span_o * len(scales))
        top = np.lexsort((-near, key_rows))  # per row, its best cell first
        first = np.r_[True, key_rows[top][1:] != key_rows[top][:-1]]
        best_key = np.full(self.n_rows, -1, np.int64)
        best_key[key_rows[top][first]] = keys[top][first]
        best[key_rows[top][first]] = near[top][first]
        # Line fit through each row's best cell: the matches near it fix scale and offset, then count inliers.
        bk = best_key[rows]
        bg = (bk // (span_s * span_o)) % len(scales)
        bo = (bk // span_s) % span_o
        bs = bk % span_s
        mine = np.take_along_axis(bins - bins.min() + 1, bg[None, :], 0)[0]
        inside = (bk >= 0) & (np.abs(mine - bo) <= 1) & (np.abs(df + MAX_SHIFT + 1 - bs) <= 1)
        if not inside.any():
            return score, scale, shift
        r, x, y = rows[inside], tq[inside], tr[inside]
        w = np.bincount(r, minlength=self.n_rows).astype(np.float64)
        sx, sy = np.bincount(r, x, self.n_rows), np.bincount(r, y, self.n_rows)
        sxx, sxy = np.bincount(r, x * x, self.n_rows), np.bincount(r, x * y, self.n_rows)
        den = w * sxx - sx * sx
        coarse = scales[bg[inside]]
        slope = np.where(den > 1e-9, (w * sxy - sx * sy) / np.where(den > 1e-9, den, 1.0), 0.0)
        grid = np.ones(self.n_rows)
        grid[r] = np.where(den[r] > 1e-9, coarse, 1.0)  # all at one query frame: the scale is unknown, say 1
        slope = np.where((den > 1e-9) & (np.abs(np.log(np.maximum(slope, 1e-9))) <= np.log(MAX_SCALE)), slope, grid)
        icept = (sy - slope * sx) / np.maximum(w, 1.0)
        on = np.abs(y - (slope[r] * x + icept[r])) <= FIT_TOLERANCE
        pairs = np.unique(r[on] * (len(hashes) + 1) + q[inside][on])  # each query triplet counts once per row
        count = np.bincount(pairs // (len(hashes) + 1), minlength=self.n_rows).astype(np.float64)
        shift = np.where(best_key >= 0, best_key % span_s - MAX_SHIFT - 1, 0).astype(np.float64)
        scale = np.where(count > 0, slope, 1.0)
        share = np.minimum(1.0, count / np.maximum(SHARE * raw, 1.0)) if SHARE > 0 else 1.0
        return count * share, scale, shift
