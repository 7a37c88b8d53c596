"""An index exported to an embedded Milvus (milvus-lite, a temp .db file) answers as the FAISS index does."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import write

pytest.importorskip("pymilvus", reason="Milvus support is the milvus extra: pip install -e '.[milvus]'")
pytest.importorskip("milvus_lite", reason="the embedded Milvus is the milvus extra: pip install -e '.[milvus]'")

from simsearch.audio import fingerprint
from simsearch.cli.core import main
from simsearch.search.index import Index
from simsearch.search.milvus_index import MilvusIndex
from simsearch.store.milvus_store import filter_expr

SR = 16000


def sound(seed: int, seconds: float = 2.0) -> np.ndarray:
    """A few gliding partials with a ragged envelope: distinct recordings with plenty of spectral peaks."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = np.zeros_like(t)
    for _ in range(5):
        f0, f1 = rng.uniform(150, 3500, 2)
        x += rng.uniform(0.2, 1) * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds)))
    env = np.repeat(rng.uniform(0.1, 1, int(seconds * 20)), len(t) // int(seconds * 20) + 1)[:len(t)]
    return (0.3 * x * env / np.abs(x).max()).astype(np.float32)


def build(tmp_path, n: int = 24):
    """A manifest of n clips (3 labels, one unlabelled, a 'take' and 'mic' metadata column, two sample rates)."""
    src, recs = tmp_path / "src", []
    for i in range(n):
        sr = SR if i % 4 else 22050
        x = sound(i, 1.0 + (i % 3))
        if sr != SR:
            x = np.interp(np.arange(int(len(x) * sr / SR)) * SR / sr, np.arange(len(x)), x).astype(np.float32)
        p = write(src / ["drums", "keys", "fx"][i % 3] / f"clip_{i:02d}.wav", x, sr)
        recs.append({"path": str(p), "label": None if i == 5 else ["kick", "pad", "hit"][i % 3],
                     "take": i % 5, "mic": "sm57" if i % 2 else 'say "hi"'})
    manifest = tmp_path / "m.csv"
    pd.DataFrame(recs).to_csv(manifest, index=False)
    return manifest


def index(manifest, out) -> None:
    assert main(["index", str(manifest), "--out", str(out), "--encoder", "spectral", "-q", "--workers", "1",
                 "--index-type", "flat"]) == 0


@pytest.fixture
def exported(tmp_path):
    manifest = build(tmp_path)
    out, db = tmp_path / "ix", tmp_path / "milvus.db"
    index(manifest, out)
    assert main(["export", str(out), "--to", "milvus", str(db), "--index-type", "FLAT", "-q"]) == 0
    return manifest, out, db


def test_vector_search_matches_exact_faiss(exported):
    _, out, db = exported
    ix, mv = Index.open(out), MilvusIndex.open(out, str(db))
    assert len(mv) == len(ix) == 24
    rng = np.random.default_rng(0)
    queries = [*ix.embeddings()[:6], *rng.standard_normal((4, ix.info["dim"]))]
    for q in queries:
        a, b = ix.search_vector(q, 10), mv.search_vector(q, 10)
        assert [r["id"] for r in a] == [r["id"] for r in b]
        assert np.allclose([r["score"] for r in a], [r["score"] for r in b], atol=1e-4)
        assert [(r["path"], r["label"], r["offset_s"]) for r in a] == [(r["path"], r["label"], r["offset_s"]) for r in b]
    a, b = ix.search_vector(queries[0], 5, group_by_file=True), mv.search_vector(queries[0], 5, group_by_file=True)
    assert [r["id"] for r in a] == [r["id"] for r in b]
    mv.store.client.release_collection(mv.store.collection)  # as a server (or .db file) opened anew holds it
    assert [r["id"] for r in MilvusIndex.open(out, str(db)).search_vector(queries[1], 10)] == \
        [r["id"] for r in ix.search_vector(queries[1], 10)]


FILTERS = [{"label": "kick"}, {"label": ["pad", "hit"]}, {"take": "3"}, {"take": ["0", "4"], "label": "pad"},
           {"mic": 'say "hi"'}, {"path_glob": "*/drums/*"}, {"path_glob": ["*clip_1?.wav", "*/fx/clip_0_.wav"]},
           {"min_duration": 2.0}, {"max_duration": 1.5, "label": "hit"}, {"sample_rate": "22050"},
           {"sample_rate": "22050.0"}, {"label": "nothing"}]


def test_filters_run_in_milvus_and_agree_with_the_in_memory_ones(exported):
    _, out, db = exported
    ix, mv = Index.open(out), MilvusIndex.open(out, str(db))
    assert set(mv.metadata_keys) == {"take", "mic"}
    for spec in FILTERS:
        want = set(ix.rows["id"][ix.filter_mask(spec)])
        expr = filter_expr(spec, mv.metadata_keys)
        got = {r["id"] for r in mv.store.client.query(mv.store.collection, filter=expr, output_fields=["id"])}
        assert got == want, (spec, expr)
        q = ix.embeddings()[0]
        assert [r["id"] for r in ix.search_vector(q, 4, spec)] == [r["id"] for r in mv.search_vector(q, 4, spec)], spec
    with pytest.raises(Exception, match="unknown filter key 'speaker'"):
        mv.search_vector(q, 4, {"speaker": "x"})


def test_export_is_incremental(exported, tmp_path, capsys):
    manifest, out, db = exported
    frame = pd.read_csv(manifest)

    def sync() -> dict:
        capsys.readouterr()
        assert main(["export", str(out), "--to", "milvus", str(db), "--json"]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    extra = write(tmp_path / "src" / "new" / "new.wav", sound(101, 1.5))
    frame = pd.concat([frame, pd.DataFrame([{"path": str(extra), "label": "new", "take": 9, "mic": "x"}])])
    frame.to_csv(manifest, index=False)
    index(manifest, out)
    first = sync()
    assert first["added"] == 1 and first["removed"] == 0 and first["rows"] == 25  # only the new shard is sent
    write(Path(frame.path.iloc[0]), sound(100, 2.0))  # changed: re-embedded, its old row shadowed or compacted away
    frame.iloc[:-3].to_csv(manifest, index=False)  # and the last three files leave the manifest
    index(manifest, out)
    summary = sync()
    ix, mv = Index.open(out), MilvusIndex.open(out, str(db))
    assert summary["rows"] == len(ix) and summary["removed"] >= 1
    got = {r["id"] for r in mv.store.client.query(mv.store.collection, filter="", output_fields=["id"], limit=1000)}
    assert got == set(ix.rows["id"])
    assert set(mv.store.state()["shards"]) == set(ix.info["shards"])
    q = ix.embeddings()[3]
    assert [r["id"] for r in ix.search_vector(q, 10)] == [r["id"] for r in mv.search_vector(q, 10)]
    again = sync()  # nothing new: nothing sent
    assert again["added"] == again["removed"] == 0 and again["rows"] == len(ix)
    other = tmp_path / "other"  # an index made with other settings does not mix into this collection
    assert main(["index", str(manifest), "--out", str(other), "--encoder", "spectral", "-q", "--workers", "1",
                 "--no-fingerprint"]) == 0
    capsys.readouterr()
    assert main(["export", str(other), "--to", "milvus", str(db), "--collection", mv.store.collection]) == 2
    assert "other settings" in capsys.readouterr().err


def test_landmark_candidates_find_a_noisy_copy(exported, tmp_path, capsys):
    manifest, out, db = exported
    frame = pd.read_csv(manifest)
    x, sr = sf.read(frame.path[7], dtype="float32")
    rng = np.random.default_rng(1)
    noisy = x[int(0.3 * sr):] + rng.standard_normal(len(x) - int(0.3 * sr)).astype(np.float32) * np.std(x) * 0.3
    q = write(tmp_path / "query.wav", noisy, sr)
    ix, mv = Index.open(out), MilvusIndex.open(out, str(db))
    ids = mv.store.landmark_candidates(fingerprint.query_landmarks(noisy, sr)[0], 3)
    assert frame.path[7] in {mv.store.fetch(ids, ["path"])[i]["path"] for i in ids}
    a, b = ix.search(audio=str(q), k=10), mv.search(audio=str(q), k=10)
    assert b[0]["path"] == frame.path[7] and b[0]["match"] >= 10
    assert [r["id"] for r in a] == [r["id"] for r in b]
    assert np.allclose([r["score"] for r in a], [r["score"] for r in b], atol=1e-4)
    assert [r["match"] for r in a] == [r["match"] for r in b]
    c = mv.search(audio=str(q), k=5, exclude_same=True, filter={"label": "pad"})
    assert frame.path[7] not in [r["path"] for r in c] and all(r["label"] == "pad" for r in c)
    assert main(["search", str(out), "--milvus", str(db), "--audio", str(q), "-k", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["path"] == frame.path[7]
