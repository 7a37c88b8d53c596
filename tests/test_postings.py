"""Landmark postings on disk: the same match scores as the in-memory table for every kind, kept in step with the
shards through adds, removals, replacements, `simsearch rebuild` and a kill at every write step."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import crash_at_every_write, write

from simsearch.audio import fingerprint as fp
from simsearch.audio import landmark_kinds
from simsearch.audio.perturb import add_noise, pitch_shift
from simsearch.cli.core import main
from simsearch.indexing.job import run_index
from simsearch.indexing.options import IndexOptions
from simsearch.search.index import Index
from simsearch.search.landmarks import PostingsTable, load_landmark_table, match_scores
from simsearch.store import postings

SR = 16000
OPTS = {"encoder": "spectral", "progress": False, "num_workers": 0, "shard_rows": 3}


def melody(seed: int, seconds: float = 2.5) -> np.ndarray:
    """Random decaying notes (two harmonics each) at random times: every seed is a different recording."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = np.zeros(len(t), np.float32)
    for _ in range(int(seconds * 6)):
        start, length, f = rng.uniform(0, seconds - 0.3), rng.uniform(0.08, 0.3), rng.uniform(200, 1500)
        on = (t >= start) & (t < start + length)
        env = rng.uniform(0.2, 1.0) * np.exp(-(t[on] - start) * rng.uniform(5, 20))
        x[on] += (env * (np.sin(2 * np.pi * f * t[on]) + 0.5 * np.sin(4 * np.pi * f * t[on]))).astype(np.float32)
    return x


@pytest.fixture(scope="module")
def melodies():
    return [melody(i) for i in range(10)]


def in_memory(out) -> tuple[Index, object]:
    """The index as one from before postings sees it: every landmark in a table in memory."""
    ix = Index.open(out)
    ix.postings = None
    return ix, load_landmark_table(ix)


def assert_same_scores(out, queries: list[np.ndarray]) -> None:
    """Postings and the in-memory table give bit-identical scores to every row, for every query."""
    ix = Index.open(out)
    assert isinstance(ix.landmark_table, PostingsTable)
    plain, table = in_memory(out)
    kind = landmark_kinds.module(landmark_kinds.kind_of(ix.info["fingerprint"]))
    for q in queries:
        marks = kind.query_landmarks(q, SR)
        dense = table.scores(*marks)
        rows, scores = match_scores(ix, marks)
        np.testing.assert_array_equal(rows, np.flatnonzero(dense > 0))
        np.testing.assert_array_equal(scores, dense[rows])
        audio = {"array": q, "sampling_rate": SR}
        assert ix.search(audio=audio, k=4) == plain.search(audio=audio, k=4)


def listed(out: Path) -> set[str]:
    record = json.loads((out / "index.json").read_text())["postings"]
    return {s["name"] for s in record["segments"]}


def assert_tidy(out: Path) -> None:
    """The postings folder holds exactly the segments index.json names, two files each."""
    names = listed(out)
    assert sorted(p.name for p in (out / "postings").iterdir()) == sorted(
        [f"{n}.npy" for n in names] + [f"{n}.ids.npy" for n in names])


