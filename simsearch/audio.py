"""Decode, mix to mono, resample, validate and window audio: every path into an encoder goes through here."""
from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import soundfile as sf

from .errors import AudioError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".opus")
MIN_DURATION_S = 0.01  # shorter than this holds no usable sound (a 20 ms click still counts)
SILENCE_PEAK = 1e-6


@dataclass
class Window:
    """One piece of a recording, already mono and at the encoder's rate."""

    offset_s: float
    duration_s: float
    samples: np.ndarray
    source_rate: int = 0  # the file's own sample rate, kept as metadata
    landmarks: bytes | None = None  # packed fingerprint landmarks (simsearch.fingerprint), when the index keeps them


def resample(x: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Band-limited resampling with torchaudio (sinc interpolation)."""
    if orig_sr == new_sr or x.size == 0:
        return np.ascontiguousarray(x, dtype=np.float32)
    import torch
    import torchaudio.functional as AF

    y = AF.resample(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), int(orig_sr), int(new_sr))
    return y.numpy()


def to_mono(data: np.ndarray) -> np.ndarray:
    """Average channels; soundfile gives [frames, channels]."""
    return data.mean(axis=1) if data.ndim == 2 else data


def check_samples(x: np.ndarray, where: str) -> None:
    """Reject NaN/inf samples: they poison every embedding they touch."""
    if not np.isfinite(x).all():
        raise AudioError(where, "contains NaN or infinite samples")


def window_starts(n_frames: int, sr: int, window_s: float, hop_s: float) -> list[tuple[int, int]]:
    """(start, length) in frames; a trailing piece shorter than 1 s is dropped unless it is the only one."""
    win = max(1, int(round(window_s * sr)))
    hop = max(1, int(round(hop_s * sr)))
    if n_frames <= win:
        return [(0, n_frames)]
    out = []
    for start in range(0, n_frames, hop):
        length = min(win, n_frames - start)
        if start > 0 and length < min(sr, win):
            break
        out.append((start, length))
        if start + length >= n_frames:
            break
    return out


def _open(path: str | Path) -> sf.SoundFile:
    p = Path(path)
    if p.is_dir():
        raise AudioError(str(path), "is a directory, not an audio file")
    if not p.exists():
        raise AudioError(str(path), "file does not exist (or is a broken link)")
    if p.stat().st_size == 0:
        raise AudioError(str(path), "file is empty (0 bytes)")
    try:
        return sf.SoundFile(str(p))
    except PermissionError as e:
        raise AudioError(str(path), f"permission denied ({e.strerror})") from None
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(str(path), f"not a readable audio file ({e})") from None


def iter_windows(path: str | Path, sample_rate: int, window_s: float = 10.0, hop_s: float | None = None,
                 max_duration_s: float | None = None) -> Iterator[Window]:
    """Stream a file window by window, so a one-hour recording never sits in memory whole."""
    hop_s = window_s if hop_s is None else hop_s
    with _open(path) as f:
        sr, n = f.samplerate, f.frames
        if n <= 0:
            raise AudioError(str(path), "holds no audio frames")
        if n / sr < MIN_DURATION_S:
            raise AudioError(str(path), f"too short ({n / sr * 1000:.1f} ms; need >= {MIN_DURATION_S * 1000:.0f} ms)")
        if max_duration_s is not None and n / sr > max_duration_s:
            raise AudioError(str(path), f"too long ({n / sr:.0f} s; limit {max_duration_s:.0f} s)")
        peak = 0.0
        for start, length in window_starts(n, sr, window_s, hop_s):
            try:
                f.seek(start)
                data = f.read(length, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as e:
                raise AudioError(str(path), f"decoding failed at {start / sr:.2f} s ({e})") from None
            if len(data) == 0:
                raise AudioError(str(path), f"truncated: no data at {start / sr:.2f} s")
            mono = to_mono(data)
            check_samples(mono, str(path))
            peak = max(peak, float(np.abs(mono).max()))
            yield Window(start / sr, len(mono) / sr, resample(mono, sr, sample_rate), sr)
        if peak < SILENCE_PEAK:
            raise AudioError(str(path), "is silent (all samples are zero)")


def decode(source: Any, sample_rate: int) -> np.ndarray:
    """Whole clip as mono float32 at sample_rate, from a path, bytes, an array or {"array","sampling_rate"}."""
    if isinstance(source, dict):
        if "array" not in source or "sampling_rate" not in source:
            raise AudioError("<dict>", 'expected keys "array" and "sampling_rate"')
        arr = np.asarray(source["array"], dtype=np.float32)
        x = resample(to_mono(arr.T) if arr.ndim == 2 else arr, int(source["sampling_rate"]), sample_rate)
        where = "<array>"
    elif isinstance(source, np.ndarray):
        x, where = np.asarray(source, dtype=np.float32), "<array>"
    elif isinstance(source, (bytes, bytearray)):
        where = "<bytes>"
        if not source:
            raise AudioError(where, "no bytes given")
        try:
            data, sr = sf.read(io.BytesIO(source), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise AudioError(where, f"not a readable audio file ({e})") from None
        x = resample(to_mono(data), sr, sample_rate)
    else:
        where = str(source)
        parts = [w.samples for w in iter_windows(source, sample_rate, window_s=600.0)]
        x = np.concatenate(parts)
    if x.ndim != 1:
        raise AudioError(where, f"expected a 1-D waveform, got shape {x.shape}")
    if x.size < MIN_DURATION_S * sample_rate:
        raise AudioError(where, "too short or empty")
    check_samples(x, where)
    if np.abs(x).max() < SILENCE_PEAK:
        raise AudioError(where, "is silent (all samples are zero)")
    return x


def split_windows(x: np.ndarray, sample_rate: int, window_s: float, hop_s: float | None = None) -> list[Window]:
    """Cut an in-memory waveform the same way iter_windows cuts a file."""
    hop_s = window_s if hop_s is None else hop_s
    return [Window(s / sample_rate, n / sample_rate, x[s:s + n], sample_rate)
            for s, n in window_starts(len(x), sample_rate, window_s, hop_s)]


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Content hash that tells a changed file from an unchanged one on resume."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def duration_s(path: str | Path) -> float:
    """Length in seconds from the header, without decoding."""
    info = sf.info(str(path))
    return info.frames / info.samplerate if info.samplerate else math.nan


LOUDNESS_BLOCK_S = 0.1  # blocks of 100 ms, hop 50 ms
LOUDNESS_ABS_GATE_DB = -70.0  # blocks quieter than this are silence
LOUDNESS_REL_GATE_DB = -20.0  # ... and so are blocks this far below the level of the non-silent ones


def gated_level_db(x: np.ndarray, sample_rate: int) -> float | None:
    """Gated RMS level in dBFS (BS.1770-style two-stage gate, no K-weighting); None for silence.

    Mean power of 100 ms blocks (hop 50 ms) that are above -70 dBFS and within 20 dB of the mean
    of those, so silent lead-ins, tails and gaps do not pull a clip's level down.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    block = max(1, int(LOUDNESS_BLOCK_S * sample_rate))
    if len(x) <= block:
        power = np.array([np.mean(x * x)]) if x.size else np.zeros(0)
    else:
        hop = block // 2
        c = np.concatenate([[0.0], np.cumsum(x * x)])
        starts = np.arange(0, len(x) - block + 1, hop)
        power = (c[starts + block] - c[starts]) / block
    power = power[power > 10.0 ** (LOUDNESS_ABS_GATE_DB / 10.0)]
    if power.size == 0:
        return None
    power = power[power >= power.mean() * 10.0 ** (LOUDNESS_REL_GATE_DB / 10.0)]
    return float(10.0 * np.log10(power.mean()))


def band_limit(x: np.ndarray, sample_rate: int, max_hz: float) -> np.ndarray:
    """Remove content above max_hz by resampling to 2 * max_hz and back (same length)."""
    rate = int(round(2 * max_hz))
    if rate >= sample_rate or x.size == 0:
        return np.asarray(x, dtype=np.float32)
    y = resample(resample(x, sample_rate, rate), rate, sample_rate)
    return (y[: len(x)] if len(y) >= len(x) else np.pad(y, (0, len(x) - len(y)))).astype(np.float32)


TRIM_BLOCK_S = 0.01


def trim_silence(x: np.ndarray, sample_rate: int, below_db: float) -> np.ndarray:
    """Cut the lead-in and tail whose 10 ms blocks are more than `below_db` dB under the clip's gated level,
    so a recording that starts late (or stops late) yields the same frames as the original."""
    level = gated_level_db(x, sample_rate)
    block = max(1, int(TRIM_BLOCK_S * sample_rate))
    n = len(x) // block
    if level is None or n < 2:
        return np.asarray(x, dtype=np.float32)
    power = np.mean(np.square(np.asarray(x[: n * block], dtype=np.float64)).reshape(n, block), axis=1)
    loud = np.flatnonzero(power > 10.0 ** ((level - abs(below_db)) / 10.0))
    if loud.size == 0:
        return np.asarray(x, dtype=np.float32)
    end = len(x) if loud[-1] == n - 1 else (loud[-1] + 1) * block
    return np.asarray(x[loud[0] * block:end], dtype=np.float32)


def normalize_loudness(x: np.ndarray, sample_rate: int, target_db: float) -> np.ndarray:
    """Scale a clip so its gated level is target_db dBFS (silence is returned as is)."""
    level = gated_level_db(x, sample_rate)
    if level is None:
        return np.asarray(x, dtype=np.float32)
    return (np.asarray(x, dtype=np.float32) * np.float32(10.0 ** ((target_db - level) / 20.0))).astype(np.float32)
