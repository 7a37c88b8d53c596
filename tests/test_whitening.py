"""Collection whitening of fusion parts: the fit, the marks in encoder names, and an index that fits, keeps and
reuses its map for later runs and queries."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tone, write

from simsearch import IndexOptions, run_index
from simsearch.encoders import get_encoder, whitening
from simsearch.encoders.fusion import parse_part
from simsearch.errors import IndexFormatError, SimsearchError
from simsearch.evaluation.compare import knn_predict
from simsearch.search.index import Index
from simsearch.vectors import normalize

ENCODER = "whiten(spectral)+onset-envelope*2"


def test_marks_parse_and_keep_the_weight():
    assert whitening.marked(" whiten(yamnet)*2") and not whitening.marked("yamnet")
    assert whitening.bare("whiten(aisfx)*2") == "aisfx*2"
    assert parse_part("whiten(aisfx)*2", "x") == ("aisfx", 2.0)
    with pytest.raises(SimsearchError, match="whiten\\(NAME\\)"):
        whitening.bare("whiten()")


def test_fit_gives_unit_variance_on_the_kept_directions():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 40)) @ rng.standard_normal((40, 40)) * np.linspace(5, 0.01, 40) + 3.0
    w = whitening.fit(x, keep=0.95)
    z = (x - w.mean) @ w.projection
    assert 1 < w.dim < 40
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(w.dim), atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(w.apply(x[:5]), axis=1), 1.0, rtol=1e-5)
    with pytest.raises(SimsearchError, match="same vector"):
        whitening.fit(np.ones((10, 4)))


def test_whitening_lets_small_class_differences_outvote_a_shared_direction():
    """Rows share one loud nuisance direction (think loudness or pitch) and differ by class in quiet ones: raw cosine
    neighbours follow the nuisance, whitened ones the class."""
    rng = np.random.default_rng(1)
    classes = rng.standard_normal((4, 32))
    labels = np.repeat(np.array(list("abcd")), 50)
    nuisance = np.zeros(32)
    nuisance[0] = 1
    x = 10 + classes[np.repeat(np.arange(4), 50)] * 0.3 + rng.standard_normal((200, 32)) * 0.2
    x += np.outer(rng.normal(0, 8, 200), nuisance)
    x = normalize(x)
    train, test = np.arange(200) % 2 == 0, np.arange(200) % 2 == 1
    raw = (knn_predict(x[test], x[train], labels[train], 5) == labels[test]).mean()
    w = whitening.fit(x[train], keep=0.99)
    white = (knn_predict(w.apply(x[test]), w.apply(x[train]), labels[train], 5) == labels[test]).mean()
    assert white > 0.95 and white > raw + 0.15


def clips(root: Path, n: int, start: int = 0) -> Path:
    for i in range(start, start + n):
        write(root / f"tone{i:02d}.wav", tone(220 * 2 ** (i / 7), seconds=1.5, seed=i))
    return root


def test_index_fits_the_map_once_and_queries_use_it(tmp_path):
    src, out = clips(tmp_path / "src", 12), tmp_path / "idx"
    run_index(src, out, IndexOptions(encoder=ENCODER, progress=False, device="cpu", transcribe="off"))
    info = json.loads((out / "index.json").read_text())
    fitted = out / whitening.WHITENING_FILE
    maps = whitening.load(fitted, ["spectral"])
    assert info["encoder"]["name"] == ENCODER and info["encoder"]["whitened"] == ["spectral"]
    assert info["dim"] == maps["spectral"].dim + 210 and maps["spectral"].dim < 168
    with np.load(fitted) as z:
        assert int(z["rows"]) == 12 and int(z["files"]) == 12

    before = fitted.read_bytes()
    clips(src, 3, start=12)  # a later run adds files with the map it has
    run_index(src, out, IndexOptions(encoder=ENCODER, progress=False, device="cpu"))
    assert fitted.read_bytes() == before

    index = Index.open(out, device="cpu")
    for name in ("tone03.wav", "tone13.wav"):
        assert Path(index.search(audio=src / name, k=1)[0]["path"]).name == name
    np.testing.assert_allclose(index.embed_query(src / "tone13.wav"), index.embeddings()[index.core_rows["path"].str
                               .endswith("tone13.wav").to_numpy()][0], atol=1e-5)

    fitted.unlink()
    with pytest.raises(IndexFormatError, match="whitening.npz is missing"):
        Index.open(out, device="cpu").search(audio=src / "tone03.wav", k=1)
    with pytest.raises(IndexFormatError, match="whitening.npz is missing"):  # never refitted under existing rows
        run_index(src, out, IndexOptions(encoder=ENCODER, progress=False, device="cpu"))


def test_a_whitening_fusion_embeds_nothing_without_its_map():
    enc = get_encoder(ENCODER, device="cpu")
    with pytest.raises(SimsearchError, match="none is loaded"):
        enc.embed_batch([tone(440)])


def test_a_collection_too_small_to_fit_is_refused_with_a_way_out(tmp_path):
    src = clips(tmp_path / "src", 3)
    with pytest.raises(SimsearchError, match="only 3 readable window"):
        run_index(src, tmp_path / "idx", IndexOptions(encoder=ENCODER, progress=False, device="cpu"))
    assert not (tmp_path / "idx" / whitening.WHITENING_FILE).exists()


def test_a_damaged_or_foreign_map_is_refused_by_name(tmp_path):
    src, out = clips(tmp_path / "src", 10), tmp_path / "idx"
    run_index(src, out, IndexOptions(encoder=ENCODER, progress=False, device="cpu", transcribe="off"))
    fitted = out / whitening.WHITENING_FILE
    good = fitted.read_bytes()
    fitted.write_bytes(good[: len(good) // 2])  # cut short
    with pytest.raises(IndexFormatError, match="whitening.npz is damaged"):
        Index.open(out, device="cpu").search(audio=src / "tone03.wav", k=1)
    w = whitening.fit(np.random.default_rng(0).standard_normal((20, 5)))
    whitening.save(fitted, {"spectral": w}, 20, 20)  # fitted to 5-d vectors, not spectral's 168
    with pytest.raises(IndexFormatError, match="fitted to other spectral vectors"):
        Index.open(out, device="cpu").search(audio=src / "tone03.wav", k=1)
