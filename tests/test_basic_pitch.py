"""basic-pitch encoder: the packaged ONNX network on generated tones and chords (pitch classes, register, shape)."""
from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from simsearch.encoders import basic_pitch as B
from simsearch.errors import ModelNotFoundError

SR = B.SAMPLE_RATE
NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
HAVE_MODEL = importlib.util.find_spec("basic_pitch") is not None
needs_model = pytest.mark.skipif(not HAVE_MODEL, reason=f"basic-pitch not installed ({B.INSTALL_HINT})")


def note(midi: float, seconds: float = 1.5, decay: float = 1.5, seed: int = 0) -> np.ndarray:
    """A harmonic tone (six partials, 1/k amplitudes) with an exponential decay, like a plucked string."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 7) if k * f0 < SR / 2)
    x = x * np.exp(-t * decay) + 0.002 * np.random.default_rng(seed).standard_normal(t.size)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def chord(midis: list[int], seconds: float = 1.5) -> np.ndarray:
    x = sum(note(m, seconds) for m in midis)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture(scope="module")
def enc():
    return B.BasicPitchEncoder(threads=1)


def chroma_of(enc, x: np.ndarray) -> np.ndarray:
    (post,) = enc.posteriors([x])
    return B.feature_groups(x, *post)["chroma"]


def top_classes(profile: np.ndarray, n: int) -> set[str]:
    return {NAMES[i] for i in np.argsort(-profile)[:n]}


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_windows_and_unwrap_follow_the_package_layout():
    x = np.arange(3 * SR, dtype=np.float32)
    w = B.windows(x)
    assert w.shape == (2, B.WINDOW)  # 3840 zeros + 66150 samples: windows start at 0 and 36164
    assert (w[0, : B.OVERLAP // 2] == 0).all() and w[0, B.OVERLAP // 2] == 0.0 and w[0, B.OVERLAP // 2 + 1] == 1.0
    assert w[1, 0] == B.HOP - B.OVERLAP // 2  # the second window starts one hop later in the padded signal
    assert (w[1, len(x) + B.OVERLAP // 2 - B.HOP:] == 0).all()  # the last window is zero-padded
    out = np.zeros((2, B.FRAMES_PER_WINDOW, 4), np.float32)
    assert B.unwrap(out, len(x)).shape == (int(3 * SR * B.FPS / SR), 4)  # 258 frames at 86 fps


def test_fold_maps_keys_to_pitch_classes():
    keys = np.zeros(B.N_KEYS, np.float32)
    keys[69 - B.LOWEST_MIDI] = 1.0  # A4
    keys[60 - B.LOWEST_MIDI] = 0.5  # C4
    chroma = B.fold(keys)
    assert chroma[9] == 1.0 and chroma[0] == 0.5 and chroma.sum() == 1.5
    contour = np.zeros(B.N_CONTOUR, np.float32)
    contour[(69 - B.LOWEST_MIDI) * 3] = 1.0
    assert np.argmax(B.fold(contour, 3)) == 27  # A's first third-semitone bin


@needs_model
def test_a440_is_transcribed_as_a4_and_a_single_note_has_no_chroma(enc):
    (post,) = enc.posteriors([note(69)])
    assert abs(B.main_pitch_hz(post[0], post[2]) - 440.0) < 440.0 * 0.02  # within a third of a semitone
    keys = (post[0].astype(np.float32) ** 2).mean(axis=0)
    assert NAMES[int(np.argmax(B.fold(keys)))] == "A"
    assert not chroma_of(enc, note(69)).any()  # one pitch class: chroma gated off


@needs_model
def test_c_major_and_a_minor_triads_give_their_pitch_classes(enc):
    c_major, a_minor = chroma_of(enc, chord([60, 64, 67])), chroma_of(enc, chord([57, 60, 64]))
    assert top_classes(c_major, 3) == {"C", "E", "G"}
    assert top_classes(a_minor, 3) == {"A", "C", "E"}
    assert abs(np.linalg.norm(c_major) - 1.0) < 1e-5  # three pitch classes: full weight


@needs_model
def test_same_chord_in_another_voicing_is_closer_than_another_chord(enc):
    c_low, c_high, a_min = enc.embed_audio([chord([48, 52, 55]), chord([60, 64, 67, 72]), chord([57, 60, 64])])
    assert cos(c_low, c_high) > cos(c_low, a_min)


@needs_model
def test_harmonics_tell_odd_harmonic_tones_from_full_ones(enc):
    """A clarinet-like tone (odd harmonics) at two pitches is closer to itself than to a saw-like tone."""
    def tone(midi, odd):
        t = np.arange(int(1.5 * SR)) / SR
        f0 = 440.0 * 2 ** ((midi - 69) / 12)
        ks = range(1, 12, 2) if odd else range(1, 12)
        x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in ks if k * f0 < SR / 2)
        return (0.3 * x / np.abs(x).max()).astype(np.float32)
    feats = enc.features([tone(55, True), tone(62, True), tone(55, False)])
    h = [f["harmonics"] for f in feats]
    assert cos(h[0], h[1]) > cos(h[0], h[2])


@needs_model
def test_envelope_tells_a_short_hit_from_a_held_note(enc):
    short, held = enc.features([note(64, 2.0, decay=12.0), note(64, 2.0, decay=0.1)])
    late = slice(-2, None)  # the last two spans (0.37-1.5 s after the onset), per band
    s = short["envelope"].reshape(B.N_BANDS, -1)[:, late].mean()
    h = held["envelope"].reshape(B.N_BANDS, -1)[:, late].mean()
    assert s < h


@needs_model
def test_output_dims_and_batch_invariance(enc):
    clips = [note(60, 0.5), chord([55, 59, 62], 2.7), note(72, 4.5)]  # 1, 2 and 3 model windows
    alone = enc.embed_audio([clips[0]])
    together = enc.embed_audio(clips)
    assert together.shape == (3, enc.dim) and enc.dim == enc.frame_dim == 12 + 64 + 210
    np.testing.assert_allclose(alone[0], together[0], atol=1e-5)
    posts = enc.posteriors(clips)
    assert [p[0].shape for p in posts] == [(int(len(c) * B.FPS / SR), B.N_KEYS) for c in clips]
    assert all(p[2].shape[1] == B.N_CONTOUR for p in posts)
    assert np.isfinite(together).all()


@needs_model
def test_groups_choose_the_parts_of_the_vector():
    enc = B.BasicPitchEncoder(threads=1, groups={"harmonics": 1.0})
    assert enc.dim == 64
    x = note(60)
    np.testing.assert_allclose(enc.embed_audio([x])[0], enc.features([x])[0]["harmonics"], atol=1e-6)
    with pytest.raises(ValueError, match="unknown basic-pitch feature groups"):
        B.BasicPitchEncoder(groups={"octave": 1.0})


def test_onset_envelope_needs_no_model_and_tells_hits_apart():
    enc = B.OnsetEnvelopeEncoder()
    t = np.arange(SR) / SR
    rng = np.random.default_rng(0)
    hat = [(rng.standard_normal(SR) * np.exp(-t * 60)).astype(np.float32) for _ in range(2)]  # short noise
    kick = (np.sin(2 * np.pi * 55 * t) * np.exp(-t * 8)).astype(np.float32)  # low, longer
    out = enc.embed_audio(hat + [kick])
    assert out.shape == (3, enc.dim) and enc.dim == B.N_BANDS * (len(B.ENVELOPE_SPANS) - 1)
    assert cos(out[0], out[1]) > cos(out[0], out[2])


@needs_model
def test_onset_envelope_is_basic_pitch_envelope_group(enc):
    x = chord([48, 52, 55])
    np.testing.assert_allclose(B.OnsetEnvelopeEncoder().embed_audio([x])[0], enc.features([x])[0]["envelope"],
                               atol=1e-6)


@needs_model
def test_silence_and_very_short_clips_give_finite_vectors(enc):
    out = enc.embed_audio([np.zeros(SR, np.float32), note(60, 0.05)])
    assert out.shape == (2, enc.dim) and np.isfinite(out).all()


def test_missing_model_file_names_the_pip_command(tmp_path):
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps basic-pitch==0.4.0"):
        B.model_path(str(tmp_path / "nmp.onnx"))


def test_missing_package_names_the_pip_command(monkeypatch):
    # the package is looked up on sys.path (never imported); without site-packages it is not there
    monkeypatch.delitem(sys.modules, "basic_pitch", raising=False)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "site-packages" not in p and "dist-packages" not in p])
    importlib.invalidate_caches()
    with pytest.raises(ModelNotFoundError, match="not installed; install it with: pip install --no-deps basic-pitch"):
        B.model_path()
