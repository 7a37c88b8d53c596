"""Scale features: index types chosen by size/budget and their recall, incremental FAISS updates, filters,
best window per file, and near-duplicate groups. Vectors are synthetic and clustered; audio is generated."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import noise, tone, write

from simsearch.cli.core import main
from simsearch.errors import SimsearchError
from simsearch.indexing.job import rebuild, run_index
from simsearch.indexing.options import IndexOptions
from simsearch.indexing.sources import Item
from simsearch.indexing.writer import ShardWriter
from simsearch.search import index as index_mod
from simsearch.search.index import Index
from simsearch.store import planner
from simsearch.store.folder import IndexDir

DIM = 32
ENC = {"name": "spectral", "checkpoint": None, "sample_rate": 16000, "dim": DIM, "pooling": "meanstd", "options": {}}


def clustered(n: int, seed: int = 0, clusters: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors in Gaussian clusters, each spread in its own low-rank subspace; returns (vectors, cluster)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIM)).astype(np.float32)
    bases = rng.standard_normal((clusters, 8, DIM)).astype(np.float32) / np.sqrt(DIM)
    c = rng.integers(0, clusters, n)
    z = rng.standard_normal((n, 8)).astype(np.float32)
    x = centres[c] / np.sqrt(DIM) + 0.5 * np.einsum("nr,nrd->nd", z, bases[c]) + 0.05 * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), c


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def add_rows(d: IndexDir, x: np.ndarray, paths: list[str], next_id: int, labels=None, metadata=None,
             durations=None, offsets=None) -> None:
    """Write rows straight into shards, as the indexer's writer does (one window per row)."""
    w = ShardWriter(d, DIM, {}, 5000, next_id)
    for i, p in enumerate(paths):
        item = Item(p, None if labels is None else labels[i], {} if metadata is None else metadata[i])
        window = (0.0 if offsets is None else offsets[i], 1.0 if durations is None else durations[i])
        w.add_file(item, "sha", 16000, [window], [{"embedding": x[i]}])
    w.flush()


def vector_index(root: Path, x: np.ndarray, index_type: str = "auto", max_memory=None, **cols) -> IndexDir:
    d = IndexDir(root)
    with d.lock():
        add_rows(d, x, cols.pop("paths", [f"/data/{i}.wav" for i in range(len(x))]), 0, **cols)
        rebuild(d, enc_record=ENC, index_type=index_type, max_memory=max_memory)
    return d


def exact_top(x: np.ndarray, q: np.ndarray, k: int, rows: np.ndarray | None = None) -> np.ndarray:
    rows = np.arange(len(x)) if rows is None else rows
    s = x[rows] @ q
    return rows[np.argsort(-s, kind="stable")[:k]]


@pytest.fixture(scope="module")
def data():
    x, c = clustered(20_100)  # queries: fresh draws from the same clusters
    return x[:20_000], c[:20_000], x[20_000:]


@pytest.fixture(scope="module")
def labelled(data, tmp_path_factory):
    """One index per type over the same rows, with labels, metadata, paths and durations to filter on."""
    x, c = data[0][:12_000], data[1][:12_000]
    files = np.arange(len(x)) // 4  # 4 windows per file, 1 s apart
    labels = ["rare" if f % 100 == 0 else f"c{c[4 * f] % 50}" for f in files]  # "rare": 30 files, 120 rows
    meta = [{"source": "a" if f % 3 else "b"} for f in files]
    paths = [f"/data/{lab}/{f}.wav" for f, lab in zip(files, labels)]
    offsets = [float(i % 4) for i in range(len(x))]
    durations = [0.5 + f % 8 for f in files]  # so files last 3.5 ... 10.5 s
    root = tmp_path_factory.mktemp("labelled")
    out = {}
    for kind in ("flat", "hnsw", "ivfpq"):
        out[kind] = vector_index(root / kind, x, index_type=kind, labels=labels, metadata=meta, paths=paths,
                                 offsets=offsets, durations=durations).root
    return out, np.array(labels), np.array(paths), np.array(meta)



