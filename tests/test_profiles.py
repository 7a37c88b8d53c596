"""Collection profiles (--profile): names map to the measured encoders, auto reads a sample, index.json records it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write

from simsearch import IndexOptions, run_index
from simsearch.cli.core import main
from simsearch.encoders import DEFAULT_ENCODER, default_conditioning, profiles
from simsearch.errors import SimsearchError

SR = 16000


def hit(i: int) -> np.ndarray:
    """A drum-like hit under half a second: a decaying noise burst, or a kick (a sine whose pitch falls)."""
    t = np.arange(int((0.3 + 0.02 * i) * SR)) / SR
    if i % 2:
        return (0.5 * np.random.default_rng(i).standard_normal(t.size) * np.exp(-t * 30)).astype(np.float32)
    return (0.5 * np.sin(2 * np.pi * np.cumsum(150 * np.exp(-t * 20) + 50) / SR) * np.exp(-t * 12)).astype(np.float32)


def chord(i: int) -> np.ndarray:
    """A 4-s major triad of harmonic tones with a piano-like attack and slow decay."""
    t = np.arange(4 * SR) / SR
    root = 196 * 2 ** (i / 12)
    x = sum(0.6 ** k * np.sin(2 * np.pi * f * (k + 1) * t) for f in (root, root * 1.26, root * 1.5) for k in range(8))
    return (0.1 * x * np.minimum(1, t / 0.01) * np.exp(-0.6 * t)).astype(np.float32)


def hum(i: int) -> np.ndarray:
    """3 s of slowly swelling broadband noise: no music, no hit."""
    t = np.arange(3 * SR) / SR
    return (0.2 * np.random.default_rng(i).standard_normal(t.size) * (1 + 0.5 * np.sin(np.pi * t))).astype(np.float32)


def folder(root: Path, make, n: int = 6) -> Path:
    for i in range(n):
        write(root / f"{make.__name__}{i}.wav", make(i))
    return root


def test_profiles_map_to_the_measured_encoders():
    assert profiles.encoder_for("general") == DEFAULT_ENCODER
    assert profiles.encoder_for("music") == "whiten(yamnet)+whiten(aisfx)+basic-pitch*3"
    assert profiles.encoder_for("oneshots") == "aisfx+spectral+onset-envelope"
    assert profiles.encoder_for("copies") == f"{DEFAULT_ENCODER}+copynet*1.333"
    for p in profiles.PROFILES.values():
        default_conditioning(p.encoder)  # every part is a registered encoder
        assert p.why
    assert profiles.NAMES == ("general", "music", "oneshots", "copies", "auto")
    with pytest.raises(SimsearchError, match="unknown profile"):
        profiles.encoder_for("auto")
    assert profiles.resolve("music", []) == {"name": "music", "chose": "music", "encoder": profiles.encoder_for("music"),
                                             "why": profiles.PROFILES["music"].why}


def test_decide_reads_hits_first_then_music():
    assert profiles.decide(oneshot_share=0.7, music_share=0.9) == "oneshots"
    assert profiles.decide(oneshot_share=0.5, music_share=0.8) == "music"
    assert profiles.decide(oneshot_share=0.0, music_share=0.2) == "general"
    assert profiles.decide(profiles.ONESHOTS_MIN, 0.0) == "oneshots"
    assert profiles.decide(0.0, profiles.MUSIC_MIN) == "music"


def test_profile_and_encoder_together_is_an_error(tmp_path, capsys):
    src = folder(tmp_path / "hits", hit, 2)
    assert main(["index", str(src), "--out", str(tmp_path / "ix"), "--profile", "music", "--encoder", "spectral"]) == 2
    assert "give --profile or --encoder, not both" in capsys.readouterr().err
    with pytest.raises(SimsearchError, match="not both"):
        run_index(src, tmp_path / "ix", IndexOptions(encoder="spectral", profile="music", progress=False))
    assert not (tmp_path / "ix" / "index.json").exists()


def test_auto_on_generated_hits_chords_and_noise(tmp_path):
    chose, evidence = profiles.choose([str(p) for p in folder(tmp_path / "hits", hit).iterdir()])
    assert chose == "oneshots" and evidence["oneshot_share"] == 1.0 and evidence["sampled"] == 6
    chose, evidence = profiles.choose([str(p) for p in folder(tmp_path / "chords", chord).iterdir()])
    assert chose == "music" and evidence["oneshot_share"] == 0.0 and evidence["music_share"] >= profiles.MUSIC_MIN
    chose, evidence = profiles.choose([str(p) for p in folder(tmp_path / "hum", hum).iterdir()])
    assert chose == "general" and evidence == {"sampled": 6, "unreadable": 0, "oneshot_share": 0.0, "music_share": 0.0}
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    assert profiles.choose([str(tmp_path / "bad.wav")]) == (
        "general", {"sampled": 0, "unreadable": 1, "oneshot_share": 0.0, "music_share": 0.0})


def test_auto_on_real_collections(shared_data):
    """Sonic Pi (drums, loops, notes, ambience) reads as music; FSDD's spoken digits as general."""
    sonic = sorted(str(p) for p in (shared_data / "sonic-pi").glob("*.flac"))
    digits = sorted(str(p) for p in (shared_data / "fsdd" / "recordings").glob("*.wav"))
    if not sonic or not digits:
        pytest.skip("Sonic Pi samples or FSDD recordings missing under shared/data")
    chose, evidence = profiles.choose(sonic)
    assert chose == "music" and evidence["sampled"] == profiles.SAMPLE_FILES and evidence["oneshot_share"] < 0.6
    chose, evidence = profiles.choose(digits)
    assert chose == "general" and evidence["music_share"] == 0.0


