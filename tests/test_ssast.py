"""SSAST: our ViT and fbank against the reference ast_models.py on seeded weights, loading, the CLI, errors."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_cli import index_and_search

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import ssast_parity as sp  # noqa: E402
from passt_parity import compare  # noqa: E402

from simsearch.encoders import get_encoder  # noqa: E402
from simsearch.errors import ModelNotFoundError, SimsearchError  # noqa: E402


@pytest.fixture(scope="module")
def reference():
    return np.load(sp.REFERENCE)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny-width SSAST checkpoint file in the official layout (DataParallel keys, pretraining heads)."""
    return sp.save_checkpoint(tmp_path_factory.mktemp("ssast") / "tiny.pth", sp.TINY, sp.CASES["small"][1])


def check(got: dict, reference) -> None:
    for name, (diff, cos) in compare(got, reference).items():
        assert diff <= 1e-4 and cos > 1 - 1e-6, (name, diff, cos)


@pytest.mark.parametrize("case", ["small", "short", "frame"])
def test_tiny_configs_match_the_reference_code(case, reference):
    """Reference outputs: SSAST's ast_models.py (timm 0.4.5, model_size='tiny', pretrain_stage=False, ft_avgtok)
    with its data loader's fbank on the same recipe weights and input. "small" is the full 1024-frame input,
    "short" a 3.3-s clip (the centre of the positional grid), "frame" a 128x2 frame-patch model on 2 s."""
    check(sp.ours(case), reference)


def test_real_size_config_matches_the_reference_code(reference):
    """SSAST-Base-Patch's architecture on random recipe weights, fp32."""
    torch.set_num_threads(2)
    backbone = {k: s for k, s in sp.official_shapes(sp.REAL).items() if k.startswith("module.v.")
                and ".head" not in k}
    assert sum(int(np.prod(s)) for s in backbone.values()) == 85_649_664
    check(sp.ours("real"), reference)


def test_encoder_gives_the_mean_patch_token(tiny, reference):
    enc = get_encoder("ssast", checkpoint=str(tiny), device="cpu")
    assert enc.sample_rate == 16000 and enc.dim == 192 and enc.text_space is None
    info = enc.describe()
    assert info["patch"] == [16, 16] and info["num_heads"] == 3 and info["window_seconds"] == pytest.approx(10.255)
    out = enc.embed_batch([sp.test_input(*sp.CASES["small"][1:])])
    assert set(out) == {"embedding"}
    np.testing.assert_allclose(out["embedding"][0], reference["small_pooled"], atol=1e-4)


def test_long_clips_are_cut_into_pieces_and_batches_equal_clips_alone(tiny):
    enc = get_encoder("ssast", checkpoint=str(tiny), device="cpu")
    a, b, click = sp.test_input(1, 23.0), sp.test_input(2, 2.5), sp.test_input(3, 0.05)
    frames = enc.embed_frames([a, b])
    assert frames.frames.shape[:2] == (2, 3) and frames.mask.tolist() == [[True] * 3, [True, False, False]]
    together = enc.embed_audio([a, b, click, b])
    alone = np.stack([enc.embed_audio([x])[0] for x in (a, b, click)])
    np.testing.assert_allclose(together, alone[[0, 1, 2, 1]], atol=1e-5)
    w = enc.window
    pieces = np.stack([enc.embed_audio([a[i:i + w]])[0] for i in (0, w, 2 * w)])
    np.testing.assert_allclose(alone[0], pieces.mean(axis=0), atol=1e-5)


def test_index_and_search_through_the_cli(tiny, tmp_path, capsys):
    index_and_search("ssast", tiny, 192, tmp_path, capsys, sr=16000, tags=False)


def test_missing_or_foreign_checkpoints_say_what_and_how(tiny, tmp_path):
    missing = tmp_path / "SSAST-Base-Patch-400.pth"
    with pytest.raises(ModelNotFoundError, match=f"not found: looked for the file {missing}.*YuanGongND/ssast"):
        get_encoder("ssast", checkpoint=str(missing), device="cpu")
    with pytest.raises(ModelNotFoundError, match="no SSAST checkpoint given.*--checkpoint FILE.pth"):
        get_encoder("ssast", device="cpu")
    state = torch.load(tiny, weights_only=True)
    part = {k: v for k, v in state.items() if k != "module.v.blocks.1.attn.qkv.weight"}
    torch.save(part, tmp_path / "part.pth")
    with pytest.raises(SimsearchError, match="does not fit.*blocks.1.attn.qkv.weight"):
        get_encoder("ssast", checkpoint=str(tmp_path / "part.pth"), device="cpu")
    torch.save({k: v for k, v in state.items() if "p_input" not in k}, tmp_path / "finetuned.pth")
    with pytest.raises(SimsearchError, match="not an SSAST pretrained checkpoint.*p_input_fdim"):
        get_encoder("ssast", checkpoint=str(tmp_path / "finetuned.pth"), device="cpu")
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(SimsearchError, match="not an SSAST pretrained checkpoint"):
        get_encoder("ssast", checkpoint=str(tmp_path / "other.pth"), device="cpu")