# ---------------------------------------------------------------- choice of index type

def test_auto_choice_follows_size_and_memory_budget():
    assert planner.choose(5_000, 512)["type"] == "flat"
    assert planner.choose(300_000, 512)["type"] == "hnsw"
    big = planner.choose(3_000_000, 512)
    assert big["type"] == "ivfpq" and big["params"]["refine"] == "sq8" and 512 % big["params"]["m"] == 0
    tight = planner.choose(300_000, 512, budget=planner.parse_memory("200M"))  # flat needs 600 MB, HNSW more
    assert tight["type"] == "ivfpq" and tight["memory_bytes"] <= 200 * 2**20
    tighter = planner.choose(300_000, 512, budget=planner.parse_memory("40M"))
    assert tighter["params"]["refine"] == "none" and tighter["memory_bytes"] <= 40 * 2**20
    with pytest.raises(SimsearchError, match="too small"):
        planner.choose(300_000, 512, budget=planner.parse_memory("1M"))
    with pytest.raises(SimsearchError, match="max-memory"):
        planner.choose(300_000, 512, "flat", budget=planner.parse_memory("100M"))
    assert planner.choose(500, 64, "ivfpq")["type"] == "flat"  # too few rows to train: exact until 1000
    assert planner.parse_memory("8G") == 8 * 2**30 and planner.parse_memory("500MB") == 500 * 2**20
    assert planner.nlist_for(20_000) == 128 and planner.nlist_for(1_000_000) == 1024


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_each_index_type_records_its_parameters_and_reaches_recall(data, labelled, kind):
    x, q = data[0][:12_000], data[2]
    d = IndexDir(labelled[0][kind])
    rec = d.read_info()["faiss"]
    assert rec["type"] == kind and rec["requested"] == kind
    if kind == "hnsw":
        assert rec["params"]["M"] == 32 and "efSearch" in rec["search"]
    if kind == "ivfpq":
        assert {"nlist", "m", "refine"} <= set(rec["params"]) and {"nprobe", "k_factor"} <= set(rec["search"])
    if kind != "flat":
        assert rec["calibrated_recall_at_10"] >= 0.95
    ix = Index.open(d.root)
    found = [[r["id"] for r in ix.search_vector(v, 10)] for v in q]
    recall = np.mean([len(set(f) & set(exact_top(x, v, 10))) / 10 for f, v in zip(found, q)])
    assert recall >= 0.95, recall
    if kind == "ivfpq":  # knobs can be overridden at open time
        assert Index.open(d.root, nprobe=1, k_factor=1).knobs == {"nprobe": 1, "k_factor": 1}


def test_auto_on_small_collection_is_exact_flat(data, tmp_path):
    x, _, q = data
    d = vector_index(tmp_path / "auto", x[:3000])
    assert d.read_info()["faiss"]["type"] == "flat"
    ix = Index.open(d.root)
    assert [r["id"] for r in ix.search_vector(q[0], 5)] == list(exact_top(x[:3000], q[0], 5))


# ---------------------------------------------------------------- incremental updates

def corpus(root: Path, n: int, start: int = 0) -> list[Path]:
    """Distinct short clips: tones across the spectrum and noise of varying level."""
    files = []
    for i in range(start, start + n):
        x = tone(150 * 1.09 ** i, 0.6 + 0.01 * i, seed=i) if i % 2 else noise(0.7, seed=i) * np.hanning(11200)
        files.append(write(root / f"c{i % 3}" / f"clip{i:03d}.wav", x.astype(np.float32)))
    return files


def ids_by_path(out: Path) -> dict[str, list[int]]:
    t = IndexDir(out).live_rows(["id", "path"]).to_pandas()
    return {p: sorted(g["id"]) for p, g in t.groupby("path")}


