"""PE-Audio: audio and text towers in one space, through the real loading path (a tiny PeAudioModel built from a
config, saved with its processor, loaded back), answering text search and zero-shot labels as CLAP does."""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import noise, tone
from scipy.special import softmax

sys.path.insert(0, str(Path(__file__).parent))
import tiny_models as tm  # noqa: E402

from simsearch.audio.decode import decode  # noqa: E402
from simsearch.classify.label import classify  # noqa: E402
from simsearch.classify.zeroshot import PROMPT_TEMPLATE  # noqa: E402
from simsearch.cli.core import main  # noqa: E402
from simsearch.encoders import get_encoder  # noqa: E402
from simsearch.errors import ModelNotFoundError  # noqa: E402
from simsearch.search.index import Index  # noqa: E402
from simsearch.search.text import search_text, text_space  # noqa: E402
from simsearch.vectors import normalize  # noqa: E402

QUERY = "a dog barking in the distance"
LABELS = ["a dog barking", "rain falling on a tin roof", "a church bell ringing"]


def build_pe_audio(out: Path, seed: int = 9) -> Path:
    """Tiny PE-Audio: the real DAC strides (1920 samples = 40 ms per frame at 48 kHz), 2-layer towers of width 32."""
    from transformers import (
        ModernBertConfig,
        PeAudioConfig,
        PeAudioEncoderConfig,
        PeAudioFeatureExtractor,
        PeAudioModel,
        PeAudioProcessor,
    )

    tm._seed(seed)
    with tempfile.TemporaryDirectory() as bpe_dir:
        tok = tm.train_tiny_roberta_tokenizer(Path(bpe_dir))
    text = ModernBertConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=2, max_position_embeddings=128, pad_token_id=tok.pad_token_id,
                            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                            cls_token_id=tok.bos_token_id, sep_token_id=tok.eos_token_id)
    audio = PeAudioEncoderConfig(dac_config=dict(downsampling_ratios=[2, 8, 10, 12], encoder_hidden_size=4,
                                                 codebook_dim=8, hidden_size=16),
                                 hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                 head_dim=16)
    model = PeAudioModel(PeAudioConfig(text_config=text.to_dict(), audio_config=audio.to_dict()))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    PeAudioProcessor(feature_extractor=PeAudioFeatureExtractor(), tokenizer=tok).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_pe_audio(tmp_path_factory.mktemp("pe") / "pe_audio")


@pytest.fixture(scope="module")
def enc(tiny):
    return get_encoder("pe-audio", checkpoint=str(tiny), device="cpu")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pe_corpus")
    sf.write(root / "tone.wav", tone(440, 1.5, 16000, seed=1), 16000)
    sf.write(root / "chirp.wav", tm.chirp(2.0, 48000, seed=2), 48000)
    sf.write(root / "hiss.wav", noise(1.2, 22050, seed=3), 22050)
    return root


def test_audio_and_text_share_a_unit_norm_space_equal_to_transformers(enc, tiny):
    import torch
    from transformers import PeAudioModel, PeAudioProcessor

    clips = [tm.chirp(1.0, 48000, seed=1), tone(300, 0.6, 48000, seed=2)]
    audio, text = enc.embed_audio(clips), enc.embed_text(LABELS)
    assert audio.shape == (2, 32) and text.shape == (3, 32) and enc.text_space == "clap"
    np.testing.assert_allclose(np.linalg.norm(audio, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    model, proc = PeAudioModel.from_pretrained(tiny).eval(), PeAudioProcessor.from_pretrained(tiny)
    with torch.no_grad():
        for clip, vec in zip(clips, audio):  # one clip at a time: the reference has no batch to depend on
            feats = proc.feature_extractor(clip, sampling_rate=48000, return_tensors="pt")
            want = model.get_audio_embeds(feats["input_values"], padding_mask=feats["padding_mask"])[0]
            np.testing.assert_allclose(vec, torch.nn.functional.normalize(want, dim=-1).numpy(), atol=1e-5)
        tok = proc.tokenizer(LABELS, padding=True, return_tensors="pt")
        feats = proc.feature_extractor(clips[0], sampling_rate=48000, return_tensors="pt")
        out = model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"], **feats)
    np.testing.assert_allclose(text, torch.nn.functional.normalize(out.text_audio_embeds, dim=-1).numpy(), atol=1e-5)


def test_clip_embedding_does_not_depend_on_its_batch(enc):
    clips = [tone(300, 0.5, 48000, seed=1), noise(1.7, 48000, seed=2), tone(900, 0.5, 48000, seed=3)]
    together = enc.embed_audio(clips)
    for i, x in enumerate(clips):
        np.testing.assert_allclose(together[i], enc.embed_audio([x])[0], atol=1e-6)


@pytest.mark.parametrize("name", ["pe-audio", "pe-audio+spectral"])
def test_index_answers_text_search_and_zero_shot(name, tiny, enc, corpus, tmp_path):
    ix = tmp_path / "ix"
    assert main(["index", str(corpus), "--out", str(ix), "--encoder", name, "--checkpoint", str(tiny),
                 "--device", "cpu", "--no-fingerprint"]) == 0
    index = Index.open(ix, device="cpu")
    space = text_space(index.info)
    assert space.kind == "clap" and (space.start, space.stop) == (0, 32)
    paths = index.rows["path"].tolist()
    alone = normalize(np.stack([enc.embed_audio([decode(p, 48000)])[0] for p in paths]))
    np.testing.assert_allclose(index.embeddings()[:, :32] / space.scale, alone, atol=1e-5)

    want = dict(zip(paths, alone @ enc.embed_text([QUERY])[0]))
    hits = search_text(index, QUERY, k=3)
    assert [h["path"] for h in hits] == sorted(paths, key=lambda p: -want[p])
    for h in hits:
        assert h["score"] == pytest.approx(want[h["path"]], abs=1e-5)

    one = next(p for p in paths if p.endswith("chirp.wav"))
    prompts = enc.embed_text([PROMPT_TEMPLATE.format(v) for v in LABELS])
    expected = softmax(100.0 * prompts @ alone[paths.index(one)])
    got = {r["label"]: r["score"] for r in classify(index, one, method="zeroshot", labels=LABELS)}
    for label, p in zip(LABELS, expected):
        assert got[label] == pytest.approx(float(p), abs=1e-4)


def test_missing_or_incomplete_checkpoints_say_what_and_how(tiny, tmp_path, monkeypatch):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        get_encoder("pe-audio", checkpoint=str(tmp_path / "nope"), device="cpu")
    no_tok = tmp_path / "no_tokenizer"
    shutil.copytree(tiny, no_tok)
    for f in no_tok.glob("tokenizer*"):
        f.unlink()
    for f in ("vocab.json", "merges.txt", "special_tokens_map.json"):
        (no_tok / f).unlink(missing_ok=True)
    with pytest.raises(ModelNotFoundError, match="lacks a tokenizer"):
        get_encoder("pe-audio", checkpoint=str(no_tok), device="cpu")
    no_weights = tmp_path / "no_weights"
    shutil.copytree(tiny, no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match="no model weights"):
        get_encoder("pe-audio", checkpoint=str(no_weights), device="cpu")
    with pytest.raises(ModelNotFoundError, match="expects model_type"):
        get_encoder("pe-audio", checkpoint=str(tm.build_bert(tmp_path / "bert")), device="cpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="huggingface-cli download facebook/pe-av-large"):
        get_encoder("pe-audio", device="cpu")
