"""The index folder under crashes and hands: a kill at every write step, shards deleted, corrupted, copied in
from another index, a wrong dim or a lost index.json. Readers see the old or the new state, and the messages
send users to a command that really repairs it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import crash_at_every_write, noise, tone, write

from simsearch.cli.core import main
from simsearch.search.index import Index
from simsearch.store.folder import IndexDir

CRASHED = 70  # the exit code of simsearch.store.folder.write_step
INDEX = ["--encoder", "spectral", "-q", "--workers", "0", "--shard-rows", "3"]



def make_source(root: Path, n: int = 12) -> Path:
    for i in range(n):
        write(root / f"c{i % 3}" / f"clip{i:02d}.wav", tone(200 + 61 * i, 0.5, seed=i) if i % 2 else noise(0.5, seed=i))
    return root


def index(src, out, *extra) -> int:
    return main(["index", str(src), "--out", str(out), *INDEX, *extra])


def paths(out) -> set[str]:
    return set(Index.open(out).rows["path"])


def assert_tidy(out: Path) -> None:
    """After a finished run the folder holds exactly what index.json names."""
    d = IndexDir(out)
    info = d.read_info()
    assert sorted(p.name for p in (out / "shards").glob("shard-*.parquet")) == sorted(info["shards"])
    assert [p.name for p in out.glob("faiss*.index")] == [d.faiss_file(info).name]
    assert not list(out.rglob(".*.tmp"))


def test_a_kill_at_every_write_step_of_an_update_leaves_old_or_new_state(tmp_path):
    src, base = make_source(tmp_path / "src"), tmp_path / "base"
    assert index(src, base) == 0
    old = paths(base)
    (src / "c1" / "clip01.wav").unlink()  # compaction drops its rows
    write(src / "c0" / "clip03.wav", tone(4321, 0.5, seed=50))  # re-embedded: its old rows are shadowed
    write(src / "new" / "a.wav", tone(5000, 0.5, seed=51))
    write(src / "new" / "b.wav", noise(0.4, seed=52))
    new = (old - {str(src / "c1" / "clip01.wav")}) | {str(src / "new" / "a.wav"), str(src / "new" / "b.wav")}
    runs = crash_at_every_write(base, src, tmp_path, INDEX)
    crashes = [out for _, out, code in runs if code == CRASHED]
    assert runs[-1][2] == 0 and len(crashes) >= 8, runs  # shards, compaction, faiss, index.json, deletions
    seen = []
    query = str(src / "new" / "a.wav")
    for out in crashes:
        ix = Index.open(out)  # raises if faiss and the committed shards disagree or a listed file is missing
        got = set(ix.rows["path"])
        assert got in (old, new), (out, len(got))
        assert ix.search(audio=query, k=3)
        seen.append("new" if got == new else "old")
        assert index(src, out) == 0, out  # the next run completes the update
        assert paths(out) == new
        assert_tidy(Path(out))
    assert "old" in seen and "new" in seen, seen  # kills landed both before and after the commit


def test_a_shard_deleted_by_hand_says_what_is_wrong_and_rebuild_then_index_repair_it(tmp_path, capsys):
    src, out = make_source(tmp_path / "src"), tmp_path / "ix"
    assert index(src, out) == 0
    shard = IndexDir(out).shard_paths()[1]
    shard.unlink()
    capsys.readouterr()
    assert main(["search", str(out), "--audio", str(src / "c0" / "clip00.wav")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and shard.name in err and "is missing" in err and "simsearch rebuild" in err
    assert "kept changing" not in err
    assert main(["rebuild", str(out)]) == 0
    assert len(Index.open(out)) == 9
    assert index(src, out) == 0 and len(Index.open(out)) == 12
    assert_tidy(out)


def test_bytes_overwritten_inside_a_shard_are_found_set_aside_and_reembedded(tmp_path, capsys):
    src, out = make_source(tmp_path / "src"), tmp_path / "ix"
    assert index(src, out) == 0
    clean = {r["path"]: r["embedding"] for r in IndexDir(out).live_rows(["path", "embedding"]).to_pylist()}
    shard = IndexDir(out).shard_paths()[2]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2: len(data) // 2 + 16] = b"\x00" * 16  # inside the data pages: the footer still parses
    shard.write_bytes(bytes(data))
    capsys.readouterr()
    assert index(src, out) == 0  # a resume checks every committed shard against its recorded sha256
    captured = capsys.readouterr()
    assert "indexed 3 files" in captured.out and "set aside" in captured.err
    assert (out / "shards" / "quarantine" / shard.name).exists()
    again = {r["path"]: r["embedding"] for r in IndexDir(out).live_rows(["path", "embedding"]).to_pylist()}
    assert again == clean
    assert_tidy(out)
    shard = IndexDir(out).shard_paths()[0]  # and `rebuild` sets one aside instead of failing
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert main(["rebuild", str(out)]) == 0
    assert "set aside shard" in capsys.readouterr().err and len(Index.open(out)) == 9
    assert index(src, out) == 0 and len(Index.open(out)) == 12


def test_a_wrong_dim_or_broken_index_json_is_repaired_by_rebuild(tmp_path, capsys):
    src, out = make_source(tmp_path / "src"), tmp_path / "ix"
    assert index(src, out) == 0
    info = json.loads((out / "index.json").read_text())
    info["dim"] = 1024
    info["encoder"]["dim"] = 1024
    (out / "index.json").write_text(json.dumps(info))
    capsys.readouterr()
    assert main(["search", str(out), "--audio", str(src / "c0" / "clip00.wav")]) == 2
    assert "simsearch rebuild" in capsys.readouterr().err
    assert main(["rebuild", str(out)]) == 0
    info = IndexDir(out).read_info()
    assert info["dim"] == info["encoder"]["dim"] == 168
    assert main(["search", str(out), "--audio", str(src / "c0" / "clip00.wav"), "-k", "1"]) == 0
    assert index(src, out) == 0
    (out / "index.json").write_text('{"dim": 16')  # cut short: unreadable
    capsys.readouterr()
    assert index(src, out) == 2 and "rebuild" in capsys.readouterr().err
    assert main(["rebuild", str(out)]) == 0  # restores the settings the shards recorded
    assert len(Index.open(out)) == 12 and index(src, out) == 0


def test_a_shard_copied_in_from_another_index_is_set_aside(tmp_path, capsys):
    src, out = make_source(tmp_path / "src"), tmp_path / "ix"
    other_src = tmp_path / "other"
    write(other_src / "x.wav", tone(777, 0.5))
    assert index(src, out) == 0 and index(other_src, tmp_path / "other_ix") == 0
    foreign = IndexDir(tmp_path / "other_ix").shard_paths()[0]
    shutil.copy(foreign, out / "shards" / "shard-000099.parquet")
    capsys.readouterr()
    assert main(["rebuild", str(out)]) == 0
    assert "not written by this index" in capsys.readouterr().err
    ix = Index.open(out)
    assert len(ix) == 12 and str(other_src / "x.wav") not in set(ix.rows["path"])
    assert ix.search(audio=str(src / "c0" / "clip00.wav"), k=3)
    shutil.copy(foreign, out / "shards" / "shard-000100.parquet")  # `index` refuses it the same way
    assert index(src, out) == 0
    assert len(Index.open(out)) == 12 and "not written by this index" in capsys.readouterr().err
    assert_tidy(out)


def test_lost_index_json_is_restored_from_the_shards_and_other_settings_are_refused(tmp_path, capsys):
    src, out = make_source(tmp_path / "src"), tmp_path / "ix"
    assert index(src, out, "--window", "0.25") == 0
    before = IndexDir(out).read_info()
    (out / "index.json").unlink()
    write(src / "new.wav", tone(999, 0.5))
    capsys.readouterr()
    assert index(src, out, "--window", "5") == 2  # would mix 0.25 s and 5 s windows in one index
    assert "window 0.25" in capsys.readouterr().err
    assert index(src, out) == 0  # not repeating the settings: the shards' recorded ones are used
    info = IndexDir(out).read_info()
    assert info["window_s"] == 0.25 and info["encoder"] == before["encoder"]
    rows = IndexDir(out).live_rows(["path", "duration_s"]).to_pandas()
    assert rows["duration_s"].max() <= 0.25 and rows["path"].nunique() == 13


def test_k_must_be_at_least_one(tmp_path, capsys):
    src, out = make_source(tmp_path / "src", 3), tmp_path / "ix"
    assert index(src, out) == 0
    for k in ("0", "-1"):
        capsys.readouterr()
        assert main(["search", str(out), "--audio", str(src / "c0" / "clip00.wav"), "-k", k]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.strip().splitlines() == [f"simsearch: error: -k must be at least 1 "
                                                                             f"(got {k})"]

