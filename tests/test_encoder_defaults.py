"""Each encoder declares its own default conditioning (measured for the offline models, the reference input for
the hub models and BEATs, per part in a fusion), index.json records it, and the registry says honestly what runs
offline."""
from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import noise, tone

sys.path.insert(0, str(Path(__file__).parent))
import tiny_models as tm  # noqa: E402

from simsearch.audio.decode import decode  # noqa: E402
from simsearch.encoders import DEFAULT_ENCODER, SPECS, default_conditioning, get_encoder, offline_available  # noqa: E402
from simsearch.errors import IndexFormatError  # noqa: E402
from simsearch.indexing.job import run_index  # noqa: E402
from simsearch.indexing.options import IndexOptions  # noqa: E402
from simsearch.search.index import Index  # noqa: E402
from simsearch.vectors import normalize  # noqa: E402

MEASURED = {"loudness": -40.0, "trim": 40.0, "bandwidth": None, "noise_twin": None, "room_twin": None}
REFERENCE = dict.fromkeys(MEASURED)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Two clips that conditioning changes: a late, quiet start and a loud one."""
    root = tmp_path_factory.mktemp("corpus")
    late = np.concatenate([np.zeros(8000, np.float32), 0.05 * tone(440, 1.5, 16000, seed=1)])
    sf.write(root / "late.wav", late, 16000, subtype="FLOAT")
    sf.write(root / "hiss.wav", noise(1.2, 16000, amp=0.5, seed=3), 16000, subtype="FLOAT")
    return root


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory) -> Path:
    return tm.build_clap(tmp_path_factory.mktemp("tiny_clap") / "clap")


def opts(encoder: str, checkpoint: Path | None = None, **kw) -> IndexOptions:
    return IndexOptions(encoder=encoder, checkpoint=str(checkpoint) if checkpoint else None, progress=False,
                        num_workers=1, **kw)


def test_declared_defaults():
    for name in ("spectral", "yamnet", "whisper-tiny-offline", "aisfx", DEFAULT_ENCODER, "yamnet*0.3+aisfx"):
        assert default_conditioning(name) == MEASURED, name
    for name in ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "ast", "whisper", "beats", "clap", "beats+clap"):
        assert default_conditioning(name) == REFERENCE, name
    mixed = default_conditioning("clap+yamnet")
    assert mixed["loudness"] == {"clap": None, "yamnet": -40.0} and mixed["trim"] == {"clap": None, "yamnet": 40.0}
    assert mixed["bandwidth"] is None
    assert IndexOptions().encoder_options() == MEASURED  # the offline default, as before
    assert IndexOptions(encoder="beats", loudness=-30.0).encoder_options()["loudness"] == -30.0  # flags override
    assert IndexOptions(encoder="yamnet", trim="off").encoder_options()["trim"] is None


@pytest.mark.skipif(not all(offline_available(SPECS[n]) for n in DEFAULT_ENCODER.split("+")),
                    reason="the offline default's packages are not installed")
def test_default_offline_index_still_records_the_measured_conditioning(corpus, tmp_path):
    run_index(corpus, tmp_path / "ix", IndexOptions(progress=False, num_workers=1))
    enc = json.loads((tmp_path / "ix" / "index.json").read_text())["encoder"]
    assert enc["name"] == DEFAULT_ENCODER and {k: enc["options"][k] for k in MEASURED} == MEASURED
    assert all(p["loudness"] == -40.0 and p["trim"] == 40.0 for p in enc["parts"])
    assert [(p.loudness, p.trim) for p in Index.open(tmp_path / "ix", device="cpu").encoder.parts] == [(-40, 40)] * 2


def test_mixed_fusion_gives_each_part_its_own_default(corpus, tmp_path, tiny_clap):
    run_index(corpus, tmp_path / "ix", opts("clap+spectral", tiny_clap))
    enc = json.loads((tmp_path / "ix" / "index.json").read_text())["encoder"]
    assert enc["options"]["loudness"] == enc["loudness"] == {"clap": None, "spectral": -40.0}
    assert [(p["name"], p["loudness"], p["trim"]) for p in enc["parts"]] == [("clap", None, None),
                                                                             ("spectral", -40.0, 40.0)]
    index = Index.open(tmp_path / "ix", device="cpu")
    clap, spectral = index.encoder.parts
    assert (clap.loudness, clap.trim, spectral.loudness, spectral.trim) == (None, None, -40.0, 40.0)
    # the CLAP part of each stored vector is CLAP on the file as decoded
    alone = get_encoder("clap", checkpoint=str(tiny_clap), device="cpu")
    want = normalize(np.stack([alone.embed_audio([decode(p, 48000)])[0] for p in index.rows["path"]]))
    np.testing.assert_allclose(index.embeddings()[:, :24] * np.sqrt(2.0), want, atol=1e-5)
    # a plain re-run keeps the recorded per-part values; a flag is one value for every part, so another space
    assert run_index(corpus, tmp_path / "ix", opts("clap+spectral", tiny_clap)).skipped == 2
    with pytest.raises(IndexFormatError, match="loudness"):
        run_index(corpus, tmp_path / "ix", opts("clap+spectral", tiny_clap, loudness=-40.0))
    run_index(corpus, tmp_path / "both", opts("clap+spectral", tiny_clap, loudness=-30.0))
    both = json.loads((tmp_path / "both" / "index.json").read_text())["encoder"]
    assert both["options"]["loudness"] == -30.0 and [p["loudness"] for p in both["parts"]] == [-30.0, -30.0]


def test_old_index_keeps_the_conditioning_it_recorded(corpus, tmp_path, tiny_clap):
    """A CLAP index made when every encoder was conditioned recorded -40 / 40: re-runs keep adding to that space."""
    import shutil

    src = tmp_path / "src"
    shutil.copytree(corpus, src)
    run_index(src, tmp_path / "ix", opts("clap", tiny_clap, loudness=-40.0, trim=40.0))
    sf.write(src / "new.wav", tone(880, 1.0, 16000, seed=5), 16000)
    summary = run_index(src, tmp_path / "ix", opts("clap", tiny_clap))
    assert (summary.indexed, summary.skipped) == (1, 2)
    info = json.loads((tmp_path / "ix" / "index.json").read_text())
    assert info["encoder"]["options"]["loudness"] == -40.0 and info["encoder"]["options"]["trim"] == 40.0
    assert Index.open(tmp_path / "ix", device="cpu").encoder.loudness == -40.0


def test_offline_availability_is_honest():
    assert offline_available(SPECS["spectral"])
    assert not offline_available(SPECS["beats"])  # no default weights: runs only with --checkpoint FILE
    for name in ("whisper-tiny-offline", "yamnet", "aisfx"):
        gone = dataclasses.replace(SPECS[name], needs=(*SPECS[name].needs, "no_such_module_here"))
        assert not offline_available(gone)  # its runtime is part of the answer, not only its weights package
    assert "ctranslate2" in SPECS["whisper-tiny-offline"].needs and "onnxruntime" in SPECS["yamnet"].needs
    assert not offline_available(dataclasses.replace(SPECS["clap"], default_checkpoint="nobody/not-cached-here"))
    assert [n for n, s in SPECS.items() if s.text] == ["yamnet", "yamnet-torch", "passt", "htsat", "clap", "pe-audio",
                                                       "hf-tagger"]
    assert SPECS["whisper-tiny-offline"].target.startswith("whisper_ct2:")
    assert SPECS["aisfx"].target.startswith("aisfx:")
    # each of the two package-shipped models lives in its own file: aisfx.py needs nothing from whisper_ct2.py
    source = Path(importlib.util.find_spec("simsearch.encoders.aisfx").origin).read_text()
    imported = {n.module for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)}
    assert "simsearch.encoders.whisper_ct2" not in imported
