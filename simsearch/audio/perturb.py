"""Everyday changes a query can go through (level, noise, codec, band limit, offset, crop), seeded.

Every perturbation maps (mono float32 waveform, sample rate, rng) to a new waveform at the same
rate, so a robustness run can check that the original still comes back first. Levels are not
clipped: the embedding pipeline works on floats, and clipping would change more than the level.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable

import numpy as np

from simsearch.audio.resample import resample
from simsearch.errors import SimsearchError

MP3_KBPS = 64
LOWPASS_RATE = 8000  # resample down to this and back: nothing above 4 kHz survives


def rms(x: np.ndarray) -> float:
    """Root mean square of a waveform (0 for an empty one)."""
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def gain(x: np.ndarray, db: float) -> np.ndarray:
    """Scale by `db` decibels (RMS changes by exactly that)."""
    return (x * np.float32(10.0 ** (db / 20.0))).astype(np.float32)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise with a 1/f power spectrum (shaped white noise in the frequency domain)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    y = np.fft.irfft(spec / np.sqrt(f), n)
    return (y / (rms(y) or 1.0)).astype(np.float32)


def add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator, colour: str = "white") -> np.ndarray:
    """Add white or pink noise so that signal power / noise power over the whole clip is `snr_db`."""
    if colour == "white":
        noise = rng.standard_normal(len(x)).astype(np.float32)
        noise /= rms(noise) or 1.0
    elif colour == "pink":
        noise = pink_noise(len(x), rng)
    else:
        raise SimsearchError(f"unknown noise colour {colour!r}; choose white or pink")
    level = rms(x) / 10.0 ** (snr_db / 20.0)
    return (x + noise * np.float32(level)).astype(np.float32)


def lowpass_resample(x: np.ndarray, sr: int, rate: int = LOWPASS_RATE) -> np.ndarray:
    """Band-limit as a phone line does: resample to `rate` and back (nothing left above rate/2)."""
    if sr <= rate:
        return x.astype(np.float32)
    y = resample(resample(x, sr, rate), rate, sr)
    return _fit_length(y, len(x))


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    return (y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))).astype(np.float32)


def mp3_compression_level(kbps: int, sr: int) -> float:
    """libsndfile's compression level that gives `kbps` constant bit rate at this sample rate.

    libsndfile maps level c in [0, 1] linearly onto the MPEG layer's bit-rate range
    (MPEG-1 >= 32 kHz: 320..32, MPEG-2 >= 16 kHz: 160..8, MPEG-2.5: 64..8 kbit/s) and truncates;
    half a kbit/s of headroom keeps the truncation on `kbps`.
    """
    top, bottom = (320.0, 32.0) if sr >= 32000 else (160.0, 8.0) if sr >= 16000 else (64.0, 8.0)
    kbps = min(max(float(kbps), bottom), top)
    return float(min(1.0, max(0.0, (top - kbps - 0.5) / (top - bottom)) if kbps < top else 0.0))


def mp3_roundtrip(x: np.ndarray, sr: int, kbps: int = MP3_KBPS) -> np.ndarray:
    """Encode to MP3 at `kbps` constant bit rate with soundfile (libsndfile + LAME), decode, align length."""
    import soundfile as sf

    if "MP3" not in sf.available_formats():
        raise SimsearchError("this libsndfile cannot write MP3 (needs libsndfile >= 1.1 with LAME / mpg123)")
    buf = io.BytesIO()
    peak = float(np.abs(x).max()) if x.size else 0.0
    scale = 0.99 / peak if peak > 0.99 else 1.0  # the codec clips at full scale; undo the scaling after
    try:
        sf.write(buf, x * scale, sr, format="MP3", subtype="MPEG_LAYER_III",
                 compression_level=mp3_compression_level(kbps, sr), bitrate_mode="CONSTANT")
    except TypeError:
        raise SimsearchError("setting the MP3 bit rate needs soundfile >= 0.13: pip install -U soundfile") from None
    buf.seek(0)
    y, rate = sf.read(buf, dtype="float32", always_2d=True)
    y = y.mean(axis=1) / scale
    if rate != sr:
        y = resample(y, rate, sr)
    return _fit_length(_align(y, x), len(x))


def _align(y: np.ndarray, x: np.ndarray, max_lag: int = 4096) -> np.ndarray:
    """Drop the codec's leading delay (encoder/decoder padding) found by cross-correlation."""
    n = min(len(x), len(y), 1 << 15)
    if n < 64:
        return y
    a, b = x[:n].astype(np.float64), y[: n + max_lag].astype(np.float64)
    size = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    corr = np.fft.irfft(np.fft.rfft(b, size) * np.conj(np.fft.rfft(a, size)), size)[: max_lag + 1]
    lag = int(np.argmax(corr))
    return y[lag:]


def delay(x: np.ndarray, sr: int, seconds: float = 0.5) -> np.ndarray:
    """Prepend `seconds` of silence, as a recording that starts late."""
    return np.concatenate([np.zeros(int(round(seconds * sr)), np.float32), x.astype(np.float32)])


def crop(x: np.ndarray, fraction: float = 0.6) -> np.ndarray:
    """Keep only the first `fraction` of the clip."""
    return x[: max(1, int(round(len(x) * fraction)))].astype(np.float32)


@dataclass(frozen=True)
class Perturbation:
    """A named change: apply(x, sr, rng) -> waveform at the same rate."""

    name: str
    apply: Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
    summary: str


PERTURBATIONS: dict[str, Perturbation] = {p.name: p for p in [
    Perturbation("gain-12", lambda x, sr, rng: gain(x, -12.0), "12 dB quieter"),
    Perturbation("gain+6", lambda x, sr, rng: gain(x, 6.0), "6 dB louder (not clipped)"),
    Perturbation("white20", lambda x, sr, rng: add_noise(x, 20.0, rng, "white"), "white noise, 20 dB SNR"),
    Perturbation("white10", lambda x, sr, rng: add_noise(x, 10.0, rng, "white"), "white noise, 10 dB SNR"),
    Perturbation("pink20", lambda x, sr, rng: add_noise(x, 20.0, rng, "pink"), "pink noise, 20 dB SNR"),
    Perturbation("pink10", lambda x, sr, rng: add_noise(x, 10.0, rng, "pink"), "pink noise, 10 dB SNR"),
    Perturbation("lowpass4k", lambda x, sr, rng: lowpass_resample(x, sr), "resampled to 8 kHz and back"),
    Perturbation("mp3-64k", lambda x, sr, rng: mp3_roundtrip(x, sr), "MP3 at 64 kbit/s CBR and back"),
    Perturbation("delay0.5", lambda x, sr, rng: delay(x, sr, 0.5), "0.5 s of silence prepended"),
    Perturbation("crop60", lambda x, sr, rng: crop(x, 0.6), "first 60 % only"),
]}


def perturb(name: str, x: np.ndarray, sr: int, seed: int = 0) -> np.ndarray:
    """Apply the named perturbation with its own seeded RNG, so each clip's copy reproduces alone."""
    if name not in PERTURBATIONS:
        raise SimsearchError(f"unknown perturbation {name!r}; known: {', '.join(PERTURBATIONS)}")
    return PERTURBATIONS[name].apply(np.asarray(x, np.float32), int(sr), np.random.default_rng(seed))

