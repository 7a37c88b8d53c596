"""The copy detector trained on the collection: its changed copies, its training, its file, and an index made with it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import noise, tone, write

from simsearch import Index, IndexOptions, run_index
from simsearch.audio.augment import changed_copy, training_rooms
from simsearch.audio.perturb import add_noise, room_recording
from simsearch.encoders import copynet, get_encoder
from simsearch.errors import ModelNotFoundError, SimsearchError
from simsearch.evaluation.robustness import RobustnessRun, run_robustness

SR = 16000


def sounds(n: int) -> list[np.ndarray]:
    """n one-second sounds that differ in pitch, rhythm and colour (tone bursts over coloured noise)."""
    out = []
    for i in range(n):
        rng = np.random.default_rng(i)
        x = tone(200 * 2 ** (i / 3), 1.0, seed=i, amp=0.3)
        env = (np.sin(2 * np.pi * (2 + i % 4) * np.arange(SR) / SR) > 0).astype(np.float32)
        out.append((x * env + np.convolve(noise(1.0, amp=0.1, seed=50 + i), rng.random(8 + i), "same")).astype(np.float32))
    return out


def test_a_changed_copy_keeps_the_length_and_reproduces_from_its_seed():
    x, other = sounds(2)
    rooms = training_rooms(SR)[:2]
    a = changed_copy(x, SR, np.random.default_rng(3), rooms, other)
    b = changed_copy(x, SR, np.random.default_rng(3), rooms, other)
    c = changed_copy(x, SR, np.random.default_rng(4), rooms, other)
    assert a.shape == x.shape and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, x)


def test_training_finds_each_sound_again_under_loud_noise_and_a_room(tmp_path):
    clips = sounds(12)
    net, summary = copynet.train(clips, training_rooms(SR)[:4], copynet.TrainSettings(steps=60, batch=12),
                                 device="cpu", progress=False)
    copynet.save(tmp_path / copynet.COPYNET_FILE, net, summary)
    enc = get_encoder("copynet", str(tmp_path / copynet.COPYNET_FILE), "cpu")
    assert enc.trained_on["steps"] == 60 and enc.describe()["trained_on"]["clips"] == 12

    def rank1(copies):
        a = enc.embed_audio(clips)
        b = enc.embed_audio(copies)
        a, b = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in (a, b))
        return float(((b @ a.T).argmax(axis=1) == np.arange(len(clips))).mean())

    noisy = [add_noise(x, 0.0, np.random.default_rng(900 + i)) for i, x in enumerate(clips)]
    roomed = [room_recording(x, SR, np.random.default_rng(i)) for i, x in enumerate(clips)]  # the harness's rooms
    assert rank1(noisy) >= 0.9 and rank1(roomed) >= 0.9

    short, long = clips[0][: SR // 2], np.tile(clips[1], 10)  # a clip's vector does not depend on its batch
    np.testing.assert_allclose(enc.embed_audio([short])[0], enc.embed_audio([short, long])[0], atol=1e-4)

    untrained, _ = copynet.train(clips, [], copynet.TrainSettings(steps=1, batch=12, lr=1e-9), progress=False)
    copynet.save(tmp_path / "untrained.pt", untrained, {})
    enc = get_encoder("copynet", str(tmp_path / "untrained.pt"), "cpu")
    assert rank1(noisy) < 0.9  # what the training adds


@pytest.mark.parametrize("steps", [1, 2, 10, 21])
def test_any_number_of_steps_trains(steps):
    net, summary = copynet.train(sounds(3), [], copynet.TrainSettings(steps=steps, batch=3), device="cpu",
                                 progress=False)
    assert summary["steps"] == steps and np.isfinite(summary["final_loss"])


def test_missing_foreign_or_absent_weights_are_clear_errors(tmp_path):
    with pytest.raises(SimsearchError, match="no weights loaded.*index one with"):
        get_encoder("copynet", device="cpu").embed_audio([tone(440)])
    with pytest.raises(ModelNotFoundError, match="looked for the file"):
        get_encoder("copynet", str(tmp_path / "none.pt"), "cpu")
    for foreign in ({"state_dict": {}}, {"format": copynet.FORMAT}, {"format": copynet.FORMAT, "config": {}}, [1, 2]):
        torch.save(foreign, tmp_path / "foreign.pt")
        with pytest.raises(SimsearchError, match="not a copynet checkpoint"):
            get_encoder("copynet", str(tmp_path / "foreign.pt"), "cpu")


def test_an_index_trains_it_once_and_queries_use_it(tmp_path):
    src, out = tmp_path / "src", tmp_path / "idx"
    for i, x in enumerate(sounds(8)):
        write(src / f"s{i}.wav", x)
    opts = dict(encoder="spectral+copynet", progress=False, device="cpu", transcribe="off", copynet_steps=5)
    run_index(src, out, IndexOptions(**opts))
    trained = out / copynet.COPYNET_FILE
    info = json.loads((out / "index.json").read_text())
    assert info["encoder"]["name"] == "spectral+copynet" and info["dim"] == 168 + 128
    assert info["encoder"]["parts"][1]["trained_on"]["steps"] == 5
    assert info["encoder"]["parts"][1]["checkpoint"] is None  # the index's own file: the folder can move
    before = trained.read_bytes()
    write(src / "s8.wav", sounds(9)[8])  # a later run adds with the network it has
    run_index(src, out, IndexOptions(**opts))
    assert trained.read_bytes() == before

    out = Path(shutil.move(out, tmp_path / "moved"))
    trained = out / copynet.COPYNET_FILE
    index = Index.open(out, device="cpu")
    for name in ("s2.wav", "s8.wav"):
        assert Path(index.search(audio=src / name, k=1)[0]["path"]).name == name

    trained.unlink()
    with pytest.raises(ModelNotFoundError, match="copynet.pt"):
        Index.open(out, device="cpu").search(audio=src / "s2.wav", k=1)
    with pytest.raises(ModelNotFoundError, match="copynet.pt"):  # never retrained under existing rows
        run_index(src, out, IndexOptions(**opts))


def test_the_robustness_harness_trains_it_on_the_originals(tmp_path):
    for i, x in enumerate(sounds(6)):
        write(tmp_path / f"k{i % 2}_{i}.wav", x)
    run = RobustnessRun(encoder="copynet", options={}, label_regex=r"^(k\d)_", perturbations=["white10"],
                        device="cpu", copynet_steps=3, progress=False, fingerprint=False)
    result = run_robustness(tmp_path, run)
    assert set(result.rows) == {"clean", "white10"} and result.rows["clean"]["rank1"] == 1.0
    assert result.info["encoder"]["trained_on"]["steps"] == 3