def test_growing_and_shrinking_folder_reembeds_only_new_files_and_updates_faiss_in_place(tmp_path):
    src, out = tmp_path / "src", tmp_path / "ix"
    corpus(src, 30)
    opts = IndexOptions(encoder="spectral", num_workers=0, progress=False)
    first = run_index(src, out, opts)
    assert (first.indexed, first.skipped) == (30, 0)
    before = ids_by_path(out)

    corpus(src, 3, start=30)  # +10 %
    grown = run_index(src, out, opts)
    assert (grown.indexed, grown.skipped, grown.removed) == (3, 30, 0)
    after = ids_by_path(out)
    assert all(after[p] == ids for p, ids in before.items())  # untouched files keep their rows and ids
    upd = IndexDir(out).read_info()["faiss"]["update"]
    assert upd == {"mode": "updated in place", "added": 3, "removed": 0}

    gone = sorted(before)[:2]
    for p in gone:
        Path(p).unlink()
    shrunk = run_index(src, out, opts)
    assert (shrunk.indexed, shrunk.skipped, shrunk.removed) == (0, 31, 2)
    assert IndexDir(out).read_info()["faiss"]["update"] == {"mode": "updated in place", "added": 0, "removed": 2}
    ix = Index.open(out)  # faiss ids match the shards, or this raises
    assert len(ix) == 31 and not set(gone) & {r["path"] for r in ix.search(audio=str(src / "c1" / "clip001.wav"), k=31)}
    assert all(ids_by_path(out)[p] == ids for p, ids in before.items() if p not in gone)


@pytest.mark.parametrize("kind, budget, removal", [
    ("ivfpq", "200K", "updated in place"),  # plain IVF-PQ (budget too small for re-ranking): remove_ids
    ("ivfpq", None, "re-added all rows (this type cannot remove in place; no retraining)"),  # + SQ8 re-rank
    ("hnsw", None, "re-added all rows (this type cannot remove in place; no retraining)"),
])
def test_approximate_indexes_add_without_rebuilding(data, tmp_path, kind, budget, removal):
    x, _, _ = data
    base, extra = x[:6_000], x[6_000:6_600]
    d = vector_index(tmp_path / "ix", base, index_type=kind, max_memory=budget)
    built = d.read_info()["faiss"]
    assert built["update"]["mode"] == "built" and built["trained_rows"] == 6_000
    if budget:
        assert built["params"]["refine"] == "none"
    with d.lock():
        add_rows(d, extra, [f"/new/{i}.wav" for i in range(len(extra))], next_id=6_000)
        rebuild(d, incremental=True)
    rec = d.read_info()["faiss"]
    assert rec["update"] == {"mode": "updated in place", "added": 600, "removed": 0}
    assert rec["trained_rows"] == 6_000 and rec["params"] == built["params"]  # not trained again
    ix = Index.open(d.root)
    assert "/new/7.wav" in [r["path"] for r in ix.search_vector(extra[7], 10)]

    with d.lock():
        d.compact({f"/data/{i}.wav" for i in range(1000)})
        rebuild(d, incremental=True)
    rec = d.read_info()["faiss"]
    assert rec["update"] == {"mode": removal, "added": 0, "removed": 1000}
    ix = Index.open(d.root)
    assert len(ix) == 5_600
    hits = {r["id"] for v in base[:20] for r in ix.search_vector(v, 5)}
    assert not hits & set(range(1000))


# ---------------------------------------------------------------- filters and grouping

