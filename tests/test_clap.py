"""ClapEncoder on tiny random-weight CLAP models (unfused and fused) saved with their processor."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import tiny_models as tm  # noqa: E402

from simsearch.encoders import get_encoder
from simsearch.errors import ModelNotFoundError

SR = 48000


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_clap")
    return {"unfused": tm.build_clap(root / "unfused"), "fused": tm.build_clap(root / "fused", fused=True),
            "hubert": tm.build_hubert(root / "hubert")}


@pytest.fixture(scope="module")
def encoders(dirs):
    cache: dict = {}

    def get(kind: str, **options):
        key = (kind, tuple(sorted(options.items())))
        if key not in cache:
            cache[key] = get_encoder("clap", checkpoint=str(dirs[kind]), device="cpu", **options)
        return cache[key]

    return get


@pytest.fixture(scope="module")
def clips():
    return tm.chirp(2.5, sr=SR, seed=1), tm.chirp(12.0, sr=SR, f0=200, f1=9000, seed=2)


@pytest.mark.parametrize("kind", ["unfused", "fused"])
def test_audio_and_text_share_a_unit_norm_space(kind, encoders, clips):
    enc = encoders(kind)
    assert enc.sample_rate == SR and enc.supports_text and enc.text_space == "clap"
    assert enc.frame_dim == enc.dim == enc.config.projection_dim == 24
    audio = enc.embed_audio(list(clips))
    text = enc.embed_text(["a dog barking", "rain falling on a tin roof at night"])
    assert audio.shape == (2, 24) and text.shape == (2, 24)
    assert audio.dtype == np.float32 and text.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(audio, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    out = enc.embed_frames([clips[0]])
    assert out.frames.shape == (1, 1, 24) and out.mask.all()


@pytest.mark.parametrize("kind", ["unfused", "fused"])
def test_clip_embedding_does_not_depend_on_batch_or_chance(kind, encoders, clips):
    """Fused extractors mark a random clip 'longer' and both modes crop long clips at random: we don't."""
    enc = encoders(kind)
    short, long_ = clips
    np.random.seed(1)
    alone_short, alone_long = enc.embed_audio([short])[0], enc.embed_audio([long_])[0]
    np.random.seed(2)
    both = enc.embed_audio([short, long_])
    np.testing.assert_allclose(both[0], alone_short, atol=1e-5)
    np.testing.assert_allclose(both[1], alone_long, atol=1e-5)
    two_short = enc.embed_audio([short, short[: SR].copy()])  # no clip over 10 s in the batch
    np.testing.assert_allclose(two_short[0], alone_short, atol=1e-5)
    feats, is_longer = enc.features([short, long_])
    assert is_longer.ravel().tolist() == [False, kind == "fused"]
    assert feats.shape == (2, 4 if kind == "fused" else 1, 1001, 64)
    if kind == "fused":  # channel 0 (whole clip squeezed to 10 s) is the extractor's; only the crops differ
        ref = enc.feature_extractor([long_], sampling_rate=SR, return_tensors="np")["input_features"][0]
        np.testing.assert_allclose(feats[1, 0].numpy(), ref[0], atol=1e-3)


def test_short_clip_matches_the_plain_transformers_pipeline(encoders, clips):
    import torch

    enc = encoders("unfused")
    inputs = enc.processor(audio=[clips[0]], sampling_rate=SR, return_tensors="pt")
    with torch.inference_mode():
        ref = enc.model.get_audio_features(input_features=inputs["input_features"]).pooler_output[0].numpy()
    np.testing.assert_allclose(enc.embed_audio([clips[0]])[0], ref / np.linalg.norm(ref), atol=1e-5)


@pytest.mark.parametrize("kind", ["unfused", "fused"])
def test_torch_logmel_matches_numpy_extractor(kind, encoders, clips):
    """The device front end (torch.stft + torchaudio mel bank) reproduces ClapFeatureExtractor's log-mel."""
    import torch
    import torchaudio.functional as AF

    enc = encoders(kind)
    fe = enc.feature_extractor
    ref_fb = fe.mel_filters if kind == "fused" else fe.mel_filters_slaney
    np.testing.assert_allclose(enc.mel_filters().numpy(), ref_fb, atol=1e-5)
    # both code paths of the encoder: fill/crop + stack (short, long) and fusion crops
    enc.torch_features = False
    ref, ref_longer = enc.features(list(clips))
    enc.torch_features = True
    try:
        got, got_longer = enc.features(list(clips))
    finally:
        enc.torch_features = False
    assert ref.shape == got.shape and ref_longer.tolist() == got_longer.tolist()
    diff = (ref - got).abs()
    assert float(diff.max()) < 0.05, float(diff.max())  # dB; float32 STFT vs the float64 numpy one
    assert float(diff.mean()) < 1e-3
    # and the raw log-mel of one generated signal, against the extractor's own numpy function
    x = clips[0]
    want = fe._np_extract_fbank_features(x.astype(np.float64), ref_fb)
    have = enc.torch_logmel(torch.from_numpy(x)[None])[0].numpy()
    assert want.shape == have.shape and np.abs(want - have).max() < 0.05
    # and torchaudio's bank with the documented LAION parameters is the one we build
    fb = AF.melscale_fbanks(513, 50.0, 14000.0, 64, SR, norm=None if kind == "fused" else "slaney",
                            mel_scale="htk" if kind == "fused" else "slaney")
    np.testing.assert_allclose(fb.numpy(), ref_fb, atol=1e-5)


def test_torch_features_give_the_same_embedding(encoders, clips):
    ref = encoders("unfused").embed_audio(list(clips))
    got = encoders("unfused", torch_features=True).embed_audio(list(clips))
    assert (ref * got).sum(axis=1).min() > 0.9999


# ---------------------------------------------------------------------------------- loading errors

def test_missing_folder(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        get_encoder("clap", checkpoint=str(tmp_path / "nope"), device="cpu")


def test_hub_id_without_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="huggingface-cli download laion/clap-htsat-unfused"):
        get_encoder("clap", device="cpu")


def test_config_without_weights(dirs, tmp_path):
    d = tmp_path / "clap_no_weights"
    shutil.copytree(dirs["unfused"], d)
    (d / "model.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match="no model weights"):
        get_encoder("clap", checkpoint=str(d), device="cpu")


def test_without_tokenizer(dirs, tmp_path):
    d = tmp_path / "clap_no_tok"
    shutil.copytree(dirs["unfused"], d)
    for f in d.glob("tokenizer*"):
        f.unlink()
    with pytest.raises(ModelNotFoundError, match="tokenizer"):
        get_encoder("clap", checkpoint=str(d), device="cpu")


def test_wrong_architecture(dirs):
    with pytest.raises(ModelNotFoundError, match=r"'hubert'.*expects model_type 'clap'"):
        get_encoder("clap", checkpoint=str(dirs["hubert"]), device="cpu")
    with pytest.raises(ModelNotFoundError, match=r"'clap'.*'wav2vec2'"):
        get_encoder("wav2vec2", checkpoint=str(dirs["unfused"]), device="cpu")
