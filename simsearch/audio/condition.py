"""Input conditioning every clip goes through before an encoder (loudness, trim, band limit) and its defaults."""
from __future__ import annotations

import numpy as np

from simsearch.audio.resample import resample

# The measured conditioning (docs/benchmarks.md), chosen by the robustness table for the offline encoders:
# every clip is scaled to a gated level of -40 dBFS (a quieter or louder copy embeds the same; -40 rather than -20
# keeps quiet room noise under YAMNet's log floor) and lead-in / tail more than 40 dB under that level is cut (a
# copy that starts late embeds the same). Which encoders get it by default is declared per encoder
# (simsearch.encoders.SPECS, default_conditioning); `--loudness off --trim off` turns it off, numbers override it.
DEFAULT_LOUDNESS_DB: float | None = -40.0
DEFAULT_TRIM_DB: float | None = 40.0
DEFAULT_BANDWIDTH_HZ: float | None = None
# A pink-noise twin (`--noise-twin 15`) makes search much more robust to noise but doubles the encoder's work and
# lowered Sonic Pi kNN-10 a little (docs/benchmarks.md), so it is offered, not the default.
DEFAULT_NOISE_TWIN_DB: float | None = None
# A room twin (`--room-twin 0.5`): the same trade for reverb (a copy recorded across a room).
DEFAULT_ROOM_TWIN_S: float | None = None
# option -> its measured value (see Encoder.condition); the keys are every conditioning option there is
CONDITIONING = {"loudness": DEFAULT_LOUDNESS_DB, "trim": DEFAULT_TRIM_DB, "bandwidth": DEFAULT_BANDWIDTH_HZ,
                "noise_twin": DEFAULT_NOISE_TWIN_DB, "room_twin": DEFAULT_ROOM_TWIN_S}
# The model's reference input: the clip as decoded, nothing changed (what a pretrained model's own code feeds it).
REFERENCE_INPUT: dict[str, float | None] = dict.fromkeys(CONDITIONING)

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