@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
@pytest.mark.parametrize("inside_faiss", [False, True])
def test_filters_always_return_k_passing_results(data, labelled, kind, inside_faiss, monkeypatch):
    x, _, q = data
    roots, labels, paths, meta = labelled
    if inside_faiss:  # no exact shortcut for selective filters: the IDSelector path alone
        monkeypatch.setattr(index_mod, "EXACT_FILTER_ROWS", 0)
    ix = Index.open(roots[kind])
    for v in q[:5]:
        res = ix.search_vector(v, 10, filter={"label": "rare"})
        assert len(res) == 10 and all(r["label"] == "rare" for r in res)
        rare = np.flatnonzero(labels == "rare")  # 120 rows: below EXACT_FILTER_ROWS, so exact unless patched
        if not inside_faiss or kind == "flat":
            assert [r["id"] for r in res] == list(exact_top(x, v, 10, rare))
        res = ix.search_vector(v, 10, filter={"label": ["c1", "c2", "c3"], "source": "b"})
        assert len(res) == 10 and all(r["label"] in {"c1", "c2", "c3"} for r in res)
        assert all(meta[r["id"]]["source"] == "b" for r in res)
        res = ix.search_vector(v, 10, filter={"path_glob": "*/c7/*", "min_duration": 4.0, "max_duration": 6.0})
        assert len(res) == 10 and all("/c7/" in r["path"] for r in res)
        assert all(4.0 <= 3.0 + r["duration_s"] <= 6.0 for r in res)  # file length = last offset + window
    assert len(ix.search_vector(q[0], 500, filter={"label": "rare"})) == 120  # fewer pass than k: all of them
    assert ix.search_vector(q[0], 10, filter={"label": "no-such"}) == []
    with pytest.raises(SimsearchError, match="unknown filter key"):
        ix.search_vector(q[0], 10, filter={"colour": "red"})


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_group_by_file_returns_best_window_of_k_distinct_files(data, labelled, kind):
    x, q = data[0][:12_000], data[2]
    roots, _, paths, _ = labelled
    ix = Index.open(roots[kind])
    for v in q[:5]:
        res = ix.search_vector(v, 10, group_by_file=True)
        assert len(res) == 10 and len({r["path"] for r in res}) == 10
        scores = x @ v
        best = {}
        for i in np.argsort(-scores):
            best.setdefault(paths[i], scores[i])
        truth = sorted(best, key=best.get, reverse=True)[:10]
        got = [r["path"] for r in res]
        assert got == truth if kind == "flat" else len(set(got) & set(truth)) >= 9
        # each file's reported window is its best one (up to SQ8 rounding for IVF-PQ; HNSW may miss a few)
        same = [abs(r["score"] - best[r["path"]]) < (2e-2 if kind == "ivfpq" else 1e-5) for r in res]
        assert all(same) if kind == "flat" else sum(same) >= 9
        res = ix.search_vector(v, 10, group_by_file=True, filter={"label": "rare"})
        assert len({r["path"] for r in res}) == len(res) == 10