def test_auto_index_records_evidence_keeps_its_encoder_and_searches(tmp_path, capsys):
    src = folder(tmp_path / "hits", hit)
    out = tmp_path / "ix"
    assert main(["index", str(src), "--out", str(out), "--profile", "auto", "-q", "--workers", "1"]) == 0
    info = json.loads((out / "index.json").read_text())
    assert info["encoder"]["name"] == "aisfx+spectral+onset-envelope"
    assert info["profile"]["name"] == "auto" and info["profile"]["chose"] == "oneshots"
    assert info["profile"]["evidence"] == {"sampled": 6, "unreadable": 0, "oneshot_share": 1.0, "music_share": 1.0}
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert "auto -> oneshots" in capsys.readouterr().out

    query = src / "hit3.wav"
    assert main(["search", str(out), "--audio", str(query), "-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["path"] == str(query.resolve()) and len(hits) == 3

    # Resuming with auto keeps the recorded choice, even once the folder would now read as music.
    folder(src, chord, 8)
    summary = run_index(src, out, IndexOptions(profile="auto", progress=False, num_workers=0))
    assert summary.indexed == 8 and summary.skipped == 6
    again = json.loads((out / "index.json").read_text())
    assert again["encoder"]["name"] == info["encoder"]["name"] and again["profile"] == info["profile"]
    # Neither flag means the default encoder, as before: refused, with a hint.
    assert main(["index", str(src), "--out", str(out), "-q"]) == 2
    assert "--profile auto: repeat it" in capsys.readouterr().err


def test_named_profile_index_and_app_facts(tmp_path):
    from simsearch.app.pool import IndexPool
    from simsearch.app.views import index_overview

    out = tmp_path / "ix"
    run_index(folder(tmp_path / "hits", hit, 4), out, IndexOptions(profile="oneshots", progress=False, num_workers=0))
    info = json.loads((out / "index.json").read_text())
    assert info["profile"] == {"name": "oneshots", "chose": "oneshots", "encoder": "aisfx+spectral+onset-envelope",
                               "why": profiles.PROFILES["oneshots"].why}
    pool = IndexPool([out], warm=False)
    md, _ = index_overview(pool.get(None))
    pool.close()
    assert "| **profile** | oneshots |" in md


def test_music_profile_fits_its_whitening_and_searches_from_the_cli(tmp_path, capsys):
    from simsearch.encoders.whitening import WHITENING_FILE

    src, out = folder(tmp_path / "chords", chord, 8), tmp_path / "ix"
    assert main(["index", str(src), "--out", str(out), "--profile", "music", "-q", "--workers", "1",
                 "--transcribe", "off"]) == 0
    info = json.loads((out / "index.json").read_text())
    assert info["encoder"]["name"] == profiles.encoder_for("music")
    assert info["encoder"]["whitened"] == ["yamnet", "aisfx"] and (out / WHITENING_FILE).is_file()
    capsys.readouterr()
    query = src / "chord2.wav"
    assert main(["search", str(out), "--audio", str(query), "-k", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["path"] == str(query.resolve())
