"""Audio-MAE: our encoder and fbank against the reference models_mae.py on seeded weights, loading, the CLI, errors."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_cli import index_and_search

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import audiomae_parity as ap  # noqa: E402
import ssast_parity as sp  # noqa: E402
from passt_parity import compare  # noqa: E402

from simsearch.encoders import get_encoder  # noqa: E402
from simsearch.errors import ModelNotFoundError, SimsearchError  # noqa: E402


@pytest.fixture(scope="module")
def reference():
    return np.load(ap.REFERENCE)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """A small Audio-MAE checkpoint file in the official layout (encoder and decoder under 'model')."""
    return ap.save_checkpoint(tmp_path_factory.mktemp("mae") / "small.pth", ap.SMALL, ap.CASES["small"][1])


def check(got: dict, reference) -> None:
    for name, (diff, cos) in compare(got, reference).items():
        assert diff <= 1e-4 and cos > 1 - 1e-6, (name, diff, cos)


def test_small_config_matches_the_reference_code(reference):
    """Reference outputs: AudioMAE's MaskedAutoencoderViT.forward_encoder (timm 0.4.5 blocks, nothing masked) with
    its data loader's fbank on the same recipe weights and the full 1024-frame input."""
    check(ap.ours("small"), reference)


def test_real_size_config_matches_the_reference_code(reference):
    """The ViT-B encoder's architecture on random recipe weights, fp32."""
    torch.set_num_threads(2)
    shapes = ap.official_shapes(ap.REAL)
    encoder = {k: s for k, s in shapes.items() if not k.startswith(("decoder", "mask_token"))}
    assert sum(int(np.prod(s)) for s in encoder.values()) == 85_648_128
    check(ap.ours("real"), reference)


def test_encoder_gives_the_mean_patch_token(small, reference):
    enc = get_encoder("audiomae", checkpoint=str(small), device="cpu")
    assert enc.sample_rate == 16000 and enc.dim == 192 and enc.text_space is None
    assert enc.describe()["num_heads"] == 3 and enc.describe()["window_seconds"] == pytest.approx(10.255)
    out = enc.embed_batch([sp.test_input(*ap.CASES["small"][1:])])
    assert set(out) == {"embedding"}
    np.testing.assert_allclose(out["embedding"][0], reference["small_pooled"], atol=1e-4)


def test_short_clips_use_only_their_patches_and_batches_equal_clips_alone(small):
    enc = get_encoder("audiomae", checkpoint=str(small), device="cpu")
    a, b, click = sp.test_input(1, 23.0), sp.test_input(2, 2.5), sp.test_input(3, 0.05)
    frames = enc.embed_frames([a, b])
    assert frames.frames.shape[:2] == (2, 3) and frames.mask.tolist() == [[True] * 3, [True, False, False]]
    together = enc.embed_audio([a, b, click, b])
    alone = np.stack([enc.embed_audio([x])[0] for x in (a, b, click)])
    np.testing.assert_allclose(together, alone[[0, 1, 2, 1]], atol=1e-5)
    # 2.5 s -> 248 frames -> 15 time rows of patches; the zero-padded full-length input gives another vector
    padded = enc.embed_audio([np.pad(b, (0, enc.window - len(b)))])[0]
    assert np.dot(alone[1], padded) / np.linalg.norm(alone[1]) / np.linalg.norm(padded) < 0.999


def test_index_and_search_through_the_cli(small, tmp_path, capsys):
    index_and_search("audiomae", small, 192, tmp_path, capsys, sr=16000, tags=False)


def test_missing_or_foreign_checkpoints_say_what_and_how(small, tmp_path):
    missing = tmp_path / "pretrained.pth"
    with pytest.raises(ModelNotFoundError, match=f"not found: looked for the file {missing}.*facebookresearch/AudioMAE"):
        get_encoder("audiomae", checkpoint=str(missing), device="cpu")
    with pytest.raises(ModelNotFoundError, match="no Audio-MAE checkpoint given.*--checkpoint FILE.pth"):
        get_encoder("audiomae", device="cpu")
    state = torch.load(small, weights_only=True)["model"]
    torch.save({k: v for k, v in state.items() if k != "blocks.1.attn.qkv.weight"}, tmp_path / "part.pth")
    with pytest.raises(SimsearchError, match="does not fit.*blocks.1.attn.qkv.weight"):
        get_encoder("audiomae", checkpoint=str(tmp_path / "part.pth"), device="cpu")
    torch.save({k: v for k, v in state.items() if not k.startswith("norm.")}, tmp_path / "finetuned.pth")
    with pytest.raises(SimsearchError, match="not an Audio-MAE pretrained checkpoint.*norm.weight"):
        get_encoder("audiomae", checkpoint=str(tmp_path / "finetuned.pth"), device="cpu")