@pytest.mark.parametrize("kind", ["pairs", "triplets", "both"])
def test_postings_score_as_the_in_memory_table_for_every_kind(melodies, tmp_path, monkeypatch, kind):
    monkeypatch.setattr(postings, "SEGMENT_POSTINGS", 4000)  # several segments, each over a few shards
    src = tmp_path / "src"
    for i, x in enumerate(melodies):
        write(src / f"m{i}.wav", x)
    run_index(src, tmp_path / "ix", IndexOptions(**OPTS, landmarks=kind))
    assert len(listed(tmp_path / "ix")) >= 2
    assert_tidy(tmp_path / "ix")
    rng = np.random.default_rng(0)
    queries = [add_noise(melodies[1], 5.0, rng), melodies[4][SR // 2:], pitch_shift(melodies[6], SR, 1),
               add_noise(melodies[8], 0.0, rng, "pink")]
    assert_same_scores(tmp_path / "ix", queries)
    hit = Index.open(tmp_path / "ix").search(audio={"array": queries[0], "sampling_rate": SR}, k=1)[0]
    assert hit["path"].endswith("m1.wav") and hit["match"] >= fp.SAME_RECORDING


def test_adds_removals_and_replacements_stay_in_step(melodies, tmp_path, monkeypatch):
    src, out = tmp_path / "src", tmp_path / "ix"
    for i, x in enumerate(melodies[:6]):
        write(src / f"m{i}.wav", x)
    run_index(src, out, IndexOptions(**OPTS))
    first = listed(out)
    total = json.loads((out / "index.json").read_text())["postings"]["postings"]
    monkeypatch.setattr(postings, "SEGMENT_POSTINGS", total)  # the first segment counts as full: it is kept
    monkeypatch.setattr(postings, "DEAD", 0.9)  # ... even with a shard of its rows gone
    write(src / "m6.wav", melodies[6])  # added
    write(src / "m1.wav", melodies[9])  # replaced: m1's old recording is gone
    (src / "m2.wav").unlink()  # removed
    run_index(src, out, IndexOptions(**OPTS))
    assert first <= listed(out) and len(listed(out)) == len(first) + 1  # old segment kept, one new one written
    assert_tidy(out)
    ix = Index.open(out)
    stale = set(np.concatenate([np.asarray(s.ids) for s in ix.postings.segments])) - set(ix.rows["id"])
    assert stale  # the kept segment still holds the old rows ...
    rng = np.random.default_rng(1)
    for gone in (melodies[1], melodies[2]):  # ... but they match nothing
        hits = ix.search(audio={"array": add_noise(gone, 10.0, rng), "sampling_rate": SR}, k=3)
        assert all(h["match"] < fp.MIN_SCORE for h in hits), hits
    for i, x in [(6, melodies[6]), (1, melodies[9]), (3, melodies[3])]:
        hit = ix.search(audio={"array": add_noise(x, 10.0, rng), "sampling_rate": SR}, k=1)[0]
        assert hit["path"].endswith(f"m{i}.wav") and hit["match"] >= fp.SAME_RECORDING
    assert_same_scores(out, [add_noise(m, 5.0, rng) for m in melodies])


def test_rebuild_gives_an_old_index_its_postings(melodies, tmp_path, caplog, monkeypatch, capsys):
    src, out = tmp_path / "src", tmp_path / "ix"
    for i, x in enumerate(melodies[:4]):
        write(src / f"m{i}.wav", x)
    run_index(src, out, IndexOptions(**OPTS))
    info = json.loads((out / "index.json").read_text())
    del info["postings"]  # as written before postings existed
    (out / "index.json").write_text(json.dumps(info))
    shutil.rmtree(out / "postings")
    monkeypatch.setattr(fp, "MAX_IN_MEMORY", 10)
    query = {"array": add_noise(melodies[2], 5.0, np.random.default_rng(2)), "sampling_rate": SR}
    assert "match" not in Index.open(out).search(audio=query, k=1)[0]  # too big for memory: cosine alone ...
    assert f"simsearch rebuild {out}" in caplog.text  # ... and the warning says what builds the postings
    capsys.readouterr()
    assert main(["rebuild", str(out)]) == 0
    assert "landmark postings: " in capsys.readouterr().out
    assert_tidy(out)
    hit = Index.open(out).search(audio=query, k=1)[0]  # no limit on the postings path
    assert hit["path"].endswith("m2.wav") and hit["match"] >= fp.SAME_RECORDING




def test_a_kill_at_every_write_step_leaves_usable_postings(melodies, tmp_path):
    src, base = tmp_path / "src", tmp_path / "base"
    for i, x in enumerate(melodies[:5]):
        write(src / f"m{i}.wav", x)
    args = ["--encoder", "spectral", "-q", "--workers", "0", "--shard-rows", "2"]
    assert main(["index", str(src), "--out", str(base), *args]) == 0
    write(src / "m5.wav", melodies[5])
    write(src / "m0.wav", melodies[7])
    runs = crash_at_every_write(base, src, tmp_path, args)
    crashes = [Path(out) for _, out, code in runs if code == 70]
    assert runs[-1][2] == 0 and len(crashes) >= 6, runs
    rng = np.random.default_rng(3)
    queries = [add_noise(melodies[i], 5.0, rng) for i in (0, 5, 7)]
    for out in crashes:
        assert_same_scores(out, queries)  # old or new state: its postings agree with its shards
        assert main(["index", str(src), "--out", str(out), *args]) == 0
        assert_tidy(out)
        hit = Index.open(out).search(audio={"array": queries[2], "sampling_rate": SR}, k=1)[0]
        assert hit["path"].endswith("m0.wav") and hit["match"] >= fp.SAME_RECORDING


def test_search_reads_only_the_fields_ranking_needs(melodies, tmp_path):
    src, out = tmp_path / "src", tmp_path / "ix"
    for i, x in enumerate(melodies[:4]):
        write(src / ("a" if i % 2 else "b") / f"m{i}.wav", x)
    run_index(src, out, IndexOptions(**OPTS))
    ix = Index.open(out)
    query = {"array": add_noise(melodies[1], 5.0, np.random.default_rng(4)), "sampling_rate": SR}
    hits = ix.search(audio=query, k=3, filter={"label": "a"}, group_by_file=True)
    assert hits[0]["path"].endswith("m1.wav") and all(h["label"] == "a" for h in hits)
    assert "rows" not in ix.__dict__  # sha256, sample rate and metadata were never read ...
    assert set(ix.rows.columns) >= {"sha256", "metadata"} and len(ix.rows) == len(ix)  # ... until asked for
    assert ix.search(audio=query, k=3, filter={"sample_rate": 16000})


def test_a_memory_budget_keeps_vectors_on_disk(tmp_path):
    from simsearch.indexing.job import rebuild
    from simsearch.indexing.sources import Item
    from simsearch.indexing.writer import ShardWriter
    from simsearch.store import planner
    from simsearch.store.folder import IndexDir

    dim, n = 32, 2000
    x = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    plain = {"nlist": planner.nlist_for(n), "m": planner.pq_m_for(dim, dim / 4), "nbits": 8, "refine": "none"}
    budget = planner.memory_estimate("ivfpq", plain, n, dim) + 64  # room for plain IVF-PQ, not for the vectors
    d = IndexDir(tmp_path / "ix")
    enc = {"name": "spectral", "checkpoint": None, "sample_rate": 16000, "dim": dim, "pooling": "meanstd", "options": {}}
    with d.lock():
        w = ShardWriter(d, dim, {}, 500, 0)
        for i in range(n):
            w.add_file(Item(f"/data/{i}.wav", None, {}), "sha", 16000, [(0.0, 1.0)], [{"embedding": x[i]}])
        w.flush()
        rebuild(d, enc_record=enc, index_type="ivfpq", max_memory=budget)
    ix = Index.open(d.root)
    assert ix.info["faiss"]["params"]["refine"] == "none"
    ids = np.array([1999, 3, 1200, 3])
    want = x[ids] / np.linalg.norm(x[ids], axis=1, keepdims=True)
    np.testing.assert_allclose(ix.vectors_for(ids), want, rtol=1e-5, atol=1e-6)
    assert "_stored_vectors" not in ix.__dict__  # read from the shards holding them, not all loaded


def test_damaged_postings_say_so_and_rebuild_repairs_them(melodies, tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "ix"
    for i, x in enumerate(melodies[:3]):
        write(src / f"m{i}.wav", x)
    run_index(src, out, IndexOptions(**OPTS))
    seg = sorted((out / "postings").glob("seg-*[0-9].npy"))[0]
    seg.write_bytes(seg.read_bytes()[:200])  # cut short
    capsys.readouterr()
    assert main(["search", str(out), "--audio", str(src / "m1.wav")]) == 2
    err = capsys.readouterr().err
    assert "landmark postings" in err and f"simsearch rebuild {out}" in err
    assert main(["rebuild", str(out)]) == 0
    assert_tidy(out)
    hit = Index.open(out).search(audio={"array": melodies[1], "sampling_rate": SR}, k=1)[0]
    assert hit["path"].endswith("m1.wav") and hit["match"] >= fp.SAME_RECORDING


def test_a_postings_budget_reads_the_rarest_hashes_and_still_finds_the_copy(melodies, tmp_path, monkeypatch):
    from simsearch.search import landmarks

    src = tmp_path / "src"
    for i, x in enumerate(melodies):
        write(src / f"m{i}.wav", x)
    out = tmp_path / "idx"
    run_index(src, out, IndexOptions(**OPTS))
    ix = Index.open(out)
    copy = add_noise(melodies[3], 15, np.random.default_rng(0))
    marks = fp.query_landmarks(copy, SR)
    every = ix.postings.lookup(marks[0])
    budget = len(every[0]) // 3
    h, ids, t = ix.postings.lookup(marks[0], budget)
    assert 0 < len(h) <= budget
    # whole hashes are kept or left out, and every kept one is at most as common as any left out
    per_hash = dict(zip(*np.unique(every[0], return_counts=True)))
    kept = set(h.tolist())
    assert all(per_hash[k] == n for k, n in zip(*np.unique(h, return_counts=True)))
    assert max(per_hash[k] for k in kept) <= min(per_hash[k] for k in set(per_hash) - kept)
    assert len(ix.postings.lookup(marks[0], len(every[0]))[0]) == len(every[0])  # within the budget: all

    monkeypatch.setattr(landmarks, "POSTINGS_BUDGET", budget)
    hits = Index.open(out).search(audio={"array": copy, "sampling_rate": SR}, k=3)
    assert hits[0]["path"].endswith("m3.wav") and hits[0]["match"] >= fp.SAME_RECORDING
