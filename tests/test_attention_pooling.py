"""Attention (MIL) pooling for the probe: where a file's label is one short event among many other windows, the
trained gated attention finds that window and beats the mean of the windows; it saves, loads and labels clips."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import noise, tone, write

from simsearch.classify.label import classify
from simsearch.classify.probe import PROBE_META, fit_attention_probe, fit_probe, load_probe, save_probe
from simsearch.cli.core import main
from simsearch.errors import SimsearchError
from simsearch.search.index import Index
from simsearch.vectors import pooled

DIM, WINDOWS = 16, 16


def event_files(n: int, seed: int) -> tuple[list[np.ndarray], list[str], list[int]]:
    """Files of WINDOWS window vectors, one of which holds the event: a marker direction plus +-3 along the label
    axis (the label is its sign). The other windows are noise, with +-3 at random along a third axis. In a file's
    mean the label is diluted sixteenfold under the noise of fifteen windows; in the event window it stands alone."""
    rng = np.random.default_rng(seed)
    marker, axis, other = np.eye(DIM)[0], np.eye(DIM)[1], np.eye(DIM)[2]
    bags, labels, where = [], [], []
    for _ in range(n):
        y = int(rng.integers(2))
        x = rng.standard_normal((WINDOWS, DIM)) + 3.0 * rng.choice([-1.0, 1.0], size=(WINDOWS, 1)) * other
        t = int(rng.integers(WINDOWS))
        x[t] = rng.standard_normal(DIM) + 4.0 * marker + 3.0 * (2 * y - 1) * axis
        bags.append(x.astype(np.float32))
        labels.append("up" if y else "down")
        where.append(t)
    return bags, labels, where


def test_attention_finds_the_event_window_and_beats_the_mean():
    from simsearch.classify.mil import pool_bag

    train, ytrain, _ = event_files(400, seed=0)
    test, ytest, where = event_files(200, seed=1)
    attn = fit_attention_probe(train, ytrain, seed=0)
    mean = fit_probe(np.concatenate([pooled(b) for b in train]), ytrain, folds=3)
    acc_attn = np.mean([attn.classes[int(np.argmax(attn.scores_windows(b)))] == y for b, y in zip(test, ytest)])
    acc_mean = np.mean(mean.predict(np.concatenate([pooled(b) for b in test])) == np.array(ytest))
    assert acc_attn >= 0.9, acc_attn
    assert acc_mean <= 0.8, acc_mean
    assert acc_attn - acc_mean >= 0.15, (acc_attn, acc_mean)
    # the pooling weights sit on the event window: far above the uniform 1/16 the mean gives it
    arrays = {"mean": attn.mean, "scale": attn.scale, **attn.attention}
    weights = [pool_bag(b, arrays)[1] for b in test]
    assert np.mean([int(np.argmax(w)) == t for w, t in zip(weights, where)]) >= 0.4  # chance: 1/16
    assert np.median([w[t] for w, t in zip(weights, where)]) >= 4 / WINDOWS


def test_attention_probe_saves_and_loads_the_same_scores(tmp_path):
    bags, labels, _ = event_files(60, seed=2)
    probe = fit_attention_probe(bags, labels, seed=0)
    save_probe(probe, tmp_path)
    back = load_probe(tmp_path)
    assert back.pooling == "attention" and back.classes == probe.classes
    assert json.loads((tmp_path / PROBE_META).read_text())["pooling"] == "attention"
    for b in bags[:5]:
        np.testing.assert_allclose(back.scores_windows(b), probe.scores_windows(b), atol=1e-6)
    with pytest.raises(SimsearchError, match="expects 16-d"):
        back.scores_windows(np.zeros((3, 8), np.float32))


def test_probe_command_trains_attention_over_an_indexs_windows(tmp_path):
    """Long files of noise with one short tone burst whose pitch is the label, indexed in 1-s windows."""
    root = tmp_path / "src"
    for i in range(6):
        for label, freq in (("low", 300.0), ("high", 3000.0)):
            x = noise(6.0, seed=10 * i + len(label), amp=0.1)
            at = 16000 * (i % 5)
            x[at:at + 16000] += tone(freq + 20 * i, 1.0, seed=i)
            write(root / label / f"{label}{i}.wav", x)
    ix = tmp_path / "ix"
    assert main(["index", str(root), "--out", str(ix), "--encoder", "spectral", "--window", "1", "--hop", "1",
                 "--no-fingerprint", "--device", "cpu"]) == 0
    assert main(["probe", str(ix), "--pooling", "attention"]) == 0
    probe = load_probe(ix)
    assert probe.pooling == "attention" and probe.meta["n_files"] == 12 and probe.meta["n_windows"] == 72
    index = Index.open(ix, device="cpu")
    out = classify(index, str(root / "high" / "high3.wav"), method="probe")
    assert out[0]["label"] == "high"
    assert main(["probe", str(ix), "--pooling", "mean"]) == 0  # the mean probe replaces it
    assert load_probe(ix).pooling == "mean"


def test_multi_label_attention_probe_gives_one_sigmoid_per_label():
    bags, labels, _ = event_files(80, seed=3)
    tagged = [[y, "event"] if i % 2 else [y] for i, y in enumerate(labels)]
    probe = fit_attention_probe(bags, tagged, multi_label=True, seed=0)
    assert probe.multi_label and probe.classes == ["down", "event", "up"]
    s = probe.scores_windows(bags[0])
    assert s.shape == (3,) and np.all((s > 0) & (s < 1))


def test_eval_reports_the_attention_rung_beside_the_mean(tmp_path):
    """`simsearch eval --attention`: the same encoder's probe over each file's windows by trained attention, on the
    same splits, as a row of the report with a note comparing it with the mean."""
    root = tmp_path / "src"
    for i in range(8):
        for label, freq in (("low", 300.0), ("high", 3000.0)):
            x = noise(6.0, seed=10 * i + len(label), amp=0.1)
            at = 16000 * (i % 5)
            x[at:at + 16000] += tone(freq + 20 * i, 1.0, seed=i)
            write(root / label / f"{label}{i}.wav", x)
    out = tmp_path / "eval"
    assert main(["eval", str(root), "--encoders", "spectral", "--window", "1", "--hop", "1", "--folds", "2",
                 "--attention", "--out", str(out), "-q"]) == 0
    report = json.loads((out / "report.json").read_text())["encoders"]
    attn, mean = report["spectral (attention pooling)"], report["spectral"]
    assert attn["rung"] == "attention" and attn["n_test"] == mean["n_test"] == 16
    assert attn["probe_accuracy"] >= 0.75
    assert "Attention pooling of spectral's windows" in (out / "report.md").read_text()
