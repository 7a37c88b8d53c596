"""Classify layer: kNN votes, linear probe (train/save/load, multi-label) and zero-shot, through API and CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA, labelled_clip, noise, tone, write, write_labelled

from simsearch.classify.knn import KNN_TEMPERATURE, knn_scores
from simsearch.classify.label import classify
from simsearch.classify.probe import C_GRID, PROBE_META, PROBE_WEIGHTS, fit_probe, load_probe
from simsearch.cli.core import main
from simsearch.errors import SimsearchError
from simsearch.indexing.job import run_index
from simsearch.indexing.options import IndexOptions
from simsearch.search.index import Index

CLASSES = ("low", "high", "noise")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """3 labelled classes x 6 clips in sub-folders, plus one unlabelled clip at the top (a copy of a query)."""
    root = write_labelled(tmp_path_factory.mktemp("classify") / "corpus", CLASSES)
    write(root / "unlabelled_high.wav", labelled_clip("high", 2.5, seed=10))
    return root


@pytest.fixture(scope="module")
def index_dir(corpus: Path) -> Path:
    out = corpus.parent / "idx"
    run_index(corpus, out, IndexOptions(encoder="spectral", progress=False, num_workers=0))
    return out


@pytest.fixture(scope="module")
def queries(corpus: Path) -> dict[str, Path]:
    """Held-out clips, one per class, that are not in the index."""
    return {cls: write(corpus.parent / "queries" / f"{cls}.wav", labelled_clip(cls, 3.5, seed=11)) for cls in CLASSES}


def test_knn_votes_are_similarity_weighted() -> None:
    rng = np.random.default_rng(0)
    q = rng.standard_normal(16).astype(np.float32)
    near = q + 0.05 * rng.standard_normal(16).astype(np.float32)
    far1, far2 = rng.standard_normal((2, 16)).astype(np.float32)
    classes, scores = knn_scores(q[None], np.stack([near, far1, far2]), [["a"], ["b"], ["b"]], k=3)
    s = dict(zip(classes, scores[0]))
    assert s["a"] > s["b"]  # one close neighbour outweighs two far ones
    assert scores.sum() == pytest.approx(1.0, abs=1e-6)
    # With equal similarities the weights are equal, so votes become plain counts.
    classes, scores = knn_scores(q[None], np.stack([q, q, q]), [["a"], ["b"], ["b"]], k=3,
                                 temperature=KNN_TEMPERATURE)
    assert dict(zip(classes, scores[0]))["b"] == pytest.approx(2 / 3, abs=1e-6)


def test_knn_classifies_held_out_clips_and_skips_unlabelled_rows(index_dir: Path, queries: dict, corpus: Path) -> None:
    index = Index.open(index_dir)
    for cls, path in queries.items():
        out = classify(index, str(path), method="knn", k=5)
        assert out[0]["label"] == cls
        assert [r["score"] for r in out] == sorted((r["score"] for r in out), reverse=True)
        assert sum(r["score"] for r in out) == pytest.approx(1.0, abs=1e-4)
    # The unlabelled row is this very clip; with k=1 it would win if unlabelled rows voted.
    out = classify(index, str(corpus / "unlabelled_high.wav"), method="knn", k=1)
    assert out[0] == {"label": "high", "score": 1.0}


def test_classify_cli_json_shape(index_dir: Path, queries: dict, capsys) -> None:
    assert main(["classify", str(index_dir), "--audio", str(queries["noise"]), "--json", "-k", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["label"] == "noise"
    assert all(set(r) == {"label", "score"} for r in out)


def test_probe_trains_saves_and_classifies(index_dir: Path, queries: dict, capsys) -> None:
    assert main(["probe", str(index_dir), "--folds", "3"]) == 0
    line = capsys.readouterr().out
    assert "single-label" in line and "18 files" in line and "3 labels" in line
    meta = json.loads((index_dir / PROBE_META).read_text())
    assert meta["C"] in C_GRID and meta["encoder"] == "spectral" and sorted(meta["classes"]) == sorted(CLASSES)
    with np.load(index_dir / PROBE_WEIGHTS, allow_pickle=False) as z:  # plain arrays, nothing to unpickle
        assert z["coef"].shape == (3, meta["dim"])
    index = Index.open(index_dir)
    for cls, path in queries.items():
        out = classify(index, str(path), method="probe")
        assert out[0]["label"] == cls
        assert sum(r["score"] for r in out) == pytest.approx(1.0, abs=1e-4)
    assert main(["classify", str(index_dir), "--audio", str(queries["low"]), "--method", "probe", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["label"] == "low"


def test_multi_label_probe_one_sigmoid_per_label(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    centres = {"low": rng.standard_normal(8), "high": rng.standard_normal(8), "noise": rng.standard_normal(8)}
    x, labels = [], []
    for cls, extra in (("low", ["tonal"]), ("high", ["tonal"]), ("noise", [])):
        for _ in range(12):
            x.append(centres[cls] + 0.3 * rng.standard_normal(8))
            labels.append([cls, *extra])
    probe = fit_probe(np.array(x), labels, multi_label=True, folds=3)
    assert probe.multi_label and sorted(probe.classes) == ["high", "low", "noise", "tonal"]
    assert probe.meta["cv_metric"] == "mAP" and probe.meta["cv_score"] > 0.9
    # One independent sigmoid per label: each label scores its own clips above the others.
    s = {c: dict(zip(probe.classes, probe.scores(centres[c][None])[0])) for c in centres}
    for label, members in (("low", ["low"]), ("high", ["high"]), ("noise", ["noise"]), ("tonal", ["low", "high"])):
        assert min(s[c][label] for c in members) > max(s[c][label] for c in centres if c not in members)


def test_multi_label_probe_from_manifest_cli(tmp_path: Path, capsys) -> None:
    rows = ["path,label"]
    for cls, tag in (("low", "low;tonal"), ("high", "high;tonal"), ("noise", "noise")):
        for i in range(5):
            rows.append(f"{write(tmp_path / f'{cls}{i}.wav', labelled_clip(cls, i))},{tag}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    run_index(tmp_path / "m.csv", tmp_path / "idx", IndexOptions(encoder="spectral", progress=False, num_workers=0))
    assert main(["probe", str(tmp_path / "idx"), "--multi-label", "--folds", "3"]) == 0
    assert "multi-label" in capsys.readouterr().out
    probe = load_probe(tmp_path / "idx")
    assert probe.multi_label and "tonal" in probe.classes
    out = classify(Index.open(tmp_path / "idx"), {"array": labelled_clip("high", 1.5, seed=9), "sampling_rate": 16000}, "probe")
    top2 = {r["label"] for r in out[:2]}
    assert top2 == {"high", "tonal"}


def test_user_errors_are_one_line(tmp_path: Path, corpus: Path, queries: dict, capsys) -> None:
    bare = tmp_path / "bare"
    write(bare / "a.wav", labelled_clip("low", 0))
    write(bare / "b.wav", labelled_clip("high", 0))
    run_index(bare, tmp_path / "idx", IndexOptions(encoder="spectral", progress=False, num_workers=0))
    assert main(["classify", str(tmp_path / "idx"), "--audio", str(queries["low"]), "--method", "probe"]) == 2
    assert "simsearch probe" in capsys.readouterr().err
    assert main(["probe", str(tmp_path / "idx")]) == 2
    assert "no labelled rows" in capsys.readouterr().err
    with pytest.raises(SimsearchError, match="no text space"):
        classify(Index.open(tmp_path / "idx"), str(queries["low"]), "zeroshot", labels=["a", "b"])
    with pytest.raises(SimsearchError, match="--labels is for"):
        classify(Index.open(tmp_path / "idx"), str(queries["low"]), "knn", labels=["a"])


@pytest.fixture(scope="module")
def yamnet_index(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("zs")
    src = root / "src"
    write(src / "tone.wav", tone(440, 2.0))
    write(src / "noise.wav", noise(2.0))
    run_index(src, root / "idx", IndexOptions(encoder="yamnet", progress=False, num_workers=0))
    return root / "idx"


def test_zero_shot_through_yamnet_tags(yamnet_index: Path, capsys) -> None:
    index = Index.open(yamnet_index)
    labels = ["sine wave", "white noise", "speech", "dog barking"]
    assert classify(index, {"array": tone(523, 2.0, seed=3), "sampling_rate": 16000}, "zeroshot",
                    labels=labels)[0]["label"] == "sine wave"
    assert classify(index, {"array": noise(2.0, seed=4), "sampling_rate": 16000}, "zeroshot",
                    labels=labels)[0]["label"] == "white noise"
    fsdd = SHARED_DATA / "fsdd" / "recordings"
    if not fsdd.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    clip = sorted(fsdd.glob("*.wav"))[0]
    assert main(["classify", str(yamnet_index), "--audio", str(clip), "--method", "zeroshot", "--json",
                 "--labels", ",".join(labels)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["label"] == "speech" and out[0]["score"] > 0.5
