"""Evaluation harness: folds, per-file aggregation, metrics, the report files and the decision note."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import noise, tone, write

from simsearch.cli.core import main
from simsearch.errors import SimsearchError
from simsearch.evaluation.compare import Split, evaluate_set, labelled_set, make_splits, retrieval_metrics
from simsearch.evaluation.report import decision_note, rank, write_report

FSDD_NAMES = [f"{d}_{s}_{t}.wav" for d in range(3) for s in ("ann", "bob") for t in range(10)]


def _fsdd_labels(names: list[str]) -> list[str]:
    return [n.split("_")[0] for n in names]


def _tested_once(splits: list[Split], n: int) -> None:
    test = np.concatenate([s.test for s in splits])
    assert sorted(test) == list(range(n))
    for s in splits:
        assert not set(s.train) & set(s.test)


def test_fold_regex_keeps_keys_together() -> None:
    splits, how = make_splits(FSDD_NAMES, _fsdd_labels(FSDD_NAMES), folds=5, fold_regex=r"_(\d+)\.wav$")
    assert len(splits) == 5 and "10 keys" in how
    _tested_once(splits, len(FSDD_NAMES))
    take = np.array([int(n.rsplit("_", 1)[1][:-4]) for n in FSDD_NAMES])
    for s in splits:
        assert not set(take[s.test]) & set(take[s.train])  # a take never sits on both sides
    # ESC-50 style: as many keys as folds -> one fold per key.
    names = [f"{f}-{i}-A-{c}.wav" for f in range(1, 4) for i in range(4) for c in range(2)]
    splits, how = make_splits(names, [n[-5] for n in names], folds=5, fold_regex=r"^(\d)-")
    assert len(splits) == 3 and "one fold per key" in how


def test_fixed_test_regex_split() -> None:
    splits, how = make_splits(FSDD_NAMES, _fsdd_labels(FSDD_NAMES), test_regex=r"_[0-4]\.wav$")
    assert len(splits) == 1 and "fixed split" in how
    test_names = {FSDD_NAMES[i] for i in splits[0].test}
    assert test_names == {n for n in FSDD_NAMES if int(n.rsplit("_", 1)[1][:-4]) <= 4}


def test_stratified_folds_spread_small_classes() -> None:
    labels = ["big"] * 20 + ["small"] * 3
    names = [f"f{i}.wav" for i in range(len(labels))]
    splits, how = make_splits(names, labels, folds=5, seed=0)
    _tested_once(splits, len(labels))
    assert "fewer files than folds" in how
    small_folds = [s for s in splits if any(labels[i] == "small" for i in s.test)]
    assert len(small_folds) == 3  # each small-class file tested in its own fold, the other two train
    assert all(sum(labels[i] == "small" for i in s.test) == 1 for s in small_folds)
    again, _ = make_splits(names, labels, folds=5, seed=0)
    assert all(np.array_equal(a.test, b.test) for a, b in zip(splits, again))  # fixed seed


def test_split_errors_say_what_to_do() -> None:
    labels = _fsdd_labels(FSDD_NAMES)
    with pytest.raises(SimsearchError, match="does not match --fold-regex"):
        make_splits(FSDD_NAMES, labels, fold_regex=r"^x(\d)")
    with pytest.raises(SimsearchError, match="must pick some files"):
        make_splits(FSDD_NAMES, labels, test_regex=r"\.wav$")
    with pytest.raises(SimsearchError, match="not a valid regular expression"):
        make_splits(FSDD_NAMES, labels, fold_regex=r"(")


def test_labelled_set_averages_windows_and_drops_what_cannot_be_evaluated() -> None:
    rng = np.random.default_rng(0)
    paths = ["a1", "a1", "a1", "a2", "b1", "b2", "c1", "u1"]  # a1: three windows; c: one file; u: unlabelled
    emb = rng.standard_normal((len(paths), 4)).astype(np.float32)
    labels = {"a1": "a", "a2": "a", "b1": "b", "b2": "b", "c1": "c", "u1": None}
    data = labelled_set(paths, emb, labels.get)
    assert list(data.paths) == ["a1", "a2", "b1", "b2"]
    assert data.dropped == {"c": 1} and data.unlabelled == 1
    w = emb[:3] / np.linalg.norm(emb[:3], axis=1, keepdims=True)
    expected = w.mean(axis=0) / np.linalg.norm(w.mean(axis=0))
    np.testing.assert_allclose(data.x[0], expected, rtol=1e-5)


def _clusters(spread: float, n: int = 12, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((3, dim))
    x = np.concatenate([c + spread * rng.standard_normal((n, dim)) for c in centres])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.repeat(["x", "y", "z"], n)
    return [f"f{i}" for i in range(len(x))], x.astype(np.float32), labels


def test_retrieval_metrics_follow_separation() -> None:
    paths, x, labels = _clusters(0.05)
    mean_ap, p10 = retrieval_metrics(x, labels)
    assert mean_ap == pytest.approx(1.0) and p10 == pytest.approx(1.0)
    _, xn, _ = _clusters(3.0)
    mean_ap_noisy, p10_noisy = retrieval_metrics(xn, labels)
    assert mean_ap_noisy < mean_ap and p10_noisy < p10


def test_decision_note_matches_numbers(tmp_path: Path) -> None:
    results = {}
    for name, spread in (("spectral", 2.5), ("good", 0.1)):
        paths, x, labels = _clusters(spread, seed=1)
        data = labelled_set(paths, x, dict(zip(paths, labels)).get)
        splits, _ = make_splits(data.paths, data.labels, folds=3)
        results[name] = evaluate_set(name, data, splits, k=5)
    good, base = results["good"].metrics, results["spectral"].metrics
    assert good["probe_accuracy"] >= 0.98 and base["probe_accuracy"] < good["probe_accuracy"]
    assert rank(results) == ["good", "spectral"]
    note = " ".join(decision_note(results))
    assert "1. good" in note and "2. spectral" in note
    assert "Baseline first" in note and "beats the baseline" in note
    assert "already solved" in note and "does not look justified" in note
    # Without the strong encoder, the baseline alone is ranked and judged on its own numbers.
    alone = decision_note({"spectral": results["spectral"]})
    acc = max(base["probe_accuracy"], base["knn_accuracy"])
    verdict = "not solved" if acc < 0.9 else ("nearly solved" if acc < 0.98 else "already solved")
    assert any(f"handcrafted baseline the task is {verdict}" in s for s in alone)
    paths = write_report(results, {"src": "synthetic", "splits": "3 folds", "k": 5}, tmp_path / "r")
    assert json.loads(paths["json"].read_text())["ranking"] == ["good", "spectral"]


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory):
    """Long clips (several 1 s windows each) in 3 classes, evaluated with spectral and yamnet via the CLI."""
    root = tmp_path_factory.mktemp("eval")
    src = root / "src"
    for i in range(6):
        write(src / "low" / f"low{i}.wav", tone(180 + 20 * i, 2.5, seed=i))
        write(src / "high" / f"high{i}.wav", tone(2500 + 200 * i, 2.5, seed=10 + i))
        write(src / "hiss" / f"hiss{i}.wav", noise(2.5, seed=20 + i))
    out = root / "out"
    argv = ["eval", str(src), "--encoders", "spectral,yamnet", "--folds", "3", "--window", "1", "--out", str(out),
            "-q", "--json"]
    return src, out, argv


def test_eval_cli_writes_report(eval_run, capsys) -> None:
    src, out, argv = eval_run
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    report = json.loads((out / "report.json").read_text())
    assert report["encoders"] == printed["encoders"]
    for name in ("spectral", "yamnet"):
        m = report["encoders"][name]
        assert {"knn_accuracy", "probe_accuracy", "macro_f1", "map", "p_at_10"} <= set(m)
        assert m["n_files"] == 18  # per file, although every file gave several windows (rows)
        assert m["knn_accuracy"] > 0.9 and m["probe_accuracy"] > 0.9
    import pyarrow.parquet as pq

    rows = sum(pq.read_table(p).num_rows for p in (out / "cache" / "spectral" / "shards").glob("*.parquet"))
    assert rows > 18  # several windows per file in the cache, one vector per file in the evaluation
    expected = sorted(report["encoders"], key=lambda n: (-report["encoders"][n]["probe_accuracy"],
                                                          -report["encoders"][n]["knn_accuracy"],
                                                          -report["encoders"][n]["map"]))
    assert report["ranking"] == expected
    md = (out / "report.md").read_text()
    assert "| rank | encoder |" in md and "## Decision" in md and "Baseline first" in md
    assert md.index(f"| 1 | {expected[0]} |") < md.index(f"| 2 | {expected[1]} |")
    import matplotlib.image

    img = matplotlib.image.imread(out / "confusion_spectral.png")
    assert img.ndim == 3 and img.shape[1] > img.shape[0]  # two matrices side by side


def test_eval_rerun_reuses_cached_embeddings(eval_run, capsys) -> None:
    src, out, argv = eval_run
    if not (out / "report.json").exists():
        assert main(argv) == 0
    capsys.readouterr()
    shards = {p: os.stat(p).st_mtime_ns for p in (out / "cache").glob("*/shards/*.parquet")}
    before = json.loads((out / "report.json").read_text())
    assert main(argv) == 0
    assert {p: os.stat(p).st_mtime_ns for p in (out / "cache").glob("*/shards/*.parquet")} == shards
    after = json.loads((out / "report.json").read_text())
    assert after["encoders"]["spectral"]["knn_accuracy"] == before["encoders"]["spectral"]["knn_accuracy"]


def test_real_fsdd_subset_beats_chance(shared_data: Path, tmp_path: Path, capsys) -> None:
    rec = shared_data / "fsdd" / "recordings"
    files = sorted(p for p in rec.glob("*.wav") if int(p.stem.rsplit("_", 1)[1]) < 5)  # takes 0-4: 300 files
    if len(files) < 100:
        pytest.skip(f"FSDD recordings not found under {rec}")
    manifest = tmp_path / "fsdd.csv"
    manifest.write_text("path\n" + "\n".join(str(p) for p in files) + "\n")
    assert main(["eval", str(manifest), "--encoders", "spectral", "--label-regex", r"^(\d)_",
                 "--test-regex", r"_0\.wav$", "--out", str(tmp_path / "out"), "-q", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)["encoders"]["spectral"]
    assert m["n_classes"] == 10 and m["n_files"] == len(files) and m["n_test"] == len(files) // 5  # take 0 = test
    assert m["knn_accuracy"] > 0.5 and m["probe_accuracy"] > 0.5  # chance is 0.1
    assert m["p_at_10"] > 0.3
