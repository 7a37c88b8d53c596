"""Fine-tuning (the ladder's third rung): training, the checkpoint folder, index/classify with it, resume, eval rung."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import labelled_clip, write, write_labelled
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).parent))
import tiny_models  # noqa: E402

from simsearch.classify.finetune import CHECKPOINTS, META, FinetuneSettings, finetune_files, load_finetuned
from simsearch.cli.core import main
from simsearch.errors import ModelNotFoundError, SimsearchError
from simsearch.indexing.job import run_index
from simsearch.indexing.options import IndexOptions
from simsearch.search.index import Index

CLASSES = ("low", "high", "hiss")


def _clip(cls: str, i: float, seconds: float = 1.0) -> np.ndarray:
    return labelled_clip(cls, i, seconds, seed=int(i * 10))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """3 classes x 6 one-second clips in sub-folders (labels from the folder names)."""
    return write_labelled(tmp_path_factory.mktemp("finetune") / "corpus", CLASSES)


@pytest.fixture(scope="module")
def files(corpus: Path) -> tuple[list[str], list[str]]:
    paths = sorted(str(p) for p in corpus.rglob("*.wav"))
    return paths, [Path(p).parent.name for p in paths]


@pytest.fixture(scope="module")
def w2v(tmp_path_factory) -> Path:
    return tiny_models.build_wav2vec2(tmp_path_factory.mktemp("w2v") / "model", feat_extract_norm="layer")


class Capture(TrainerCallback):
    """Trainer callback that keeps the trained model (after the best epoch is loaded back)."""

    def on_train_end(self, args, state, control, model=None, **kw):
        self.model = model


class KillAtFirstSave(TrainerCallback):
    """Trainer callback that stops the run like a kill right after its first checkpoint is written."""

    def on_save(self, *a, **kw):
        raise KeyboardInterrupt


class CountEpochs(TrainerCallback):
    """Trainer callback that counts the epochs a run trains."""

    n = 0

    def on_epoch_begin(self, *a, **kw):
        self.n += 1


def _settings(encoder: str, checkpoint: str | None = None, **kw) -> FinetuneSettings:
    base = dict(epochs=3, batch_size=6, lr=1e-3, device="cpu", progress=False, crop_s=1.0, seed=0)
    return FinetuneSettings(encoder=encoder, checkpoint=checkpoint, **{**base, **kw})


def _same_logits(model, out: Path, waves: list[np.ndarray]) -> None:
    """The in-memory trained model and the reloaded folder (encoder via its loader + head) agree on every clip."""
    import torch

    ck = load_finetuned(out)
    enc = ck.encoder("cpu")
    emb = enc.embed_batch(waves)["embedding"]  # conditioned and padded as `simsearch index` does
    ready = [enc.condition(x) for x in waves]
    model.eval()
    with torch.no_grad():
        batch = model.backbone.collate(ready)
        probs = torch.softmax(model(batch["inputs"], batch["lengths"])["logits"], dim=1).numpy()
    np.testing.assert_allclose(ck.scores(emb), probs, atol=2e-4)


@pytest.mark.parametrize("arch", ["wav2vec2", "whisper"])
def test_tiny_hf_training_loss_goes_down_and_checkpoint_reloads(arch, files, w2v, tmp_path) -> None:
    paths, labels = files
    ckpt = w2v if arch == "wav2vec2" else tiny_models.build_whisper(tmp_path / "whisper")
    cap = Capture()
    out = tmp_path / "ft"
    meta = finetune_files(paths, labels, out, _settings(arch, str(ckpt), epochs=4 if arch == "wav2vec2" else 2,
                                                        augment=False), callbacks=[cap])
    if arch == "wav2vec2":
        assert meta["train_loss"][-1] < meta["train_loss"][0]  # a random encoder: the head + encoder learn
    assert meta["classes"] == sorted(CLASSES) and meta["n_train"] + meta["n_val"] == len(paths)
    assert {"config.json", "model.safetensors", "preprocessor_config.json", META, "head.safetensors"} <= \
        {p.name for p in out.iterdir()}
    assert not (out / CHECKPOINTS).exists()  # resume checkpoints are dropped once the folder is complete
    for key in ("encoder", "base_checkpoint", "epochs", "lr", "seed", "val_metric", "wall_s", "peak_rss_mb"):
        assert key in meta
    _same_logits(cap.model, out, [_clip(c, 0.5) for c in CLASSES])


def test_beats_trains_and_its_checkpoint_folder_reloads(files, tmp_path) -> None:
    paths, labels = files
    base = tiny_models.build_beats(tmp_path)
    cap, out = Capture(), tmp_path / "ft"
    meta = finetune_files(paths, labels, out, _settings("beats", str(base), epochs=4, augment=False), callbacks=[cap])
    assert meta["train_loss"][-1] < meta["train_loss"][0]
    assert sorted(p.name for p in out.iterdir()) == ["beats.pt", "finetune.json", "head.safetensors", "run.json"]
    _same_logits(cap.model, out, [_clip(c, 0.5, seconds=s) for c, s in zip(CLASSES, (0.1, 1.0, 2.2))])


def test_multi_label_head_scores_each_label(files, w2v, tmp_path) -> None:
    paths, labels = files
    tags = [f"{c};{'noise' if c == 'hiss' else 'tone'}" for c in labels]
    meta = finetune_files(paths, [t.split(";") for t in tags], tmp_path / "ml",
                          _settings("wav2vec2", str(w2v), epochs=2, multi_label=True))
    assert meta["multi_label"] and meta["classes"] == ["high", "hiss", "low", "noise", "tone"]
    assert meta["val_metric"] == "map"
    ck = load_finetuned(tmp_path / "ml")
    scores = ck.scores(ck.encoder("cpu").embed_batch([_clip("low", 0.5)])["embedding"])
    assert scores.shape == (1, 5) and ((scores > 0) & (scores < 1)).all()  # independent sigmoids, not a softmax


def test_resume_after_kill_continues_to_the_same_weights(files, w2v, tmp_path) -> None:
    paths, labels = files
    whole = finetune_files(paths, labels, tmp_path / "whole", _settings("wav2vec2", str(w2v), epochs=3))
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        finetune_files(paths, labels, out, _settings("wav2vec2", str(w2v), epochs=3), callbacks=[KillAtFirstSave()])
    assert list((out / CHECKPOINTS).glob("checkpoint-*")) and not (out / META).exists()
    epochs = CountEpochs()
    resumed = finetune_files(paths, labels, out, _settings("wav2vec2", str(w2v), epochs=3), callbacks=[epochs])
    assert resumed["resumed"] and resumed["epochs_run"] == whole["epochs_run"] == 3
    assert epochs.n == 2  # the first epoch came from the checkpoint, not trained again
    a, b = load_finetuned(tmp_path / "whole"), load_finetuned(out)
    np.testing.assert_allclose(a.weight, b.weight, atol=1e-6)  # seeded crops, sampler and RNG state carry over
    assert resumed["val_history"] == whole["val_history"]
    # the finished folder answers a re-run at once; other settings are refused rather than mixed in
    assert finetune_files(paths, labels, out, _settings("wav2vec2", str(w2v), epochs=3))["wall_s"] == resumed["wall_s"]
    with pytest.raises(SimsearchError, match="other settings"):
        finetune_files(paths, labels, out, _settings("wav2vec2", str(w2v), epochs=4))


@pytest.fixture(scope="module")
def yamnet_run(corpus: Path, tmp_path_factory):
    """An index of the corpus, fine-tuned with the real YAMNet weights through the CLI."""
    root = tmp_path_factory.mktemp("yamnet_ft")
    run_index(corpus, root / "idx", IndexOptions(encoder="spectral", progress=False, num_workers=0, fingerprint=False))
    out = root / "ckpt"
    assert main(["finetune", str(root / "idx"), "--encoder", "yamnet-torch", "--out", str(out), "--epochs", "2",
                 "--batch-size", "6", "--crop", "1", "--device", "cpu", "-q"]) == 0
    return root, out


def test_yamnet_checkpoint_indexes_and_classifies(yamnet_run, corpus: Path, capsys) -> None:
    root, out = yamnet_run
    meta = json.loads((out / META).read_text())
    assert meta["encoder"] == "yamnet-torch" and (out / "yamnet_torch.safetensors").is_file()
    common = ["--encoder", "yamnet-torch", "--no-fingerprint", "--device", "cpu", "-q", "--workers", "0"]
    assert main(["index", str(corpus), "--out", str(root / "frozen"), *common]) == 0
    assert main(["index", str(corpus), "--out", str(root / "tuned"), "--checkpoint", str(out), *common]) == 0
    frozen, tuned = Index.open(root / "frozen", device="cpu"), Index.open(root / "tuned", device="cpu")
    assert tuned.info["encoder"]["checkpoint"] == str(out.resolve()) and tuned.info["encoder"]["quantize"] is False
    a, b = frozen.embeddings(), tuned.embeddings()
    assert list(frozen.rows["path"]) == list(tuned.rows["path"])
    assert np.min(np.sum(a * b, axis=1)) < 0.9999  # the fine-tuned weights embed differently
    capsys.readouterr()
    for cls in CLASSES:
        query = write(root / "queries" / f"{cls}.wav", _clip(cls, 2.5))
        assert main(["classify", str(root / "tuned"), "--audio", str(query), "--method", "finetuned", "--json",
                     "--device", "cpu"]) == 0
        scores = json.loads(capsys.readouterr().out)
        assert scores[0]["label"] == cls and {s["label"] for s in scores} == set(CLASSES)
        assert sum(s["score"] for s in scores) == pytest.approx(1.0, abs=1e-3)


def test_yamnet_checkpoint_reloads_with_the_same_logits(files, tmp_path) -> None:
    paths, labels = files
    cap = Capture()
    finetune_files(paths, labels, tmp_path / "ft", _settings("yamnet-torch", epochs=1, lr=1e-4), callbacks=[cap])
    _same_logits(cap.model, tmp_path / "ft", [_clip(c, 0.5, seconds=s) for c, s in zip(CLASSES, (0.5, 1.0, 2.2))])


def test_missing_or_wrong_folder_is_a_clear_error(yamnet_run, corpus: Path, tmp_path, capsys) -> None:
    root, out = yamnet_run
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_finetuned(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match=f"no {META}"):
        load_finetuned(tmp_path / "empty")
    argv = ["index", str(corpus), "--out", str(tmp_path / "i"), "--encoder", "yamnet-torch", "-q"]
    assert main([*argv, "--checkpoint", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([*argv, "--checkpoint", str(tmp_path / "empty")]) == 2
    assert "no yamnet_torch.safetensors" in capsys.readouterr().err
    # an index built without a fine-tuned folder has no head to classify with
    query = write(tmp_path / "q.wav", _clip("low", 1.5))
    assert main(["classify", str(root / "idx"), "--audio", str(query), "--method", "finetuned"]) == 2
    assert "not a fine-tuned folder" in capsys.readouterr().err


def test_eval_finetune_adds_the_rung_trained_on_training_folds_only(corpus: Path, w2v: Path, tmp_path, capsys) -> None:
    out = tmp_path / "eval"
    assert main(["eval", str(corpus), "--encoders", "spectral", "--finetune", "wav2vec2", "--finetune-checkpoint",
                 str(w2v), "--finetune-epochs", "2", "--finetune-lr", "1e-3", "--folds", "2", "--device", "cpu",
                 "--out", str(out), "-q", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rung = report["encoders"]["wav2vec2-finetuned"]
    assert {"spectral", "wav2vec2", "wav2vec2-finetuned"} == set(report["encoders"])  # frozen ENC added beside
    assert rung["rung"] == "fine-tuned" and rung["base_encoder"] == "wav2vec2"
    assert len(rung["fold_probe_accuracy"]) == 2 and len(rung["finetune_wall_s"]) == 2
    assert rung["n_test"] == 18 and 0 <= rung["probe_accuracy"] <= 1
    for fold in range(2):
        trained = {p for p, _ in json.loads((out / "finetune" / "wav2vec2" / f"fold-{fold}" / "checkpoint" /
                                             "run.json").read_text())["files"]}
        assert len(trained) == 9  # half the files: this fold's training files, none of its test files
    folds = [{p for p, _ in json.loads((out / "finetune" / "wav2vec2" / f"fold-{f}" / "checkpoint" / "run.json")
                                       .read_text())["files"]} for f in range(2)]
    assert not folds[0] & folds[1]  # 2 folds: each fold's training files are the other's test files
    md = (out / "report.md").read_text()
    assert "| wav2vec2-finetuned |" in md and "Fine-tuned rung" in md and "It cost" in md
    assert any("bought" in s for s in report["decision"])


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no CUDA GPU")
def test_yamnet_finetunes_on_cuda_in_bf16(files, tmp_path) -> None:
    paths, labels = files
    meta = finetune_files(paths, labels, tmp_path / "gpu", _settings("yamnet-torch", epochs=2, device="cuda"))
    assert meta["device"] == "cuda" and meta["precision"] == "bf16 autocast" and meta["peak_cuda_mb"] > 0
    ck = load_finetuned(tmp_path / "gpu")
    waves = [_clip(c, 0.5) for c in CLASSES]
    on_gpu, on_cpu = (ck.scores(ck.encoder(d).embed_batch(waves)["embedding"]) for d in ("cuda", "cpu"))
    np.testing.assert_allclose(on_gpu, on_cpu, atol=0.05)  # the checkpoint serves on either device


def test_files_that_went_since_indexing_are_left_out(tmp_path: Path) -> None:
    from simsearch.classify.finetune import index_files

    corpus = write_labelled(tmp_path / "corpus", CLASSES, n=2)
    run_index(corpus, tmp_path / "idx", IndexOptions(encoder="spectral", progress=False, num_workers=0))
    (corpus / "low" / "low0.wav").write_bytes(b"not audio any more")
    (corpus / "high" / "high1.wav").unlink()
    paths, labels = index_files(Index.open(tmp_path / "idx"))
    assert len(paths) == 4 and not any(p.endswith(("low0.wav", "high1.wav")) for p in paths)
    assert sorted(labels) == ["high", "hiss", "hiss", "low"]
