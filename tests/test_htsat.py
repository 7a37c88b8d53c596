"""HTS-AT: our network and log-mel front end against the reference code's outputs on seeded weights, loading the
official checkpoint layout, the CLI, errors."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_cli import index_and_search

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import htsat_parity as hp  # noqa: E402
from passt_parity import compare  # noqa: E402

from simsearch.encoders import get_encoder  # noqa: E402
from simsearch.encoders.htsat_model import slaney_mel_banks  # noqa: E402
from simsearch.errors import ModelNotFoundError, SimsearchError  # noqa: E402


@pytest.fixture(scope="module")
def reference():
    return np.load(hp.REFERENCE)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """A small HTS-AT checkpoint in the official layout (Lightning dict, state_dict keys under 'sed_model.')."""
    return hp.save_checkpoint(tmp_path_factory.mktemp("htsat") / "small.ckpt", hp.SMALL, hp.CASES["small"][1])


def check(got: dict, reference) -> None:
    for name, (diff, cos) in compare(got, reference).items():
        assert diff <= 1e-4 and cos > 1 - 1e-6, (name, diff, cos)


def test_mel_banks_are_torchaudios_slaney_banks():
    """Our float64 banks equal torchaudio's Slaney banks (which are librosa's, up to torchaudio's float32)."""
    import torchaudio

    want = torchaudio.functional.melscale_fbanks(513, 50.0, 14000.0, 64, 32000, norm="slaney", mel_scale="slaney")
    got = slaney_mel_banks(513, 50.0, 14000.0, 64, 32000)
    assert got.shape == (513, 64)
    np.testing.assert_allclose(got.numpy(), want.double().numpy(), atol=1e-7)


@pytest.mark.parametrize("case", ["small", "short"])
def test_small_config_matches_the_reference_code(case, reference):
    """Reference outputs: HTS-AT's HTSAT_Swin_Transformer (torchlibrosa 0.1.0 front end, bn0, inference-mode repeat,
    reshape_wav2img, forward_features) on the same recipe weights and input; "short" is a 3.3-s clip, repeated three
    times and stretched to 1024 frames."""
    check(hp.ours(case), reference)


def test_real_size_config_matches_the_reference_code(reference):
    """The AudioSet model's architecture (30.24M parameters, plus bn0's statistics) on random recipe weights, fp32."""
    torch.set_num_threads(2)
    assert sum(np.prod(s) for s in hp.official_shapes(hp.REAL).values()) == 30_241_816
    check(hp.ours("real"), reference)


def test_encoder_gives_the_pooled_latent_and_audioset_tags(small, reference):
    enc = get_encoder("htsat", checkpoint=str(small), device="cpu")
    assert enc.sample_rate == 32000 and enc.dim == 256 and enc.text_space == "tags"
    info = enc.describe()
    assert info["tags"] == 527 and info["class_names"][0] == "Speech" and info["class_names"][-1] == "Field recording"
    out = enc.embed_batch([hp.test_input(*hp.CASES["small"][1:])])
    np.testing.assert_allclose(out["embedding"][0], reference["small_latent"], atol=1e-4)
    np.testing.assert_allclose(out["tag_scores"][0], reference["small_probs"], atol=1e-5)


def test_long_clips_are_cut_into_pieces_and_batches_equal_clips_alone(small):
    enc = get_encoder("htsat", checkpoint=str(small), device="cpu")
    a, b, click = hp.test_input(1, 23.0), hp.test_input(2, 2.5), hp.test_input(3, 0.01)
    frames = enc.embed_frames([a, b])
    assert frames.frames.shape[:2] == (2, 3) and frames.mask.tolist() == [[True] * 3, [True, False, False]]
    together = enc.embed_audio([a, b, click, b])
    alone = np.stack([enc.embed_audio([x])[0] for x in (a, b, click)])
    np.testing.assert_allclose(together, alone[[0, 1, 2, 1]], atol=1e-5)
    pieces = np.stack([enc.embed_audio([a[i:i + 320000]])[0] for i in (0, 320000, 640000)])
    np.testing.assert_allclose(alone[0], pieces.mean(axis=0), atol=1e-5)


def test_bare_wrapped_and_headless_checkpoints_load(small, tmp_path):
    """The official .ckpt also holds the fixed STFT / mel / index tables; they are rebuilt, not read."""
    state = {k.removeprefix("sed_model."): v for k, v in torch.load(small, weights_only=True)["state_dict"].items()}
    want = get_encoder("htsat", checkpoint=str(small), device="cpu").embed_audio([hp.test_input(4, 1.0)])
    fixed = {"spectrogram_extractor.stft.conv_real.weight": torch.zeros(513, 1, 1024),
             "logmel_extractor.melW": torch.zeros(513, 64),
             "layers.0.blocks.1.attn.relative_position_index": torch.zeros(16, 16, dtype=torch.long),
             "layers.0.blocks.1.attn_mask": torch.zeros(256, 16, 16)}
    for name, obj in (("bare", state), ("full", {"state_dict": {f"sed_model.{k}": v for k, v in {**state, **fixed}.items()}})):
        torch.save(obj, tmp_path / f"{name}.ckpt")
        got = get_encoder("htsat", checkpoint=str(tmp_path / f"{name}.ckpt"), device="cpu").embed_audio(
            [hp.test_input(4, 1.0)])
        np.testing.assert_allclose(got, want, atol=1e-6)
    torch.save({k: v for k, v in state.items() if not k.startswith(("head.", "tscam_conv."))}, tmp_path / "headless.ckpt")
    headless = get_encoder("htsat", checkpoint=str(tmp_path / "headless.ckpt"), device="cpu")
    out = headless.embed_batch([hp.test_input(4, 1.0)])
    assert set(out) == {"embedding"} and headless.text_space is None and headless.describe()["tags"] == 0
    np.testing.assert_allclose(out["embedding"], want, atol=1e-6)


def test_index_and_search_through_the_cli(small, tmp_path, capsys):
    index_and_search("htsat", small, 256, tmp_path, capsys)


def test_missing_or_foreign_checkpoints_say_what_and_how(small, tmp_path):
    missing = tmp_path / "HTSAT_AudioSet_Saved_1.ckpt"
    with pytest.raises(ModelNotFoundError, match=f"not found: looked for the file {missing}.*RetroCirce/HTS-Audio"):
        get_encoder("htsat", checkpoint=str(missing), device="cpu")
    with pytest.raises(ModelNotFoundError, match="no HTS-AT checkpoint given.*--checkpoint FILE.ckpt"):
        get_encoder("htsat", device="cpu")
    state = torch.load(small, weights_only=True)
    state["state_dict"].pop("sed_model.layers.1.blocks.0.attn.qkv.weight")
    torch.save(state, tmp_path / "part.ckpt")
    with pytest.raises(SimsearchError, match="does not fit.*layers.1.blocks.0.attn.qkv.weight"):
        get_encoder("htsat", checkpoint=str(tmp_path / "part.ckpt"), device="cpu")
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "other.ckpt")
    with pytest.raises(SimsearchError, match="not an HTS-AT state dict"):
        get_encoder("htsat", checkpoint=str(tmp_path / "other.ckpt"), device="cpu")