def test_long_recordings_search_and_cli_flags(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "ix"
    for i, f in enumerate([300, 1200, 4000]):
        write(src / "long" / f"rec{i}.wav", np.concatenate([tone(f, 12.0, seed=i), noise(12.0, seed=i)]))
    for i in range(4):
        write(src / "short" / f"s{i}.wav", tone(500 + 900 * i, 1.0, seed=10 + i))
    assert main(["index", str(src), "--out", str(out), "--encoder", "spectral", "-q", "--workers", "0",
                 "--window", "4"]) == 0
    capsys.readouterr()
    query = str(src / "long" / "rec1.wav")
    assert main(["search", str(out), "--audio", query, "-k", "3", "--json", "--group-by-file"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res) == 3 and len({r["path"] for r in res}) == 3
    assert main(["search", str(out), "--audio", query, "-k", "3", "--json", "--filter", "label=short",
                 "--max-duration", "2"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res) == 3 and all(r["label"] == "short" for r in res)
    assert main(["search", str(out), "--audio", query, "-k", "20", "--json", "--path-glob", "*/rec2.wav"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res) == 6 and {r["offset_s"] for r in res} == {0.0, 4.0, 8.0, 12.0, 16.0, 20.0}
    assert main(["rebuild", str(out), "--index-type", "hnsw"]) == 0
    capsys.readouterr()
    assert main(["search", str(out), "--audio", query, "-k", "2", "--json", "--ef-search", "64",
                 "--group-by-file", "--min-duration", "10"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res) == 2 and all(r["label"] == "long" for r in res)
    assert main(["search", str(out), "--audio", query, "--filter", "oops"]) == 2
    assert "key=value" in capsys.readouterr().err


# ---------------------------------------------------------------- near-duplicates

def distinct_clip(i: int, sr: int = 16000) -> np.ndarray:
    """14 clips no two of which the spectral encoder finds near-identical (max cosine ~0.95)."""
    t = np.arange(int(0.8 * sr)) / sr
    rng = np.random.default_rng(i)
    if i < 8:
        x = np.sin(2 * np.pi * 150 * 1.55**i * t)
    elif i == 8:
        x = np.sin(2 * np.pi * (200 + 3000 * t) * t)  # chirp
    elif i == 9:
        x = np.sin(2 * np.pi * 600 * t) * (1 + np.sin(2 * np.pi * 5 * t))  # tremolo
    elif i == 10:
        x = (np.arange(t.size) % 800 < 8).astype(float)  # click train
    else:
        x = rng.standard_normal(t.size)  # white, brown, blue noise
        x = np.cumsum(x) - np.cumsum(x).mean() if i == 12 else np.diff(x, prepend=0) if i == 13 else x
    x = x / np.abs(x).max() * 0.5 + 0.005 * rng.standard_normal(t.size)
    return (x * np.hanning(t.size)).astype(np.float32)


def test_dedup_finds_planted_duplicates(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "ix"
    clips = [distinct_clip(i) for i in range(14)]
    originals = [write(src / "orig" / f"o{i:02d}.wav", x) for i, x in enumerate(clips)]
    planted = {
        originals[2]: [write(src / "copies" / "a.flac", clips[2]),  # same audio, another format
                       write(src / "copies" / "b.wav", 0.5 * clips[2])],  # quieter
        originals[5]: [write(src / "copies" / "c.wav", clips[5] + 1e-4 * noise(0.8, amp=1.0, seed=7))],  # + hiss
        originals[9]: [write(src / "copies" / "d.wav", np.concatenate([clips[9], np.zeros(160, np.float32)]))],
    }
    run_index(src, out, IndexOptions(encoder="spectral", num_workers=0, progress=False))
    want = sorted(sorted(str(p) for p in [o, *copies]) for o, copies in planted.items())
    assert main(["dedup", str(out), "--threshold", "0.98", "--json"]) == 0
    groups = json.loads(capsys.readouterr().out)
    assert sorted(sorted(m["path"] for m in g["members"]) for g in groups) == want
    assert all(g["min_link_score"] >= 0.98 for g in groups)
    assert main(["rebuild", str(out), "--index-type", "hnsw"]) == 0  # the kNN path finds the same groups
    capsys.readouterr()
    assert main(["dedup", str(out), "--json"]) == 0
    assert sorted(sorted(m["path"] for m in g["members"]) for g in json.loads(capsys.readouterr().out)) == want


def test_ivfpq_built_shard_by_shard_equals_the_in_memory_build(data, tmp_path, monkeypatch):
    """Past STREAM_BYTES an IVF-PQ index is trained on the same row sample and filled one shard at a time: the
    same index, the same tuned knobs and recall, the same answers, with never all vectors in memory."""
    from simsearch.store import sync
    from simsearch.store.faiss_ops import load

    x = data[0][:6000]
    whole = vector_index(tmp_path / "whole", x, index_type="ivfpq")
    monkeypatch.setattr(sync, "STREAM_BYTES", 0)
    read_all = []
    monkeypatch.setattr(sync, "read_vectors", lambda *a, **k: read_all.append(a) or (_ for _ in ()).throw(
        AssertionError("the streamed build read every vector at once")))
    streamed = vector_index(tmp_path / "streamed", x, index_type="ivfpq")
    a, b = whole.read_info()["faiss"], streamed.read_info()["faiss"]
    assert a["search"] == b["search"] and a["calibrated_recall_at_10"] == b["calibrated_recall_at_10"]
    ia, ib = load(whole.faiss_file(whole.read_info())), load(streamed.faiss_file(streamed.read_info()))
    q = unit(data[2][:20])
    assert np.array_equal(ia.search(q, 10)[1], ib.search(q, 10)[1]) and not read_all
