"""Decode, mix to mono, resample and validate audio files and buffers: every path into an encoder goes through here."""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import soundfile as sf

from simsearch.audio.resample import resample
from simsearch.audio.windows import Window, window_starts
from simsearch.errors import AudioError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".opus")
MIN_DURATION_S = 0.01  # shorter than this holds no usable sound (a 20 ms click still counts)
SILENCE_PEAK = 1e-6




def to_mono(data: np.ndarray) -> np.ndarray:
    """Average channels; soundfile gives [frames, channels]."""
    return data.mean(axis=1) if data.ndim == 2 else data


def check_samples(x: np.ndarray, where: str) -> None:
    """Reject NaN/inf samples: they poison every embedding they touch."""
    if not np.isfinite(x).all():
        raise AudioError(where, "contains NaN or infinite samples")


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


def duration_s(path: str | Path) -> float:
    """Length in seconds from the header, without decoding."""
    info = sf.info(str(path))
    return info.frames / info.samplerate if info.samplerate else math.nan

