"""Random changed copies of a clip for training a copy detector (simsearch.encoders.copynet): the changes a copy
goes through in the world, drawn at random strengths from the same building blocks as the robustness harness
(simsearch.audio.perturb), but never its exact settings: pitch shifts are drawn from a continuous range, tempo and
speed likewise, and the rooms are other simulated rooms than the ones the harness plays its copies in.
"""
from __future__ import annotations

import numpy as np

from simsearch.audio import perturb

TRAINING_ROOMS = 16  # simulated rooms a training copy draws from (about a second each to simulate, made once)
FIRST_ROOM = 2000  # their seeds: far from the harness's rooms (0..perturb.ROOMS-1) and the room twin's
ROOM_RT60 = (0.3, 0.5, 0.7, 0.9)  # reverb times, in turn over the rooms
PITCH_SEMITONES = 2.5  # pitch drawn uniformly from +-this, tempo kept
TEMPO = (0.87, 1.15)  # tempo factor range, pitch kept
SPEED = (0.93, 1.07)  # tape-style speed factor range
SNR_DB = (-3.0, 15.0)  # noise level range (white or pink)
MIX_SNR_DB = (-3.0, 10.0)  # another recording mixed in under the clip


def training_rooms(sr: int) -> list[np.ndarray]:
    """Impulse responses of the training rooms at rate sr."""
    return [perturb.simulated_room(sr, FIRST_ROOM + k, ROOM_RT60[k % len(ROOM_RT60)]) for k in range(TRAINING_ROOMS)]


def changed_copy(x: np.ndarray, sr: int, rng: np.random.Generator, rooms: list[np.ndarray],
                 other: np.ndarray | None = None) -> np.ndarray:
    """One random copy of x at rate sr: maybe a pitch, tempo or speed change, maybe a room, then noise or `other`
    (another recording at rate sr) mixed in, maybe band-limited to 4 kHz; the result has x's length."""
    n = len(x)
    y = np.asarray(x, np.float32)
    r = rng.random()
    if r < 0.35:
        y = perturb.pitch_shift(y, sr, float(rng.uniform(-PITCH_SEMITONES, PITCH_SEMITONES)))
    elif r < 0.55:
        y = perturb.stretch(y, sr, float(rng.uniform(*TEMPO)))
    elif r < 0.65:
        y = perturb.speed(y, sr, float(rng.uniform(*SPEED)))
    if rooms and rng.random() < 0.5:
        y = perturb.convolve_same_level(y, rooms[int(rng.integers(len(rooms)))])
    r = rng.random()
    if r < 0.35 and other is not None and other.size:
        y = perturb.mix_in(y, other, float(rng.uniform(*MIX_SNR_DB)), rng)
    elif r < 0.75:
        y = perturb.add_noise(y, float(rng.uniform(*SNR_DB)), rng, "white" if rng.random() < 0.5 else "pink")
    if rng.random() < 0.2:
        y = perturb.lowpass_resample(y, sr)
    out = np.zeros(n, np.float32)
    out[: min(n, len(y))] = y[:n]
    return out
