"""Music-aware clip vector: basic-pitch (Spotify, ICASSP 2022) transcription plus note and onset shape.

The `basic-pitch` pip package (Apache-2.0) ships its network as basic_pitch/saved_models/icassp_2022/nmp.onnx
(230 kB); only that file is read (the package's own code needs TensorFlow), and it runs in onnxruntime with every
window of a batch of clips in one call. Input as the package's inference: mono 22050 Hz, windows of 43844 samples
(2 s less one hop) with 30 frames (7680 samples) of overlap, half an overlap of zeros in front; each window gives
172 frames at 86 fps of note [88], onset [88] (piano keys A0..C8) and contour [264] (a third of a semitone per
bin) posteriors; 15 frames are dropped at each side and the rest concatenated, cut to the clip's length.

The clip vector joins three groups, each centred, L2-normalised and scaled by the square root of its weight
share (cosine = weighted mean of the groups' cosines); chosen by measurement on rendered notes, chords and drum
one-shots (scripts/music_eval.py):

* chroma (12): pitch classes of the transcribed notes, gated by polyphony: full weight with three or more
  pitch classes sounding, none for a single note or a drum hit, so chords group by chord while single notes of
  one pitch but different instruments are not pulled together (ungated, it cut kNN on instrument notes by half);
* harmonics (16 x 4): level of harmonics 1-16 of the main transcribed pitch in four spans after the onset (dB
  under the loudest): the instrument's tone colour independent of which note it plays; left out (zeros) unless
  one key sounds for 0.23 s or more (all rendered instrument notes, 4 % of the drum hits): on drum hits it only
  added noise;
* envelope (30 x 7): level in 30 log-spaced bands (30 Hz - 11 kHz) over seven log-spaced spans after the onset
  (dB under the peak): attack, decay and where the energy sits, which tells drum hits and plucked, struck,
  bowed and blown notes apart.

OnsetEnvelopeEncoder ("onset-envelope") is the envelope group alone, with no network: beside aisfx and spectral
it is the measured best for drum one-shots, where the tonal groups only add noise.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from simsearch.encoders.base import Encoder, FrameOutput
from simsearch.errors import ModelNotFoundError

SAMPLE_RATE = 22050
FFT_HOP = 256
FPS = SAMPLE_RATE // FFT_HOP  # 86 frames per second, as the package computes it
WINDOW = SAMPLE_RATE * 2 - FFT_HOP  # 43844 samples per model input
FRAMES_PER_WINDOW = 172
OVERLAP_FRAMES = 30
OVERLAP = OVERLAP_FRAMES * FFT_HOP  # 7680
HOP = WINDOW - OVERLAP  # 36164
N_KEYS, N_CONTOUR = 88, 264
LOWEST_MIDI = 21  # A0, the first note bin
INPUT = "serving_default_input_2:0"
OUTPUTS = ["StatefulPartitionedCall:1", "StatefulPartitionedCall:2", "StatefulPartitionedCall:0"]  # note, onset, contour
INSTALL_HINT = "pip install --no-deps basic-pitch==0.4.0"

ACTIVE = 0.5  # a key whose note posterior reaches this somewhere in the clip is sounding
SUSTAINED = 20  # frames (0.23 s) one key must sound for the clip to have harmonics worth measuring
N_HARMONICS = 16
HARMONIC_FFT = 4096  # 5.4 Hz bins: resolves the harmonics of E1 (41 Hz)
HARMONIC_SPANS = ((0, 4), (4, 16), (16, 64), (64, 140))  # STFT frames (11.6 ms) after the onset: to 46 ms ... 1.6 s
N_BANDS, BAND_LOW, BAND_HIGH = 30, 30.0, 11000.0
ENVELOPE_FFT = 2048
ENVELOPE_SPANS = (0, 2, 4, 8, 16, 32, 64, 128)  # STFT frames after the onset: 0-23 ms ... 0.74-1.5 s
FLOOR_DB = 80.0  # levels are clipped this far under the clip's loudest
GROUP_SIZES = {"chroma": 12, "harmonics": N_HARMONICS * len(HARMONIC_SPANS),
               "envelope": N_BANDS * (len(ENVELOPE_SPANS) - 1)}
DEFAULT_GROUPS = {"chroma": 1.0, "harmonics": 1.0, "envelope": 1.0}


def model_path(checkpoint: str | None = None) -> Path:
    """The packaged nmp.onnx (or a file given as checkpoint); a clear error with the pip command when absent."""
    if checkpoint:
        path = Path(checkpoint)
    else:
        spec = importlib.util.find_spec("basic_pitch")  # locate only: importing it looks for TensorFlow
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFoundError("basic-pitch needs the model from the 'basic-pitch' package "
                                     f"(basic_pitch/saved_models/icassp_2022/nmp.onnx), which is not installed; "
                                     f"install it with: {INSTALL_HINT}")
        path = Path(list(spec.submodule_search_locations)[0]) / "saved_models" / "icassp_2022" / "nmp.onnx"
    if not path.is_file():
        raise ModelNotFoundError(f"basic-pitch model not found at {path}; install it with: {INSTALL_HINT}")
    return path


def windows(x: np.ndarray) -> np.ndarray:
    """[n, WINDOW] model inputs of one 22050 Hz clip, laid out as basic_pitch.inference.get_audio_input does."""
    padded = np.concatenate([np.zeros(OVERLAP // 2, np.float32), np.asarray(x, np.float32).reshape(-1)])
    n = max(1, -(-len(padded) // HOP))
    out = np.zeros((n, WINDOW), np.float32)
    for i in range(n):
        chunk = padded[i * HOP: i * HOP + WINDOW]
        out[i, : len(chunk)] = chunk
    return out


def unwrap(out: np.ndarray, n_samples: int) -> np.ndarray:
    """Window outputs [n, 172, D] -> [frames, D] for a clip of n_samples (basic_pitch.inference.unwrap_output)."""
    half = OVERLAP_FRAMES // 2
    frames = out[:, half:-half, :].reshape(-1, out.shape[-1])
    return frames[: max(1, int(np.floor(n_samples * FPS / SAMPLE_RATE)))]


def fold(profile: np.ndarray, bins_per_semitone: int = 1) -> np.ndarray:
    """Per-key values [.., 88 * b] -> pitch classes [.., 12 * b] (C first)."""
    per_octave = 12 * bins_per_semitone
    first = (LOWEST_MIDI % 12) * bins_per_semitone  # A0 is pitch class 9
    out = np.zeros(profile.shape[:-1] + (per_octave,), np.float32)
    for k in range(profile.shape[-1]):
        out[..., (first + k) % per_octave] += profile[..., k]
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / max(float(np.linalg.norm(v)), 1e-9)).astype(np.float32)


def _power_spectrogram(x: np.ndarray, n_fft: int) -> np.ndarray:
    """|STFT|^2 [bins, frames] with hop FFT_HOP (torch; the clip zero-padded to at least one frame)."""
    import torch

    x = np.pad(np.asarray(x, np.float32), (0, max(0, n_fft + 1 - len(x))))
    spec = torch.stft(torch.from_numpy(x), n_fft, FFT_HOP, window=torch.hann_window(n_fft), return_complex=True)
    return (spec.abs() ** 2).numpy()


def _onset_frame(power: np.ndarray) -> int:
    """First STFT frame within 20 dB of the loudest: where the sound starts, whatever lead-in it has."""
    level = 10 * np.log10(power.sum(axis=0) + 1e-10)
    return int(np.argmax(level > level.max() - 20.0))


def chroma(note: np.ndarray) -> np.ndarray:
    """Pitch-class profile of the transcription, scaled 0 (one pitch class or none) to 1 (three or more)."""
    profile = fold((note.astype(np.float32) ** 2).mean(axis=0))  # squared: confident notes over the noise floor
    profile = profile / max(float(profile.sum()), 1e-9) - 1.0 / 12
    sounding = np.flatnonzero(note.max(axis=0) >= ACTIVE)
    classes = len({int(k + LOWEST_MIDI) % 12 for k in sounding})
    return float(np.clip((classes - 1) / 2, 0.0, 1.0)) * _unit(profile)


def main_pitch_hz(note: np.ndarray, contour: np.ndarray) -> float:
    """Frequency of the most salient transcribed key, refined to a third of a semitone by the contour."""
    key = int(np.argmax((note.astype(np.float32) ** 2).mean(axis=0)))
    c = contour.astype(np.float32).mean(axis=0)
    lo = max(0, 3 * key - 2)
    bin_ = lo + int(np.argmax(c[lo: 3 * key + 3]))
    return 27.5 * 2 ** (bin_ / 36)


def harmonics(x: np.ndarray, f0: float) -> np.ndarray:
    """Peak level of harmonics 1..16 of f0 (within 3 %) in HARMONIC_SPANS after the onset, dB under the loudest."""
    power = _power_spectrogram(x, HARMONIC_FFT)
    start = _onset_frame(power)
    mag = np.sqrt(power[:, start:])
    freqs = np.arange(mag.shape[0]) * SAMPLE_RATE / HARMONIC_FFT
    out = np.full((N_HARMONICS, len(HARMONIC_SPANS)), 1e-8, np.float32)
    for h in range(1, N_HARMONICS + 1):
        f = h * f0
        if f > BAND_HIGH:
            break
        near = (freqs > f * 0.97) & (freqs < f * 1.03)
        if not near.any():
            near[np.argmin(np.abs(freqs - f))] = True
        for j, (a, b) in enumerate(HARMONIC_SPANS):
            seg = mag[near, a:b]
            if seg.size:
                out[h - 1, j] = seg.max(axis=0).mean()
    db = 20 * np.log10(out + 1e-8)
    return np.maximum(db - db.max(), -FLOOR_DB).reshape(-1)


def _band_matrix() -> np.ndarray:
    """[N_BANDS, bins] averaging weights of log-spaced bands; a band narrower than a bin takes its nearest bin."""
    edges = np.geomspace(BAND_LOW, BAND_HIGH, N_BANDS + 1)
    freqs = np.arange(ENVELOPE_FFT // 2 + 1) * SAMPLE_RATE / ENVELOPE_FFT
    w = np.zeros((N_BANDS, len(freqs)), np.float32)
    for i in range(N_BANDS):
        sel = (freqs >= edges[i]) & (freqs < edges[i + 1])
        if not sel.any():
            sel[np.argmin(np.abs(freqs - np.sqrt(edges[i] * edges[i + 1])))] = True
        w[i, sel] = 1.0 / sel.sum()
    return w


BANDS = _band_matrix()


def envelope(x: np.ndarray) -> np.ndarray:
    """Mean band level (dB under the clip's loudest band-frame) in ENVELOPE_SPANS after the onset, [30 x 7]."""
    power = _power_spectrogram(x, ENVELOPE_FFT)
    start = _onset_frame(power)
    db = 10 * np.log10(BANDS @ power + 1e-10)
    ref = db.max()
    spans = []
    for a, b in zip(ENVELOPE_SPANS[:-1], ENVELOPE_SPANS[1:]):
        seg = db[:, start + a: start + b]
        spans.append(seg.mean(axis=1) if seg.shape[1] else np.full(N_BANDS, ref - FLOOR_DB))
    return (np.maximum(np.stack(spans, axis=1), ref - FLOOR_DB) - ref).reshape(-1)


def feature_groups(x: np.ndarray, note: np.ndarray, onset: np.ndarray, contour: np.ndarray) -> dict[str, np.ndarray]:
    """Every group of one 22050 Hz clip, each centred and unit length (chroma scaled by polyphony)."""
    del onset  # measured: onset-based pitch classes and envelopes added nothing beside these
    env = envelope(x)
    if (note >= ACTIVE).sum(axis=0).max() >= SUSTAINED:
        harm = harmonics(x, main_pitch_hz(note, contour))
        harm = _unit(harm - harm.mean())
    else:  # no sustained pitch: no harmonics to measure
        harm = np.zeros(GROUP_SIZES["harmonics"], np.float32)
    return {"chroma": chroma(note), "harmonics": harm, "envelope": _unit(env - env.mean())}


def clip_vector(groups: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """The chosen groups, each scaled by sqrt(weight share), concatenated."""
    total = sum(weights.values())
    return np.concatenate([np.sqrt(w / total) * groups[g] for g, w in weights.items()]).astype(np.float32)


class BasicPitchEncoder(Encoder):
    """Pitch classes of chords, harmonic tone colour and note/hit shape from basic-pitch and the waveform."""

    sample_rate = SAMPLE_RATE

    def __init__(self, name: str = "basic-pitch", checkpoint: str | None = None, device: str = "cpu",
                 pooling: str = "mean", threads: int | None = None, max_windows_per_run: int = 64,
                 groups: dict[str, float] | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelNotFoundError("basic-pitch needs onnxruntime: pip install onnxruntime") from None
        self.name, self.pooling, self.device = name, pooling, device
        self.checkpoint = checkpoint
        self.groups = dict(groups or DEFAULT_GROUPS)
        unknown = set(self.groups) - set(GROUP_SIZES)
        if unknown:
            raise ValueError(f"unknown basic-pitch feature groups {sorted(unknown)}; choose from {list(GROUP_SIZES)}")
        self.frame_dim = sum(GROUP_SIZES[g] for g in self.groups)
        self.max_windows_per_run = max(1, int(max_windows_per_run))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or max(1, min(os.cpu_count() or 1, 8))
        opts.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(model_path(checkpoint)), sess_options=opts, providers=providers)

    def posteriors(self, batch: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(note [T, 88], onset [T, 88], contour [T, 264]) per clip; all windows of the batch in few runs."""
        per_clip = [windows(x) for x in batch]
        stacked = np.concatenate(per_clip)[..., None]
        outs: list[list[np.ndarray]] = [[], [], []]
        for s in range(0, len(stacked), self.max_windows_per_run):
            for acc, o in zip(outs, self.session.run(OUTPUTS, {INPUT: stacked[s:s + self.max_windows_per_run]})):
                acc.append(o)
        note, onset, contour = (np.concatenate(o) for o in outs)
        result, start = [], 0
        for x, w in zip(batch, per_clip):
            sl = slice(start, start + len(w))
            result.append(tuple(unwrap(o[sl], len(x)) for o in (note, onset, contour)))
            start += len(w)
        return result

    def features(self, batch: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Every feature group per clip (for measuring weights without running the network again)."""
        return [feature_groups(np.asarray(x, np.float32), *p) for x, p in zip(batch, self.posteriors(batch))]

    def embed_frames(self, batch: list[np.ndarray]) -> FrameOutput:
        vecs = np.stack([clip_vector(g, self.groups) for g in self.features(batch)])
        return FrameOutput(vecs[:, None, :], np.ones((len(batch), 1), bool))

    def describe(self) -> dict:
        d = super().describe()
        d["groups"] = self.groups
        return d


class OnsetEnvelopeEncoder(Encoder):
    """The envelope group alone (no network): band levels over log-spaced time after the onset, for one-shots."""

    sample_rate = SAMPLE_RATE
    frame_dim = GROUP_SIZES["envelope"]

    def __init__(self, name: str = "onset-envelope", checkpoint: str | None = None, device: str = "cpu",
                 pooling: str = "mean"):
        self.name, self.checkpoint, self.device, self.pooling = name, None, device, pooling

    def embed_frames(self, batch: list[np.ndarray]) -> FrameOutput:
        vecs = np.stack([_unit(e - e.mean()) for e in (envelope(np.asarray(x, np.float32)) for x in batch)])
        return FrameOutput(vecs[:, None, :], np.ones((len(batch), 1), bool))
