"""Changes a query can go through, seeded: everyday ones (level, noise, codec, band limit, offset, crop), pitch,
tempo and speed changes, another recording mixed in, room reverb, and hard ones (white noise as loud as the clip,
a 2-s excerpt).

Every perturbation maps (mono float32 waveform, sample rate, rng) to a new waveform at the same
rate, so a robustness run can check that the original still comes back first; the mixes also take the other
recording (`background`). Levels are not clipped: the embedding pipeline works on floats, and clipping would
change more than the level. Pitch and tempo use torchaudio's phase vocoder, speed and pitch its resampler.
"""
from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from simsearch.audio.resample import resample
from simsearch.errors import SimsearchError

MP3_KBPS = 64
LOWPASS_RATE = 8000  # resample down to this and back: nothing above 4 kHz survives
VOCODER_S = 0.046  # phase-vocoder window (about 2048 samples at 44.1 kHz): long enough for the pitch of music
RT60_S = 0.6  # reverb time of the synthetic room: a living room or a small classroom
ROOMS = 8  # simulated rooms a copy draws from (each takes about a second to simulate, so they are made once)
ROOM_DISTANCE_M = (1.0, 3.0)  # source to microphone: a phone or a laptop across a room from the sound


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


def excerpt(x: np.ndarray, sr: int, seconds: float = 2.0) -> np.ndarray:
    """The middle `seconds` of the clip (all of a shorter one), as a snippet cut from a longer recording."""
    n = int(round(seconds * sr))
    start = max(0, (len(x) - n) // 2)
    return x[start:start + n].astype(np.float32)


def stretch(x: np.ndarray, sr: int, rate: float) -> np.ndarray:
    """Phase-vocoder time stretch (torchaudio TimeStretch): `rate` > 1 plays faster and shorter, pitch kept."""
    import torch
    import torchaudio.transforms as T

    n_fft = 2 ** round(math.log2(VOCODER_S * sr))
    hop = n_fft // 4
    window = torch.hann_window(n_fft)
    spec = torch.stft(torch.from_numpy(np.asarray(x, np.float32)), n_fft, hop, window=window, pad_mode="constant",
                      return_complex=True)  # zero padding: a clip shorter than half a window has nothing to reflect
    out = T.TimeStretch(hop_length=hop, n_freq=n_fft // 2 + 1, fixed_rate=rate)(spec)
    y = torch.istft(out, n_fft, hop, window=window, length=max(1, int(round(len(x) / rate))))
    return y.numpy().astype(np.float32)


def speed(x: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """Play `factor` times as fast, as tape or a turntable does: shorter, and the pitch follows."""
    return resample(np.asarray(x, np.float32), int(round(sr * factor)), sr).astype(np.float32)


def pitch_shift(x: np.ndarray, sr: int, semitones: float) -> np.ndarray:
    """Shift the pitch by `semitones`, length and tempo kept: stretch by the pitch ratio, then speed it back."""
    ratio = 2.0 ** (semitones / 12.0)
    return _fit_length(speed(stretch(x, sr, 1.0 / ratio), sr, ratio), len(x))


def mix_in(x: np.ndarray, other: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add another recording (at x's rate) under x at `snr_db` over the whole clip, looped from a seeded start."""
    other = np.asarray(other, np.float32)
    if not x.size or not other.size:
        return x.astype(np.float32)
    start = int(rng.integers(len(other)))
    y = np.tile(other, -(-(start + len(x)) // len(other)))[start:start + len(x)]
    level = rms(x) / 10.0 ** (snr_db / 20.0) / (rms(y) or 1.0)
    return (x + y * np.float32(level)).astype(np.float32)


def room_impulse(sr: int, rng: np.random.Generator, rt60: float = RT60_S) -> np.ndarray:
    """A synthetic room: noise under an exponential envelope that falls 60 dB in `rt60` seconds, unit energy."""
    t = np.arange(int(rt60 * sr)) / sr
    ir = rng.standard_normal(len(t)) * np.exp(-math.log(1000.0) * t / rt60)
    return (ir / np.sqrt(np.sum(ir**2))).astype(np.float32)


def convolve_same_level(x: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """The clip through an impulse response (scipy), cut to the dry clip's length and scaled to its RMS."""
    from scipy.signal import fftconvolve

    if not x.size:
        return x.astype(np.float32)
    y = fftconvolve(x.astype(np.float64), ir)[: len(x)]
    return (y * (rms(x) / (rms(y) or 1.0))).astype(np.float32)


def reverb(x: np.ndarray, sr: int, rng: np.random.Generator, rt60: float = RT60_S) -> np.ndarray:
    """Convolve with a synthetic diffuse room, same length and RMS as the dry clip."""
    return convolve_same_level(x, room_impulse(sr, rng, rt60))


@functools.lru_cache(maxsize=64)  # the harness's rooms at two rates, the room twin and the training rooms
def simulated_room(sr: int, k: int, rt60: float = RT60_S) -> np.ndarray:
    """Impulse response of shoebox room `k` (pyroomacoustics, image sources): walls absorbing for reverb time
    `rt60` (Sabine), a seeded size from 4x3x2.5 m to 8x6x3.2 m, a microphone 1-3 m from the source; direct sound
    first, then early reflections and the tail, unit energy."""
    import pyroomacoustics as pra

    rng = np.random.default_rng(k)
    dims = rng.uniform([4.0, 3.0, 2.5], [8.0, 6.0, 3.2])
    absorption, max_order = pra.inverse_sabine(rt60, dims)
    room = pra.ShoeBox(dims, fs=sr, materials=pra.Material(absorption), max_order=max_order)
    source = rng.uniform(0.5, dims - 0.5)
    while True:  # a microphone in the room, at a distance in ROOM_DISTANCE_M from the source
        direction = rng.standard_normal(3)
        mic = source + direction / np.linalg.norm(direction) * rng.uniform(*ROOM_DISTANCE_M)
        if np.all(mic > 0.3) and np.all(mic < dims - 0.3):
            break
    room.add_source(source)
    room.add_microphone(mic)
    room.compute_rir()
    ir = np.asarray(room.rir[0][0], np.float64)
    ir = ir[max(int(np.argmax(np.abs(ir))) - 64, 0):]  # start 64 samples (the delay filter's lead) before the direct
    # sound: the distance adds no delay to a copy
    return (ir / np.sqrt(np.sum(ir**2))).astype(np.float32)


def room_recording(x: np.ndarray, sr: int, rng: np.random.Generator | None, rt60: float = RT60_S,
                   room: int | None = None) -> np.ndarray:
    """Play the clip in simulated room `room` (None: one of ROOMS drawn with rng) and record it (direct sound,
    reflections, tail), same length and RMS as the dry clip."""
    if not x.size:
        return x.astype(np.float32)
    k = int(rng.integers(ROOMS)) if room is None else room
    return convolve_same_level(x, simulated_room(sr, k, rt60))


@dataclass(frozen=True)
class Perturbation:
    """A named change: apply(x, sr, rng) -> waveform at the same rate; with a `background` kind ("speech",
    "music"), apply(x, sr, rng, other) mixes in `other`, a recording of that kind at rate sr."""

    name: str
    apply: Callable[..., np.ndarray]
    summary: str
    group: str = "everyday"
    background: str | None = None


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
    *[Perturbation(f"pitch{n:+d}", lambda x, sr, rng, n=n: pitch_shift(x, sr, n),
                   f"pitch {n:+d} semitone{'s' * (abs(n) > 1)}, tempo kept", "pitch-tempo") for n in (1, -1, 2, -2)],
    *[Perturbation(f"tempo{p:+d}", lambda x, sr, rng, p=p: stretch(x, sr, 1 + p / 100),
                   f"tempo {p:+d} %, pitch kept", "pitch-tempo") for p in (5, -5, 10, -10)],
    *[Perturbation(f"speed{p:+d}", lambda x, sr, rng, p=p: speed(x, sr, 1 + p / 100),
                   f"speed {p:+d} % (tape: the pitch follows)", "pitch-tempo") for p in (5, -5)],
    *[Perturbation(f"{kind}{snr}", lambda x, sr, rng, other, snr=snr: mix_in(x, other, snr, rng),
                   f"another {kind} recording mixed in, {snr} dB SNR", "mix", kind)
      for kind in ("speech", "music") for snr in (5, 0)],
    Perturbation("reverb0.6", lambda x, sr, rng: reverb(x, sr, rng), "diffuse tail only, RT60 0.6 s, no direct "
                 "sound", "room"),
    # New changes go last: a copy's seed comes from its change's place in this list (robustness.clip_seed).
    Perturbation("room0.6", lambda x, sr, rng: room_recording(x, sr, rng), "simulated room, RT60 0.6 s, "
                 "microphone 1-3 m away", "room"),
    Perturbation("white0", lambda x, sr, rng: add_noise(x, 0.0, rng, "white"), "white noise, 0 dB SNR", "hard"),
    Perturbation("excerpt2", lambda x, sr, rng: excerpt(x, sr, 2.0), "2 s from the middle", "hard"),
]}
GROUPS = {g: [n for n, p in PERTURBATIONS.items() if p.group == g]
          for g in ("everyday", "pitch-tempo", "mix", "room", "hard")}


def perturb(name: str, x: np.ndarray, sr: int, seed: int = 0, other: np.ndarray | None = None) -> np.ndarray:
    """Apply the named perturbation with its own seeded RNG, so each clip's copy reproduces alone; a mix needs
    `other` (a recording of its background kind at rate sr)."""
    if name not in PERTURBATIONS:
        raise SimsearchError(f"unknown perturbation {name!r}; known: {', '.join(PERTURBATIONS)}")
    p = PERTURBATIONS[name]
    if p.background and other is None:
        raise SimsearchError(f"{name} mixes in another {p.background} recording; none was given")
    args = (np.asarray(other, np.float32),) if p.background else ()
    return p.apply(np.asarray(x, np.float32), int(sr), np.random.default_rng(seed), *args)

