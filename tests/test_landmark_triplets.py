"""Triplet landmarks: a pitch-shifted, tempo- or speed-changed copy still finds its own recording, at the right scale."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write

from simsearch.audio import fingerprint as fp
from simsearch.audio import landmark_both, landmark_kinds
from simsearch.audio import triplets as tp
from simsearch.audio.perturb import add_noise, pitch_shift, speed, stretch
from simsearch.errors import IndexFormatError
from simsearch.indexing.job import run_index
from simsearch.indexing.options import IndexOptions
from simsearch.search.index import Index

SR = 16000


def melody(seed: int, seconds: float = 4.0) -> np.ndarray:
    """Random decaying notes (three harmonics) at random times: every seed is a different recording."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = np.zeros(len(t), np.float32)
    for _ in range(int(seconds * 5)):
        start, length, f = rng.uniform(0, seconds - 0.3), rng.uniform(0.1, 0.3), rng.uniform(200, 1500)
        on = (t >= start) & (t < start + length)
        env = rng.uniform(0.3, 1.0) * np.exp(-(t[on] - start) * rng.uniform(4, 12))
        x[on] += (env * sum(np.sin(2 * np.pi * k * f * t[on]) / k for k in (1, 2, 3))).astype(np.float32)
    return x


# change -> (expected time scale stored/query, expected log-bin shift stored - query)
CHANGES = {
    "pitch +1": (lambda x: pitch_shift(x, SR, 1), 1.0, -2),
    "pitch -1": (lambda x: pitch_shift(x, SR, -1), 1.0, 2),
    "pitch +2": (lambda x: pitch_shift(x, SR, 2), 1.0, -4),
    "pitch -2": (lambda x: pitch_shift(x, SR, -2), 1.0, 4),
    "tempo +10 %": (lambda x: stretch(x, SR, 1.1), 1.1, 0),
    "tempo -10 %": (lambda x: stretch(x, SR, 0.9), 0.9, 0),
    "speed +5 %": (lambda x: speed(x, SR, 1.05), 1.05, None),  # 0.84 semitone: 1 or 2 bins
}


@pytest.fixture(scope="module")
def melodies():
    return [melody(i) for i in range(8)]


@pytest.fixture(scope="module")
def table(melodies):
    return tp.TripletTable.build([tp.index_landmarks(x, SR) for x in melodies])


@pytest.mark.parametrize("change", list(CHANGES))
def test_changed_copy_matches_its_original_at_the_right_scale(melodies, table, change):
    make, scale, shift = CHANGES[change]
    results = [table.match(*tp.query_landmarks(make(x), SR)) for x in melodies]
    scores = np.stack([r[0] for r in results])
    own, others = np.diag(scores), scores[~np.eye(len(melodies), dtype=bool)]
    assert (scores.argmax(axis=1) == np.arange(len(melodies))).all(), scores.round(1)
    assert own.min() >= fp.SAME_RECORDING, own  # "the same recording", as search reports it
    assert others.max() < fp.SAME_RECORDING and others.max() < own.min(), (others.max(), own.min())
    scales = np.array([r[1][i] for i, r in enumerate(results)])
    assert np.abs(scales - scale).max() < 0.03, scales
    shifts = np.array([r[2][i] for i, r in enumerate(results)])
    if shift is not None:
        assert (np.abs(shifts - shift) <= 1).all(), shifts


def test_pair_landmarks_lose_the_pitch_shift_that_triplets_keep(melodies):
    """The reason for triplets: pairs hash absolute frequencies, so a copy a semitone up shares almost none."""
    pairs = fp.LandmarkTable.build([fp.index_landmarks(x, SR) for x in melodies])
    own = [pairs.scores(*fp.query_landmarks(pitch_shift(x, SR, 2), SR))[i] for i, x in enumerate(melodies)]
    assert np.median(own) < fp.SAME_RECORDING


def test_pack_round_trip_and_degenerate_inputs(melodies, table):
    h, t, f = tp.landmarks(melodies[0], SR)
    h2, t2, f2 = tp.unpack(tp.index_landmarks(melodies[0], SR))
    assert len(h) > 100 and np.array_equal(h, h2) and np.array_equal(t, t2) and np.array_equal(f, f2)
    for x in [np.zeros(0, np.float32), np.zeros(SR, np.float32), np.full(SR, np.nan, np.float32)]:
        assert len(tp.landmarks(x, SR)[0]) == 0
        assert not table.scores(*tp.query_landmarks(x, SR)).any()
    empty = tp.TripletTable.build([None, b""])
    assert empty.n_rows == 2 and not empty.scores(*tp.query_landmarks(melodies[1], SR)).any()


