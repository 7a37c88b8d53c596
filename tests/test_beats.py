"""BEATs: our network loads checkpoints in the official layout, masks padding, and fails helpfully."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import noise, tone
from tiny_models import BEATS_TINY_CFG as TINY_CFG
from tiny_models import beats_tiny_model as _tiny_model
from tiny_models import build_beats as _save

from simsearch.encoders import get_encoder
from simsearch.errors import ModelNotFoundError


def _official_keys(n_layers: int, finetuned: bool) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the reference model's state_dict for TINY_CFG (unilm beats/BEATs.py + backbone.py).

    Notes from the reference: pos_conv is nn.utils.weight_norm(Conv1d, dim=2) inside nn.Sequential (index 0), so
    g has shape [1, 1, conv_pos]; the relative-position table is created on layer 0 and re-registered on every
    other layer, so state_dict() lists it under every layer.
    """
    c = TINY_CFG
    d, e, ffn, h = c["encoder_embed_dim"], c["embed_dim"], c["encoder_ffn_embed_dim"], c["encoder_attention_heads"]
    p, k, g = c["input_patch_size"], c["conv_pos"], c["conv_pos_groups"]
    keys = {
        "post_extract_proj.weight": (d, e), "post_extract_proj.bias": (d,),
        "patch_embedding.weight": (e, 1, p, p),
        "encoder.pos_conv.0.bias": (d,), "encoder.pos_conv.0.weight_g": (1, 1, k),
        "encoder.pos_conv.0.weight_v": (d, d // g, k),
        "encoder.layer_norm.weight": (d,), "encoder.layer_norm.bias": (d,),
        "layer_norm.weight": (e,), "layer_norm.bias": (e,),
    }
    for i in range(n_layers):
        a = f"encoder.layers.{i}."
        keys[a + "self_attn.relative_attention_bias.weight"] = (c["num_buckets"], h)
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            keys[a + f"self_attn.{proj}.weight"] = (d, d)
            keys[a + f"self_attn.{proj}.bias"] = (d,)
        keys[a + "self_attn.grep_a"] = (1, h, 1, 1)
        keys[a + "self_attn.grep_linear.weight"] = (8, d // h)
        keys[a + "self_attn.grep_linear.bias"] = (8,)
        for ln in ("self_attn_layer_norm", "final_layer_norm"):
            keys[a + f"{ln}.weight"] = (d,)
            keys[a + f"{ln}.bias"] = (d,)
        keys[a + "fc1.weight"], keys[a + "fc1.bias"] = (ffn, d), (ffn,)
        keys[a + "fc2.weight"], keys[a + "fc2.bias"] = (d, ffn), (d,)
    if finetuned:
        keys["predictor.weight"], keys["predictor.bias"] = (527, d), (527,)
    return keys


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return _save(tmp_path_factory.mktemp("beats"))


@pytest.fixture(scope="module")
def tiny_ft_ckpt(tmp_path_factory):
    return _save(tmp_path_factory.mktemp("beats_ft"), "tiny_ft.pt", finetuned=True)


@pytest.fixture(scope="module")
def encoder(tiny_ckpt):
    return get_encoder("beats", checkpoint=str(tiny_ckpt), device="cpu")


def _cos(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_state_dict_matches_official_keys():
    model, _ = _tiny_model(finetuned=True, n_layers=1)
    sd = model.state_dict()
    want = _official_keys(1, finetuned=True)
    assert set(sd) == set(want)
    assert {k: tuple(v.shape) for k, v in sd.items()} == want
    assert not any("parametrizations" in k for k in sd)  # saved in the official weight_g / weight_v form

    model2, _ = _tiny_model(finetuned=False, n_layers=2)
    assert {k: tuple(v.shape) for k, v in model2.state_dict().items()} == _official_keys(2, finetuned=False)


def test_official_state_dict_loads_strict_and_reproduces_outputs():
    from simsearch.encoders.beats_model import beats_fbank

    src, _ = _tiny_model(finetuned=True, n_layers=2, seed=1)
    dst, _ = _tiny_model(finetuned=True, n_layers=2, seed=2)
    official = {k: v.clone() for k, v in src.state_dict().items()}  # weight_g / weight_v names
    dst.load_state_dict(official, strict=True)
    # the shared relative-position table is one tensor in every layer
    attn0, attn1 = dst.encoder.layers[0].self_attn, dst.encoder.layers[1].self_attn
    assert attn1.relative_attention_bias is attn0.relative_attention_bias
    fb = beats_fbank(torch.from_numpy(np.stack([tone(440, 1.0), noise(1.0, seed=3)])))
    src.eval(), dst.eval()
    with torch.no_grad():
        a, b = src(fb), dst(fb)
    torch.testing.assert_close(a.hidden, b.hidden)
    torch.testing.assert_close(a.probs, b.probs)


def test_fbank_front_end_is_reference_kaldi_fbank():
    import torchaudio.compliance.kaldi as kaldi

    from simsearch.encoders.beats_model import beats_fbank

    x = tone(523.25, 1.3, seed=5) + 0.3 * noise(1.3, seed=6)
    got = beats_fbank(torch.from_numpy(x)[None])[0]
    ref = kaldi.fbank(torch.from_numpy(x)[None] * 2**15, num_mel_bins=128, sample_frequency=16000,
                      frame_length=25, frame_shift=10)
    ref = (ref - 15.41663) / (2 * 6.55582)
    assert got.shape == ref.shape == (1 + (len(x) - 400) // 160, 128)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_embeddings_shape_and_describe(encoder):
    emb = encoder.embed_audio([tone(330, 1.0), noise(2.0, seed=1), tone(1000, 0.05)])  # 50 ms: shorter than a patch
    assert emb.shape == (3, 64) and emb.dtype == np.float32
    assert np.isfinite(emb).all()
    assert encoder.frame_dim == encoder.dim == 64
    d = encoder.describe()
    assert d["name"] == "beats" and d["dim"] == 64 and d["finetuned"] is False and d["layer"] is None
    assert Path(d["checkpoint"]).is_absolute() and Path(d["checkpoint"]).is_file()
    assert "beats_tags" not in encoder.embed_batch([tone(330, 1.0)])


def test_padding_invariance(encoder):
    short, long = tone(700, 1.3, seed=2), noise(3.1, seed=4)
    alone = encoder.embed_frames([short])
    both = encoder.embed_frames([short, long])
    n_alone = int(alone.mask[0].sum())
    assert alone.mask[0].all() and n_alone == (1 + (len(short) - 400) // 160) // 16
    assert both.frames.shape[1] > n_alone and int(both.mask[0].sum()) == n_alone
    np.testing.assert_allclose(both.frames[0, :n_alone], alone.frames[0], atol=1e-4)
    e_alone = encoder.embed_audio([short])[0]
    e_both = encoder.embed_audio([short, long])
    assert _cos(e_alone, e_both[0]) > 1 - 1e-4
    assert _cos(e_both[1], encoder.embed_audio([long])[0]) > 1 - 1e-4


def test_layer_option(tiny_ckpt, encoder):
    x = [tone(440, 1.0), noise(1.5, seed=7)]
    last = encoder.embed_audio(x)
    l1 = get_encoder("beats", checkpoint=str(tiny_ckpt), device="cpu", layer=1).embed_audio(x)
    l2 = get_encoder("beats", checkpoint=str(tiny_ckpt), device="cpu", layer=-1).embed_audio(x)
    assert l1.shape == last.shape and not np.allclose(l1, last, atol=1e-3)
    np.testing.assert_allclose(l2, last, atol=1e-5)  # post-LN model: last layer's output is the model output
    with pytest.raises(Exception, match="out of range"):
        get_encoder("beats", checkpoint=str(tiny_ckpt), device="cpu", layer=3)


def test_finetuned_checkpoint_gives_tags(tiny_ft_ckpt):
    enc = get_encoder("beats", checkpoint=str(tiny_ft_ckpt), device="cpu", pooling="meanstd")
    batch = [tone(440, 1.0), noise(2.2, seed=9)]
    out = enc.embed_batch(batch)
    assert out["embedding"].shape == (2, 128)
    tags = out["beats_tags"]
    assert tags.shape == (2, 527) and tags.dtype == np.float32
    assert np.isfinite(tags).all() and (tags > 0).all() and (tags < 1).all()
    np.testing.assert_allclose(enc.embed_batch([batch[0]])["beats_tags"][0], tags[0], atol=1e-5)  # padding-free
    assert enc.tag_labels[:2] == ["/m/tag0", "/m/tag1"] and enc.describe()["tags"] == 527


def test_checkpoint_with_bias_table_only_on_layer_0_loads(tmp_path):
    from simsearch.encoders.beats_model import load_beats_checkpoint

    model, cfg = _tiny_model(n_layers=2)
    sd = model.state_dict()
    del sd["encoder.layers.1.self_attn.relative_attention_bias.weight"]
    torch.save({"cfg": cfg, "model": sd}, tmp_path / "l0.pt")
    loaded, _, labels = load_beats_checkpoint(tmp_path / "l0.pt")
    assert labels is None
    torch.testing.assert_close(loaded.encoder.layers[1].self_attn.relative_attention_bias.weight,
                               sd["encoder.layers.0.self_attn.relative_attention_bias.weight"])


def test_missing_checkpoint_messages(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"BEATs_iter3_plus_AS2M\.pt.*--checkpoint"):
        get_encoder("beats", checkpoint=str(tmp_path / "nope.pt"), device="cpu")
    with pytest.raises(ModelNotFoundError, match="--checkpoint"):
        get_encoder("beats", device="cpu")  # no default checkpoint
    with pytest.raises(ModelNotFoundError, match="hub id"):
        get_encoder("beats", checkpoint="microsoft/beats-iter3", device="cpu")
    with pytest.raises(ModelNotFoundError, match="is a folder"):
        get_encoder("beats", checkpoint=str(tmp_path), device="cpu")


def test_wrong_checkpoint_messages(tmp_path):
    model, cfg = _tiny_model()
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(ModelNotFoundError, match=r"missing top-level key\(s\) 'cfg', 'model'.*bare state dict"):
        get_encoder("beats", checkpoint=str(tmp_path / "bare.pt"), device="cpu")

    sd = model.state_dict()
    sd.pop("encoder.layers.1.fc2.weight")
    sd["quantize.embedding.weight"] = torch.zeros(3)
    torch.save({"cfg": cfg, "model": sd}, tmp_path / "other.pt")
    with pytest.raises(ModelNotFoundError, match=r"missing keys 'encoder\.layers\.1\.fc2\.weight'.*"
                                                 r"unexpected keys 'quantize\.embedding\.weight'"):
        get_encoder("beats", checkpoint=str(tmp_path / "other.pt"), device="cpu")

    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelNotFoundError, match="could not be read as a PyTorch checkpoint"):
        get_encoder("beats", checkpoint=str(tmp_path / "junk.pt"), device="cpu")

    torch.save({"cfg": {**cfg, "encoder_ffn_embed_dim": 96}, "model": model.state_dict()}, tmp_path / "shape.pt")
    with pytest.raises(ModelNotFoundError, match="do not fit"):
        get_encoder("beats", checkpoint=str(tmp_path / "shape.pt"), device="cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_matches_cpu_fp32(tiny_ft_ckpt):
    batch = [tone(440, 2.0), noise(3.0, seed=11), tone(90, 0.7, seed=12)]
    cpu = get_encoder("beats", checkpoint=str(tiny_ft_ckpt), device="cpu").embed_batch(batch)
    gpu = get_encoder("beats", checkpoint=str(tiny_ft_ckpt), device="cuda").embed_batch(batch)
    for i in range(len(batch)):
        assert _cos(cpu["embedding"][i], gpu["embedding"][i]) >= 0.99
    np.testing.assert_allclose(cpu["beats_tags"], gpu["beats_tags"], atol=0.02)


def test_new_index_stores_the_reference_embedding_of_the_file(tiny_ckpt, tmp_path):
    """BEATs gets its reference input by default (no loudness / trim): each stored vector is the pooled output of
    the model on the decoded file itself. Explicit flags still condition it, and are recorded."""
    import soundfile as sf

    from simsearch.encoders.beats_model import beats_fbank, load_beats_checkpoint
    from simsearch.indexing.job import run_index
    from simsearch.indexing.options import IndexOptions
    from simsearch.search.index import Index

    src = tmp_path / "src"
    src.mkdir()
    x = np.concatenate([np.zeros(8000, np.float32), 0.05 * tone(440, 3.0), 0.002 * noise(0.5, seed=4)])
    sf.write(src / "quiet_late.wav", x, 16000, subtype="FLOAT")  # a late start at about -32 dBFS: both would act
    run_index(src, tmp_path / "ix", IndexOptions(encoder="beats", checkpoint=str(tiny_ckpt), progress=False,
                                                 num_workers=1))
    index = Index.open(tmp_path / "ix", device="cpu")
    opts = index.info["encoder"]["options"]
    assert opts["loudness"] is None and opts["trim"] is None
    model, _, _ = load_beats_checkpoint(tiny_ckpt)
    with torch.no_grad():
        ref = model(beats_fbank(torch.from_numpy(x)[None])).hidden.mean(dim=1)[0].numpy()
    stored = index.embeddings()[0]
    np.testing.assert_allclose(stored, ref / np.linalg.norm(ref), atol=1e-6)

    run_index(src, tmp_path / "cond", IndexOptions(encoder="beats", checkpoint=str(tiny_ckpt), progress=False,
                                                   num_workers=1, loudness=-40, trim=40))
    cond = Index.open(tmp_path / "cond", device="cpu")
    assert cond.info["encoder"]["options"]["loudness"] == -40.0 and cond.info["encoder"]["options"]["trim"] == 40.0
    assert cond.encoder.loudness == -40.0 and np.abs(cond.embeddings()[0] - stored).max() > 1e-3
