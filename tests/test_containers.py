"""Clips inside WebDataset tar shards and Hugging Face datasets: indexed, searched and served in place, unpacked never."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import noise, tone

from simsearch.audio import containers
from simsearch.audio.decode import decode
from simsearch.errors import AudioError
from simsearch.indexing.sources import collect


def _wav(x: np.ndarray, sr: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV")
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_shard(path: Path, skip: int | None = None) -> Path:
    """Six samples: a .wav with a .cls label and a .json of metadata each (WebDataset layout)."""
    with tarfile.open(path, "w") as tar:
        for i in range(6):
            if i == skip:
                continue
            x = tone(300 + 400 * (i % 2) * 4, 1.0, seed=i) if i % 2 else noise(1.0, seed=i)
            _add(tar, f"s{i:03d}.wav", _wav(x))
            _add(tar, f"s{i:03d}.cls", b"tone" if i % 2 else b"noise")
            _add(tar, f"s{i:03d}.json", json.dumps({"take": str(i)}).encode())
    return path


def test_tar_members_read_in_place(tmp_path: Path) -> None:
    shard = make_shard(tmp_path / "shard-000000.tar")
    items, bad = collect(shard)
    assert not bad and len(items) == 6
    first = items[0]
    assert first.path == f"{shard}#s000.wav" and first.label == "noise" and first.metadata == {"take": "0"}
    assert containers.split_member(first.path) == (shard, "s000.wav")
    x = decode(first.path, 16000)
    assert len(x) == 16000 and np.abs(x - np.clip(noise(1.0, seed=0), -1, 1)).max() < 1e-3  # PCM16 clips at 1
    with pytest.raises(AudioError, match="no member"):
        decode(f"{shard}#missing.wav", 16000)
    assert containers.split_member(str(tmp_path / "plain#name.wav")) is None  # no container: an ordinary path


def test_member_size_is_capped(tmp_path: Path, monkeypatch) -> None:
    shard = make_shard(tmp_path / "s.tar")
    monkeypatch.setattr(containers, "MAX_MEMBER_BYTES", 1000)
    with pytest.raises(AudioError, match="over the limit"):
        decode(f"{shard}#s000.wav", 16000)


def test_index_a_folder_of_shards_and_follow_changes(tmp_path: Path) -> None:
    from simsearch import Index
    from simsearch.indexing.job import run_index
    from simsearch.indexing.options import IndexOptions

    src = tmp_path / "src"
    src.mkdir()
    shard = make_shard(src / "shard-000000.tar")
    sf.write(src / "loose.wav", tone(2000, 1.0, seed=9), 16000)
    opts = IndexOptions(encoder="spectral", progress=False, num_workers=0, transcribe="off")
    summary = run_index(src, tmp_path / "idx", opts)
    assert summary.indexed == 7 and summary.errors == 0
    index = Index.open(tmp_path / "idx")
    hits = index.search(audio=f"{shard}#s003.wav", k=2)
    assert hits[0]["path"] == f"{shard}#s003.wav" and hits[0]["label"] == "tone"
    assert set(index.rows["label"].dropna()) == {"tone", "noise"} and index.rows["label"].isna().sum() == 1
    make_shard(shard, skip=3)  # the shard is rewritten without sample 3: its row goes, the rest stay
    again = run_index(src, tmp_path / "idx", opts)
    assert again.removed == 1 and again.indexed == 0 and again.skipped == 6
    assert f"{shard}#s003.wav" not in set(Index.open(tmp_path / "idx").rows["path"])


def _dataset(n: int = 6):
    from datasets import Audio, ClassLabel, Dataset, Features, Value

    feats = Features({"audio": {"bytes": Value("binary"), "path": Value("string")},
                      "label": ClassLabel(names=["noise", "tone"]), "speaker": Value("string")})
    clips = [tone(500 + 100 * i, 1.0, seed=i) if i % 2 else noise(1.0, seed=i) for i in range(n)]
    ds = Dataset.from_dict({"audio": [{"bytes": _wav(x), "path": None} for x in clips],
                            "label": [i % 2 for i in range(n)], "speaker": [f"p{i}" for i in range(n)]},
                           features=feats)
    return ds.cast_column("audio", Audio(decode=False))


def test_saved_dataset_and_dataset_object(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    from simsearch import Index
    from simsearch.indexing.job import run_index
    from simsearch.indexing.options import IndexOptions

    opts = IndexOptions(encoder="spectral", progress=False, num_workers=0, transcribe="off")
    saved = tmp_path / "ds"
    _dataset().save_to_disk(str(saved))
    items, bad = collect(saved)
    assert not bad and [i.path for i in items[:2]] == [f"{saved}#0", f"{saved}#1"]
    assert items[1].label == "tone" and items[1].metadata == {"speaker": "p1"}
    run_index(saved, tmp_path / "idx", opts)
    hits = Index.open(tmp_path / "idx").search(audio=f"{saved}#3", k=1)
    assert hits[0]["path"] == f"{saved}#3" and hits[0]["label"] == "tone"

    summary = run_index(_dataset(4), tmp_path / "idx2", opts)  # an object: saved beside the index, once
    assert summary.indexed == 4 and containers.is_dataset(tmp_path / "idx2" / "dataset")
    assert run_index(_dataset(4), tmp_path / "idx2", opts).skipped == 4
    paths = set(Index.open(tmp_path / "idx2").rows["path"])
    assert paths == {f"{tmp_path / 'idx2' / 'dataset'}#{i}" for i in range(4)}


def test_app_serves_a_member(tmp_path: Path) -> None:
    from simsearch.app.clips import ClipStore
    from simsearch.app.pool import inside

    shard = make_shard(tmp_path / "shard.tar")
    member = Path(f"{shard}#s001.wav")
    assert inside(member, [tmp_path]) and not inside(member, [tmp_path / "elsewhere"])
    store = ClipStore()
    try:
        out = store.clip(member, 0.25, 0.5)
        data, sr = sf.read(out)
        assert sr == 16000 and len(data) == 8000
    finally:
        store.close()


def test_a_dataset_row_cannot_point_outside_the_dataset(tmp_path: Path, monkeypatch) -> None:
    """A row whose audio is a file path (not bytes) is read only from inside the dataset's folder."""
    secret = tmp_path / "secret.wav"
    sf.write(secret, tone(440, 1.0), 16000)
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "dataset_info.json").write_text("{}")
    sf.write(folder / "inside.wav", tone(330, 1.0), 16000)
    rows = [{"audio": {"bytes": None, "path": p}} for p in (str(secret), "../secret.wav", "inside.wav")]
    monkeypatch.setattr(containers, "_dataset", lambda container, split: (rows, "audio"))
    for row in (0, 1):
        with pytest.raises(AudioError, match="outside"):
            decode(f"{folder}#{row}", 16000)
    assert len(decode(f"{folder}#2", 16000)) == 16000
