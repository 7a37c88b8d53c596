"""MERT read from its official checkpoint layout gives the reference code's outputs, indexes and searches through the
CLI, and says clearly what is missing when a checkpoint is not there."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import noise, tone

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import mert_parity as mp  # noqa: E402

from simsearch.cli.core import main  # noqa: E402
from simsearch.encoders import get_encoder  # noqa: E402
from simsearch.errors import ModelNotFoundError, SimsearchError  # noqa: E402


@pytest.fixture(scope="module")
def reference():
    return np.load(mp.REFERENCE)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """A small MERT checkpoint folder in the official layout (weight norm saved as weight_g / weight_v)."""
    return mp.save_checkpoint(tmp_path_factory.mktemp("mert") / "small", mp.SMALL, mp.CASES["small"][1])


def check(case: str, enc, reference) -> None:
    for name, (diff, cos) in mp.compare(case, enc, reference).items():
        assert diff <= 1e-4 and cos > 1 - 1e-6, (name, diff, cos)


@pytest.mark.parametrize("case", ["small", "deepnorm", "prenorm"])
def test_small_configs_match_the_reference_code(case, tmp_path, reference):
    """Reference outputs: MERT's own MERTModel (transformers 4.40) on the same recipe weights and input; post-norm
    (the v1 layout), deepnorm residuals, and pre-norm layers over a layer-norm conv front end."""
    config, seed, seconds = mp.CASES[case]
    assert len(mp.official_shapes(config)) == int(reference[f"{case}_n_keys"])  # same state-dict layout
    enc = get_encoder("mert", checkpoint=str(mp.save_checkpoint(tmp_path / case, config, seed)), device="cpu")
    assert enc.sample_rate == 24000 and enc.dim == 32 and enc.describe()["layer"] is None
    n_frames = enc.embed_frames([mp.test_input(seed, seconds)]).frames.shape[1]
    assert n_frames == int(reference[f"{case}_n_frames"]) == int(75 * seconds) - 1  # 75 frames/s
    check(case, enc, reference)


def test_real_size_config_matches_the_reference_code(tmp_path, reference):
    """MERT-v1-95M's architecture (94.4M parameters) on random recipe weights, fp32."""
    torch.set_num_threads(2)
    folder = mp.save_checkpoint(tmp_path / "real", mp.REAL, mp.CASES["real"][1])
    enc = get_encoder("mert", checkpoint=str(folder), device="cpu")
    assert sum(p.numel() for p in enc.model.parameters()) == 94_370_944
    check("real", enc, reference)


def test_input_is_normalised_and_batches_equal_clips_alone(small):
    enc = get_encoder("mert", checkpoint=str(small), device="cpu")
    a, b = mp.test_input(1, 1.0), mp.test_input(2, 2.5)
    together = enc.embed_audio([a, b, a])
    alone = np.stack([enc.embed_audio([a])[0], enc.embed_audio([b])[0]])
    np.testing.assert_allclose(together, alone[[0, 1, 0]], atol=1e-5)
    np.testing.assert_allclose(enc.embed_audio([3 * a])[0], alone[0], atol=1e-4)  # level removed by do_normalize
    prep = json.loads((small / "preprocessor_config.json").read_text())
    raw = small.parent / "raw"
    shutil.copytree(small, raw)
    (raw / "preprocessor_config.json").write_text(json.dumps({**prep, "do_normalize": False}))
    assert not np.allclose(get_encoder("mert", checkpoint=str(raw), device="cpu").embed_audio([a]), alone[0],
                           atol=1e-3)


def test_layer_option(small):
    enc = get_encoder("mert", checkpoint=str(small), device="cpu")
    clip = mp.test_input(3, 1.0)
    last = enc.embed_audio([clip])
    for layer, same in ((2, True), (-1, True), (0, False), (1, False)):
        got = get_encoder("mert", checkpoint=str(small), device="cpu", layer=layer).embed_audio([clip])
        assert np.allclose(got, last, atol=1e-6) == same, layer
    with pytest.raises(SimsearchError, match="layer 3 out of range"):
        get_encoder("mert", checkpoint=str(small), device="cpu", layer=3)


def test_index_and_search_through_the_cli(small, tmp_path, capsys):
    src = tmp_path / "src"
    for label, clips in {"tones": [tone(220, 1.5, 24000, seed=1), tone(330, 1.5, 24000, seed=2)],
                         "hiss": [noise(1.5, 24000, seed=3), noise(1.5, 24000, seed=4)]}.items():
        (src / label).mkdir(parents=True)
        for i, x in enumerate(clips):
            sf.write(src / label / f"{label}{i}.wav", x, 24000)
    out = tmp_path / "ix"
    assert main(["index", str(src), "--out", str(out), "--encoder", "mert", "--checkpoint", str(small), "-q",
                 "--workers", "1"]) == 0
    info = json.loads((out / "index.json").read_text())
    assert info["encoder"]["name"] == "mert" and info["encoder"]["dim"] == 32
    capsys.readouterr()
    assert main(["search", str(out), "--audio", str(src / "hiss" / "hiss0.wav"), "-k", "4", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 4 and hits[0]["path"].endswith("hiss0.wav") and hits[0]["cosine"] > 0.999


def test_missing_checkpoint_says_what_and_how(small, tmp_path, monkeypatch):
    with pytest.raises(ModelNotFoundError, match="does not exist.*huggingface-cli download m-a-p/MERT-v1-95M"):
        get_encoder("mert", checkpoint=str(tmp_path / "nope"), device="cpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelNotFoundError, match=r"m-a-p/MERT-v1-95M.*huggingface-cli download m-a-p/MERT-v1-95M"):
        get_encoder("mert", device="cpu")  # the default checkpoint, neither a folder nor in the hub cache
    bare = tmp_path / "bare"
    shutil.copytree(small, bare)
    (bare / "pytorch_model.bin").unlink()
    with pytest.raises(ModelNotFoundError, match="no model weights.*pytorch_model.bin"):
        get_encoder("mert", checkpoint=str(bare), device="cpu")
    shutil.copy(small / "pytorch_model.bin", bare)
    (bare / "preprocessor_config.json").unlink()
    with pytest.raises(ModelNotFoundError, match="no preprocessor_config.json"):
        get_encoder("mert", checkpoint=str(bare), device="cpu")


def test_incomplete_or_foreign_checkpoints_are_refused(small, tmp_path):
    part = tmp_path / "part"
    shutil.copytree(small, part)
    state = torch.load(part / "pytorch_model.bin", weights_only=True)
    state.pop("encoder.layers.1.attention.q_proj.weight")
    torch.save(state, part / "pytorch_model.bin")
    with pytest.raises(ModelNotFoundError, match="1 of .* parameters are missing.*q_proj"):
        get_encoder("mert", checkpoint=str(part), device="cpu")
    config = json.loads((small / "config.json").read_text())
    for changes, message in (({"feature_extractor_cqt": True}, "feature_extractor_cqt=True"),
                             ({"model_type": "hubert"}, "not MERT")):
        odd = tmp_path / next(iter(changes))
        shutil.copytree(small, odd)
        (odd / "config.json").write_text(json.dumps({**config, **changes}))
        with pytest.raises(SimsearchError, match=message):
            get_encoder("mert", checkpoint=str(odd), device="cpu")
