"""Landmark fingerprints: a changed copy of a recording finds that recording, other recordings score as chance."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write

from simsearch.audio import fingerprint as fp
from simsearch.audio.perturb import add_noise, crop, delay, lowpass_resample, mp3_roundtrip
from simsearch.indexing.job import run_index
from simsearch.indexing.options import IndexOptions
from simsearch.search.index import Index
from simsearch.store.folder import IndexDir

SR = 16000


def melody(seed: int, seconds: float = 3.0, sr: int = SR) -> np.ndarray:
    """Random decaying notes (two harmonics each) at random times: every seed is a different recording."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = np.zeros(len(t), np.float32)
    for _ in range(int(seconds * 6)):
        start, length, f = rng.uniform(0, seconds - 0.3), rng.uniform(0.08, 0.3), rng.uniform(200, 3000)
        on = (t >= start) & (t < start + length)
        env = rng.uniform(0.2, 1.0) * np.exp(-(t[on] - start) * rng.uniform(5, 20))
        x[on] += (env * (np.sin(2 * np.pi * f * t[on]) + 0.5 * np.sin(4 * np.pi * f * t[on]))).astype(np.float32)
    return x


CHANGES = {
    "white noise 10 dB": lambda x, rng: add_noise(x, 10.0, rng, "white"),
    "pink noise 10 dB": lambda x, rng: add_noise(x, 10.0, rng, "pink"),
    "middle 1.2 s": lambda x, rng: crop(x[SR // 2:], 0.48),
    "starts 0.37 s late": lambda x, rng: delay(x, SR, 0.37),
    "4 kHz phone band": lambda x, rng: lowpass_resample(x, SR),
    "MP3 64 kbit/s": lambda x, rng: mp3_roundtrip(x, SR),
}


@pytest.fixture(scope="module")
def melodies():
    return [melody(i) for i in range(12)]


@pytest.fixture(scope="module")
def table(melodies):
    return fp.LandmarkTable.build([fp.index_landmarks(x, SR) for x in melodies])


@pytest.mark.parametrize("change", list(CHANGES))
def test_changed_copy_matches_its_own_recording_only(melodies, table, change):
    rng = np.random.default_rng(7)
    scores = np.stack([table.scores(*fp.query_landmarks(CHANGES[change](x, rng), SR)) for x in melodies])
    own, others = np.diag(scores), scores[~np.eye(len(melodies), dtype=bool)]
    assert (scores.argmax(axis=1) == np.arange(len(melodies))).all(), scores.round(1)
    assert own.min() >= fp.MIN_SCORE, own  # every copy earns a bonus ...
    assert others.max() < own.min(), (others.max(), own.min())  # ... above any chance agreement


def test_landmarks_do_not_depend_on_the_sample_rate_given(melodies):
    """An 8 kHz file and its 16 kHz decode give the same landmarks (they are made at fingerprint.RATE)."""
    from simsearch.audio.resample import resample

    x = melodies[0]
    h16, t16 = fp.landmarks(x, SR)
    h8, t8 = fp.landmarks(resample(x, SR, 8000), 8000)
    same = len(set(zip(h16.tolist(), t16.tolist())) & set(zip(h8.tolist(), t8.tolist())))
    assert len(h16) > 50 and same >= 0.9 * len(h16)


def test_degenerate_inputs_give_no_landmarks_and_score_nothing(table):
    for x in [np.zeros(0, np.float32), np.zeros(SR, np.float32), np.full(SR, np.nan, np.float32)]:
        h, t = fp.landmarks(x, SR)
        assert len(h) == len(t) == 0
        assert not table.scores(h, t).any()
    h, t = fp.landmarks(np.r_[np.zeros(100), 1.0, np.zeros(100)].astype(np.float32), SR)  # one click
    assert np.isfinite(table.scores(h, t)).all()
    empty = fp.LandmarkTable.build([None, b""])
    assert empty.n_rows == 2 and not empty.scores(*fp.query_landmarks(melody(3), SR)).any()


def test_pack_round_trip_and_bonus_shape(melodies):
    blob = fp.index_landmarks(melodies[1], SR)
    h, t = fp.unpack(blob)
    assert h.dtype == np.uint32 and t.dtype == np.int32 and len(h) == len(blob) // 8
    one, t1 = fp.landmarks(melodies[1], SR)
    assert np.array_equal(one, h) and np.array_equal(t1, t)
    both, _ = fp.query_landmarks(melodies[1], SR)  # a query adds the grid half a hop later
    assert set(one.tolist()) <= set(both.tolist()) and len(both) > 1.5 * len(one)
    b = fp.bonus(np.array([0.0, fp.MIN_SCORE - 0.1, fp.MIN_SCORE, fp.FULL_SCORE, 10 * fp.FULL_SCORE]))
    assert b[0] == b[1] == 0.0 and 0 < b[2] < b[3] and b[3] == b[4] == fp.BONUS


def test_search_ranks_a_noisy_cut_copy_first_and_says_why(melodies, tmp_path):
    """Through the index: the copy's own file comes first with its landmark match, even where a plain cosine
    ranking (an index made with --no-fingerprint) puts another file first."""
    src = tmp_path / "src"
    for i, x in enumerate(melodies):
        write(src / f"m{i:02d}.wav", x)
    rng = np.random.default_rng(0)
    copies = [add_noise(crop(x[SR // 3:], 0.5), 5.0, rng, "pink") for x in melodies]
    ranks = {}
    for name, on in [("fp", None), ("plain", False)]:
        run_index(src, tmp_path / name, IndexOptions(encoder="spectral", progress=False, num_workers=0, fingerprint=on))
        ix = Index.open(tmp_path / name)
        results = [ix.search(audio={"array": q, "sampling_rate": SR}, k=3) for q in copies]
        ranks[name] = [r[0]["path"].endswith(f"m{i:02d}.wav") for i, r in enumerate(results)]
        if name == "fp":
            assert "fingerprint" in json.loads((tmp_path / name / "index.json").read_text())
            assert all(r[0]["match"] >= fp.MIN_SCORE and r[0]["score"] > r[0]["cosine"] for r in results)
            assert all(r[1]["match"] < r[0]["match"] for r in results)
        else:
            assert "landmarks" not in IndexDir(tmp_path / name).live_rows().column_names
            assert all("match" not in r[0] for r in results)
    assert all(ranks["fp"]) and sum(ranks["plain"]) < len(copies), ranks


def test_resume_keeps_the_index_choice_and_old_shards_read_as_empty(melodies, tmp_path):
    src = tmp_path / "src"
    for i, x in enumerate(melodies[:4]):
        write(src / f"m{i}.wav", x)
    out = tmp_path / "ix"
    run_index(src, out, IndexOptions(encoder="spectral", progress=False, num_workers=0, fingerprint=False))
    write(src / "m9.wav", melodies[9])
    run_index(src, out, IndexOptions(encoder="spectral", progress=False, num_workers=0))  # no flag: stays off
    assert "fingerprint" not in json.loads((out / "index.json").read_text())
    write(src / "m10.wav", melodies[10])
    run_index(src, out, IndexOptions(encoder="spectral", progress=False, num_workers=0, fingerprint=True))
    rows = IndexDir(out).live_rows(["path", "landmarks"]).to_pylist()
    kept = {r["path"].rsplit("/", 1)[1]: bool(r["landmarks"]) for r in rows}
    assert kept == {"m0.wav": False, "m1.wav": False, "m2.wav": False, "m3.wav": False, "m9.wav": False,
                    "m10.wav": True}
    hit = Index.open(out).search(audio={"array": add_noise(melodies[10], 5.0, np.random.default_rng(1)),
                                        "sampling_rate": SR}, k=1)[0]
    assert hit["path"].endswith("m10.wav") and hit["match"] >= fp.MIN_SCORE


def test_landmarks_made_with_other_settings_are_not_used(melodies, tmp_path, caplog):
    src = tmp_path / "src"
    for i, x in enumerate(melodies[:3]):
        write(src / f"m{i}.wav", x)
    out = tmp_path / "ix"
    run_index(src, out, IndexOptions(encoder="spectral", progress=False, num_workers=0, landmarks="pairs"))
    info = json.loads((out / "index.json").read_text())
    info["fingerprint"]["n_fft"] = 4 * fp.N_FFT  # as if made by a version with other settings
    (out / "index.json").write_text(json.dumps(info))
    res = Index.open(out).search(audio={"array": melodies[1], "sampling_rate": SR}, k=2)
    assert res[0]["path"].endswith("m1.wav") and "match" not in res[0]
    assert "other fingerprint settings" in caplog.text


def test_filters_and_grouping_hold_for_landmark_matches(melodies, tmp_path):
    """A file the landmarks match is still left out by a filter, and one file gives one row with group_by_file."""
    src = tmp_path / "src"
    long = np.concatenate([melodies[0], melodies[1], melodies[2]])  # 9 s: three 3-s windows
    write(src / "a" / "long.wav", long)
    for i in range(3, 8):
        write(src / "b" / f"m{i}.wav", melodies[i])
    out = tmp_path / "ix"
    run_index(src, out, IndexOptions(encoder="spectral", progress=False, num_workers=0, window_s=3.0))
    ix = Index.open(out)
    query = {"array": add_noise(melodies[1], 5.0, np.random.default_rng(2)), "sampling_rate": SR}
    res = ix.search(audio=query, k=3)
    assert res[0]["path"].endswith("long.wav") and res[0]["offset_s"] == 3.0 and res[0]["match"] >= fp.MIN_SCORE
    grouped = ix.search(audio=query, k=3, group_by_file=True)
    assert [r["path"] for r in grouped].count(res[0]["path"]) == 1 and len(grouped) == 3
    kept = ix.search(audio=query, k=3, filter={"label": "b"})
    assert len(kept) == 3 and all(r["label"] == "b" for r in kept)


def test_too_many_landmarks_for_memory_fall_back_to_cosine(melodies, tmp_path, caplog, monkeypatch):
    src = tmp_path / "src"
    for i, x in enumerate(melodies[:3]):
        write(src / f"m{i}.wav", x)
    run_index(src, tmp_path / "ix", IndexOptions(encoder="spectral", progress=False, num_workers=0))
    info = json.loads((tmp_path / "ix" / "index.json").read_text())
    del info["postings"]  # as an index from before on-disk postings: the in-memory table and its limit
    (tmp_path / "ix" / "index.json").write_text(json.dumps(info))
    monkeypatch.setattr(fp, "MAX_IN_MEMORY", 10)
    res = Index.open(tmp_path / "ix").search(audio={"array": melodies[2], "sampling_rate": SR}, k=1)
    assert res[0]["path"].endswith("m2.wav") and "match" not in res[0] and "--no-fingerprint" in caplog.text


def test_exclude_same_leaves_out_the_query_recording_only(melodies, tmp_path, capsys):
    from simsearch.cli.core import main
    from simsearch.errors import SimsearchError

    src = tmp_path / "src"
    for i, x in enumerate(melodies[:6]):
        write(src / f"m{i}.wav", x)
    write(src / "m0_copy.wav", mp3_roundtrip(melodies[0], SR))  # the same recording, re-encoded
    run_index(src, tmp_path / "ix", IndexOptions(encoder="spectral", progress=False, num_workers=0))
    ix = Index.open(tmp_path / "ix")
    query = {"array": add_noise(melodies[0], 10.0, np.random.default_rng(3)), "sampling_rate": SR}
    both = ix.search(audio=query, k=3)
    assert {r["path"].rsplit("/", 1)[1] for r in both[:2]} == {"m0.wav", "m0_copy.wav"}
    others = ix.search(audio=query, k=3, exclude_same=True)
    assert len(others) == 3 and not any(r["path"].rsplit("/", 1)[1].startswith("m0") for r in others)
    assert all(r["match"] < fp.SAME_RECORDING for r in others)
    q = write(tmp_path / "q.wav", query["array"])
    assert main(["search", str(tmp_path / "ix"), "--audio", str(q), "-k", "2", "--exclude-same", "--json"]) == 0
    assert not any("m0" in r["path"] for r in json.loads(capsys.readouterr().out))
    with pytest.raises(SimsearchError, match="audio queries"):
        ix.search(text="anything", exclude_same=True)
    run_index(src, tmp_path / "plain", IndexOptions(encoder="spectral", progress=False, num_workers=0, fingerprint=False))
    with pytest.raises(SimsearchError, match="no landmark fingerprints"):
        Index.open(tmp_path / "plain").search(audio=query, exclude_same=True)
