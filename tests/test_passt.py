"""PaSST: our network and mel front end against hear21passt's outputs on seeded weights, loading, the CLI, errors."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_cli import index_and_search

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import passt_parity as pp  # noqa: E402

from simsearch.encoders import get_encoder  # noqa: E402
from simsearch.errors import ModelNotFoundError, SimsearchError  # noqa: E402


@pytest.fixture(scope="module")
def reference():
    return np.load(pp.REFERENCE)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """A small PaSST checkpoint file in the official layout (the state dict of the PaSST module)."""
    return pp.save_checkpoint(tmp_path_factory.mktemp("passt") / "small.pt", pp.SMALL, pp.CASES["small"][1])


def check(got: dict, reference) -> None:
    for name, (diff, cos) in pp.compare(got, reference).items():
        assert diff <= 1e-4 and cos > 1 - 1e-6, (name, diff, cos)


@pytest.mark.parametrize("case", ["small", "short"])
def test_small_config_matches_the_reference_code(case, reference):
    """Reference outputs: hear21passt 0.0.26 (AugmentMelSTFT in eval mode, PaSST) on the same recipe weights and
    input; "short" is a 3.3-s clip, which uses only the first time positions."""
    check(pp.ours(case), reference)


def test_real_size_config_matches_the_reference_code(reference):
    """PaSST-S's architecture (86.2M parameters) on random recipe weights, fp32."""
    torch.set_num_threads(2)
    assert sum(np.prod(s) for s in pp.official_shapes(pp.REAL).values()) == 86_153_758
    check(pp.ours("real"), reference)


def test_encoder_gives_the_pooled_tokens_and_audioset_tags(small, reference):
    enc = get_encoder("passt", checkpoint=str(small), device="cpu")
    assert enc.sample_rate == 32000 and enc.dim == 128 and enc.text_space == "tags"
    info = enc.describe()
    assert info["tags"] == 527 and info["class_names"][0] == "Speech" and info["class_names"][-1] == "Field recording"
    out = enc.embed_batch([pp.test_input(*pp.CASES["small"][1:])])
    np.testing.assert_allclose(out["embedding"][0], reference["small_pooled"], atol=1e-4)
    probs = 1 / (1 + np.exp(-reference["small_logits"].astype(np.float64)))
    np.testing.assert_allclose(out["tag_scores"][0], probs, atol=1e-5)


def test_long_clips_are_cut_into_pieces_and_batches_equal_clips_alone(small):
    enc = get_encoder("passt", checkpoint=str(small), device="cpu")
    a, b, click = pp.test_input(1, 23.0), pp.test_input(2, 2.5), pp.test_input(3, 0.05)
    frames = enc.embed_frames([a, b])
    assert frames.frames.shape[:2] == (2, 3) and frames.mask.tolist() == [[True] * 3, [True, False, False]]
    together = enc.embed_audio([a, b, click, b])
    alone = np.stack([enc.embed_audio([x])[0] for x in (a, b, click)])
    np.testing.assert_allclose(together, alone[[0, 1, 2, 1]], atol=1e-5)
    np.testing.assert_allclose(enc.embed_audio([b] * 9), alone[[1] * 9], atol=1e-5)  # over one forward call's worth
    pieces = np.stack([enc.embed_audio([a[i:i + 320000]])[0] for i in (0, 320000, 640000)])
    np.testing.assert_allclose(alone[0], pieces.mean(axis=0), atol=1e-5)


def test_wrapped_and_headless_checkpoints_load(small, tmp_path):
    state = torch.load(small, weights_only=True)
    want = get_encoder("passt", checkpoint=str(small), device="cpu").embed_audio([pp.test_input(4, 1.0)])
    torch.save({k: v for k, v in state.items() if not k.startswith("head")}, tmp_path / "headless.pt")
    headless = get_encoder("passt", checkpoint=str(tmp_path / "headless.pt"), device="cpu")
    out = headless.embed_batch([pp.test_input(4, 1.0)])
    assert set(out) == {"embedding"} and headless.text_space is None and headless.describe()["tags"] == 0
    np.testing.assert_allclose(out["embedding"], want, atol=1e-6)
    for name, obj in (("wrapper", {f"net.{k}": v for k, v in state.items()}), ("model", {"model": state})):
        torch.save(obj, tmp_path / f"{name}.pt")
        got = get_encoder("passt", checkpoint=str(tmp_path / f"{name}.pt"), device="cpu").embed_audio(
            [pp.test_input(4, 1.0)])
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_index_and_search_through_the_cli(small, tmp_path, capsys):
    index_and_search("passt", small, 128, tmp_path, capsys)


def test_missing_or_foreign_checkpoints_say_what_and_how(small, tmp_path):
    missing = tmp_path / "passt-s-f128-p16-s10-ap.476-swa.pt"
    with pytest.raises(ModelNotFoundError, match=f"not found: looked for the file {missing}.*kkoutini/PaSST/releases"):
        get_encoder("passt", checkpoint=str(missing), device="cpu")
    with pytest.raises(ModelNotFoundError, match="no PaSST checkpoint given.*--checkpoint FILE.pt"):
        get_encoder("passt", device="cpu")
    state = torch.load(small, weights_only=True)
    state.pop("blocks.1.attn.qkv.weight")
    torch.save(state, tmp_path / "part.pt")
    with pytest.raises(SimsearchError, match="does not fit.*blocks.1.attn.qkv.weight"):
        get_encoder("passt", checkpoint=str(tmp_path / "part.pt"), device="cpu")
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(SimsearchError, match="not a PaSST state dict"):
        get_encoder("passt", checkpoint=str(tmp_path / "other.pt"), device="cpu")