def test_index_records_the_kind_and_each_kind_searches(melodies, tmp_path):
    """--landmarks triplets is recorded in index.json and matched as such; a pairs index (no kind recorded, as
    indexes from before triplets) still searches with pairs; a new index keeps both; an index keeps its kind on
    resume."""
    src = tmp_path / "src"
    for i, x in enumerate(melodies[:5]):
        write(src / f"m{i}.wav", x)
    query = {"array": pitch_shift(melodies[3], SR, 2), "sampling_rate": SR}
    opts = dict(encoder="spectral", progress=False, num_workers=0)
    run_index(src, tmp_path / "tri", IndexOptions(**opts, landmarks="triplets"))
    recorded = json.loads((tmp_path / "tri" / "index.json").read_text())["fingerprint"]
    assert recorded == tp.describe() and recorded["kind"] == "triplets-v1"
    hit = Index.open(tmp_path / "tri").search(audio=query, k=2)[0]
    assert hit["path"].endswith("m3.wav") and hit["match"] >= fp.SAME_RECORDING
    run_index(src, tmp_path / "pairs", IndexOptions(**opts, landmarks="pairs"))
    assert "kind" not in json.loads((tmp_path / "pairs" / "index.json").read_text())["fingerprint"]
    run_index(src, tmp_path / "new", IndexOptions(**opts))  # a new index without the flag keeps both
    assert json.loads((tmp_path / "new" / "index.json").read_text())["fingerprint"]["kind"] == landmark_both.KIND
    assert Index.open(tmp_path / "new").search(audio=query, k=1)[0]["path"].endswith("m3.wav")
    noisy = {"array": melodies[2] + np.float32(0.01), "sampling_rate": SR}
    hit = Index.open(tmp_path / "pairs").search(audio=noisy, k=1)[0]
    assert hit["path"].endswith("m2.wav") and hit["match"] >= fp.SAME_RECORDING
    write(src / "m5.wav", melodies[5])
    run_index(src, tmp_path / "tri", IndexOptions(**opts))  # no flag: stays triplets
    assert json.loads((tmp_path / "tri" / "index.json").read_text())["fingerprint"]["kind"] == "triplets-v1"
    with pytest.raises(IndexFormatError, match="keeps pairs landmarks"):
        run_index(src, tmp_path / "pairs", IndexOptions(**opts, landmarks="triplets"))


def test_both_kinds_in_one_column_match_noisy_and_pitch_shifted_copies(melodies, tmp_path):
    """--landmarks both keeps pairs and tagged triplets in one column; a row scores the better of the two."""
    table = landmark_both.BothTable.build([landmark_both.index_landmarks(x, SR) for x in melodies])
    assert len(table.pairs.hashes) and len(table.triplets.hashes) and table.triplets.hashes.max() < 1 << 18
    rng = np.random.default_rng(0)
    for make in (lambda x: pitch_shift(x, SR, -2), lambda x: add_noise(x, 5.0, rng, "pink")):
        scores = np.stack([table.scores(*landmark_both.query_landmarks(make(x), SR)) for x in melodies])
        assert (scores.argmax(axis=1) == np.arange(len(melodies))).all() and np.diag(scores).min() >= 10
    src = tmp_path / "src"
    for i, x in enumerate(melodies[:3]):
        write(src / f"m{i}.wav", x)
    run_index(src, tmp_path / "both", IndexOptions(encoder="spectral", progress=False, num_workers=0, landmarks="both"))
    recorded = json.loads((tmp_path / "both" / "index.json").read_text())["fingerprint"]
    assert landmark_kinds.kind_of(recorded) == "both" and landmark_both.compatible(recorded)
    hit = Index.open(tmp_path / "both").search(audio={"array": speed(melodies[1], SR, 0.95), "sampling_rate": SR},
                                               k=1)[0]
    assert hit["path"].endswith("m1.wav") and hit["match"] >= fp.SAME_RECORDING
