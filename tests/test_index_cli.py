"""The indexing job and CLI end to end on generated audio with the spectral encoder (no weights)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from conftest import noise, tone, write

from simsearch.cli.core import main
from simsearch.search.index import Index
from simsearch.store.folder import IndexDir


def index(src, out, *extra) -> int:
    return main(["index", str(src), "--out", str(out), "--encoder", "spectral", "-q", "--workers", "1", *extra])


def rows(out) -> pd.DataFrame:
    return IndexDir(out).live_rows().to_pandas()


def test_index_then_search_finds_same_class(class_folder, tmp_path, capsys):
    out = tmp_path / "ix"
    assert index(class_folder, out) == 0
    assert "indexed 12 files" in capsys.readouterr().out
    for query in ["low/low1.wav", "high/high2.flac", "noise/noise3.wav"]:
        assert main(["search", str(out), "--audio", str(class_folder / query), "-k", "4", "--json"]) == 0
        res = json.loads(capsys.readouterr().out)
        assert [r["rank"] for r in res] == [1, 2, 3, 4]
        assert set(res[0]) == {"rank", "score", "path", "label", "offset_s", "cosine", "match"}
        assert res[0]["path"].endswith(query) and res[0]["cosine"] > 0.999 and res[0]["score"] >= res[0]["cosine"]
        assert all(r["label"] == query.split("/")[0] for r in res), res


def test_python_api_matches_cli(class_folder, tmp_path):
    out = tmp_path / "ix"
    index(class_folder, out)
    ix = Index.open(out)
    res = ix.search(audio=str(class_folder / "high/high0.flac"), k=3)
    assert res[0]["label"] == "high" and len(ix) == 12
    x = tone(3000, 1.0, 16000)
    assert ix.search(audio={"array": x, "sampling_rate": 16000}, k=1)[0]["label"] == "high"


def test_resume_skips_unchanged_reembeds_changed_and_drops_removed(class_folder, tmp_path, capsys):
    out = tmp_path / "ix"
    index(class_folder, out)
    first = rows(out)
    capsys.readouterr()
    assert index(class_folder, out) == 0
    assert "indexed 0 files, skipped 12" in capsys.readouterr().out
    write(class_folder / "low" / "low0.wav", noise(1.0, seed=99))  # content changed
    (class_folder / "noise" / "noise3.wav").unlink()
    write(class_folder / "high" / "new.wav", tone(3500, 1.0))
    assert index(class_folder, out) == 0
    out_line = capsys.readouterr().out
    assert "indexed 2 files, skipped 10" in out_line and "removed 1" in out_line
    after = rows(out)
    assert len(after) == 12 and after["path"].is_unique
    assert not after["path"].str.endswith("noise3.wav").any()
    changed = after[after["path"].str.endswith("low/low0.wav")]
    old = first[first["path"].str.endswith("low/low0.wav")]
    assert changed["sha256"].iloc[0] != old["sha256"].iloc[0]
    assert not set(changed["id"]) & set(first["id"])  # re-embedded rows get fresh ids
    ix = Index.open(out)
    assert ix.faiss.ntotal == 12


def test_bad_files_reported_and_skipped(class_folder, tmp_path, capsys):
    (class_folder / "low" / "empty.wav").write_bytes(b"")
    (class_folder / "low" / "random.wav").write_bytes(np.random.default_rng(1).bytes(5000))
    (class_folder / "low" / "notes.txt").write_text("not audio and not an audio extension")
    out = tmp_path / "ix"
    assert index(class_folder, out) == 0
    captured = capsys.readouterr()
    assert "indexed 12 files" in captured.out and "errors 2" in captured.out
    assert "empty.wav" in captured.err and "random.wav" in captured.err
    errs = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert {e["path"].rsplit("/", 1)[1] for e in errs} == {"empty.wav", "random.wav"}
    assert index(class_folder, tmp_path / "strict", "--strict") == 2


def test_windows_of_long_recordings_are_rows(tmp_path, capsys):
    src = tmp_path / "long"
    x = np.concatenate([tone(300, 4.0), noise(4.0, seed=5), tone(300, 4.0, seed=6)])
    write(src / "a.wav", x)
    out = tmp_path / "ix"
    assert index(src, out, "--window", "4") == 0
    r = rows(out).sort_values("offset_s")
    assert r["offset_s"].tolist() == [0.0, 4.0, 8.0] and r["label"].isna().all()
    capsys.readouterr()
    main(["search", str(out), "--audio", str(write(tmp_path / "q.wav", noise(2.0, seed=8))), "-k", "1", "--json"])
    assert json.loads(capsys.readouterr().out)[0]["offset_s"] == 4.0
    info = json.loads((out / "index.json").read_text())
    assert info["window_s"] == 4.0 and info["hop_s"] == 4.0 and info["counts"] == {"rows": 3, "files": 1}


def test_manifest_source_keeps_labels_and_metadata(class_folder, tmp_path):
    files = sorted(class_folder.rglob("*.wav"))[:4]
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [str(f) for f in files], "label": ["a", "b", "a", None],
                  "speaker": ["x", "y", "z", "w"]}).to_csv(manifest, index=False)
    out = tmp_path / "ix"
    assert index(manifest, out) == 0
    r = rows(out).sort_values("path")
    assert len(r) == 4 and r["label"].isna().sum() == 1
    assert {json.loads(m)["speaker"] for m in r["metadata"]} == {"x", "y", "z", "w"}


def test_info_rebuild_and_user_errors(class_folder, tmp_path, capsys):
    out = tmp_path / "ix"
    index(class_folder, out)
    capsys.readouterr()
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["encoder"]["name"] == "spectral" and info["dim"] == 168 and info["counts"]["rows"] == 12
    IndexDir(out).faiss_file(info).unlink()
    assert main(["search", str(out), "--audio", str(class_folder / "low/low0.wav")]) == 2
    assert "is missing" in (err := capsys.readouterr().err) and "simsearch rebuild" in err
    assert main(["rebuild", str(out)]) == 0
    assert Index.open(out).faiss.ntotal == 12
    assert main(["search", str(tmp_path / "nope"), "--audio", "x.wav"]) == 2
    assert main(["search", str(out), "--text", "dog"]) == 2
    assert "no text space" in capsys.readouterr().err
    assert main(["index", str(class_folder), "--out", str(out), "--encoder", "nope"]) == 2
    assert main(["search", str(out), "--audio", str(tmp_path / "missing.wav")]) == 2


def test_shards_are_parquet_with_documented_columns(class_folder, tmp_path):
    out = tmp_path / "ix"
    index(class_folder, out)
    t = pq.read_table(next((out / "shards").glob("*.parquet")))
    assert t.column_names[:9] == ["id", "path", "sha256", "offset_s", "duration_s", "sample_rate", "label",
                                  "metadata", "embedding"]
    assert set(t.column("sample_rate").to_pylist()) == {16000, 22050, 44100}
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    assert Index.open(copy).search(audio=str(class_folder / "low/low2.wav"), k=1)[0]["label"] == "low"


def test_changed_label_in_manifest_relabels_unchanged_files_on_resume(class_folder, tmp_path, capsys):
    files = sorted(class_folder.rglob("*.wav"))[:4]
    manifest = tmp_path / "m.csv"
    frame = pd.DataFrame({"path": [str(f) for f in files], "label": ["a", "b", "a", "b"], "take": [1, 2, 3, 4]})
    frame.to_csv(manifest, index=False)
    out = tmp_path / "ix"
    assert index(manifest, out) == 0
    before = rows(out).set_index("path")
    frame.loc[0, "label"], frame.loc[1, "take"] = "renamed", 20
    frame.to_csv(manifest, index=False)
    capsys.readouterr()
    assert index(manifest, out) == 0
    assert "indexed 0 files, skipped 4" in capsys.readouterr().out
    after = rows(out).set_index("path")
    assert len(after) == 4 and after.index.is_unique
    assert after.loc[str(files[0]), "label"] == "renamed" and json.loads(after.loc[str(files[1]), "metadata"]) == {"take": 20}
    assert (after["id"] == before["id"].reindex(after.index)).all()  # same rows, same vectors: faiss untouched
    assert IndexDir(out).read_info()["faiss"]["update"] == {"mode": "updated in place", "added": 0, "removed": 0}
    hit = Index.open(out).search(audio=str(files[0]), k=1)[0]
    assert hit["path"] == str(files[0]) and hit["label"] == "renamed"
