"""Pitch, tempo and speed changes, mixes and reverb do what they say; the harness counts false same-recording
claims and mixes in recordings of the asked kind."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import tone

from simsearch.audio.perturb import (
    GROUPS,
    PERTURBATIONS,
    mix_in,
    perturb,
    pitch_shift,
    reverb,
    rms,
    room_recording,
    simulated_room,
    speed,
    stretch,
)
from simsearch.errors import SimsearchError
from simsearch.evaluation.robustness import RobustnessRun, perturbation_names, recovery, run_robustness, same_claims

SR = 22050


def peak_hz(x: np.ndarray, sr: int = SR) -> float:
    """Frequency of the strongest FFT bin (Hann window)."""
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[spec.argmax()])


@pytest.mark.parametrize("semitones", [1, -1, 2, -2])
def test_pitch_shift_moves_a_tone_by_the_ratio_and_keeps_the_length(semitones):
    x = tone(440, 2.0, SR, noise=0.0)
    y = perturb(f"pitch{semitones:+d}", x, SR)
    assert len(y) == len(x)
    assert peak_hz(y) == pytest.approx(440 * 2 ** (semitones / 12), rel=0.004)


@pytest.mark.parametrize("percent", [5, -5, 10, -10])
def test_tempo_keeps_the_pitch_and_changes_the_length(percent):
    x = tone(440, 2.0, SR, noise=0.0)
    y = perturb(f"tempo{percent:+d}", x, SR)
    assert len(y) == round(len(x) / (1 + percent / 100))
    assert peak_hz(y) == pytest.approx(440, rel=0.004)


@pytest.mark.parametrize("percent", [5, -5])
def test_speed_moves_pitch_and_length_together(percent):
    x = tone(440, 2.0, SR, noise=0.0)
    y = perturb(f"speed{percent:+d}", x, SR)
    factor = 1 + percent / 100
    assert len(y) == pytest.approx(len(x) / factor, abs=2)
    assert peak_hz(y) == pytest.approx(440 * factor, rel=0.004)


def test_clips_shorter_than_the_vocoder_window_still_change():
    x = tone(440, 0.02, SR, noise=0.0)
    for name in GROUPS["pitch-tempo"]:
        assert 0 < len(perturb(name, x, SR)) < 2 * len(x)


def test_stretch_and_speed_compose_into_pitch_shift():
    x = tone(300, 1.0, SR, noise=0.0)
    assert len(stretch(x, SR, 0.5)) == 2 * len(x) and len(speed(x, SR, 2.0)) == len(x) // 2
    assert peak_hz(pitch_shift(x, SR, 12)) == pytest.approx(600, rel=0.004)


@pytest.mark.parametrize("snr", [0, 5])
def test_mix_adds_the_other_recording_at_the_snr(snr):
    x, other = tone(440, 1.0, SR, noise=0.0), tone(1500, 0.3, SR, amp=0.1, noise=0.0)
    y = mix_in(x, other, snr, np.random.default_rng(0))
    assert len(y) == len(x)
    assert 20 * np.log10(rms(x) / rms(y - x)) == pytest.approx(snr, abs=0.05)  # looped over the whole clip
    kind = "speech"
    np.testing.assert_array_equal(perturb(f"{kind}{snr}", x, SR, 3, other), perturb(f"{kind}{snr}", x, SR, 3, other))
    with pytest.raises(SimsearchError, match="speech"):
        perturb(f"{kind}{snr}", x, SR)


def test_reverb_keeps_length_and_level_and_leaves_a_decaying_tail():
    click = np.zeros(SR, np.float32)
    click[100] = 1.0
    y = reverb(click, SR, np.random.default_rng(0))
    assert len(y) == SR and rms(y) == pytest.approx(rms(click), rel=1e-4)
    energy = [rms(y[100 + i * SR // 10: 100 + (i + 1) * SR // 10]) for i in range(6)]  # 0.1-s slices
    assert all(a > b for a, b in zip(energy, energy[1:]))
    assert 20 * np.log10(energy[0] / energy[5]) == pytest.approx(50, abs=8)  # 60 dB per 0.6 s, 0.5 s apart


def test_simulated_room_starts_with_the_direct_sound_and_decays_at_its_reverb_time():
    """The room (pyroomacoustics image sources) is direct sound, then reflections and a tail that falls about
    60 dB in the asked reverb time; rooms differ, and each is the same every time it is asked for."""
    sr = 16000
    ir = simulated_room(sr, 3)
    assert np.sum(ir.astype(np.float64) ** 2) == pytest.approx(1.0, rel=1e-4)
    assert int(np.argmax(np.abs(ir))) == 64  # the direct sound, 64 samples in: no delay added to a copy
    np.testing.assert_array_equal(ir, simulated_room(sr, 3))
    assert len(ir) != len(simulated_room(sr, 4)) or not np.array_equal(ir, simulated_room(sr, 4))
    tail = np.cumsum((ir.astype(np.float64) ** 2)[::-1])[::-1]  # Schroeder backward integration
    decay_db = 10 * np.log10(tail / tail[0])
    t20 = np.argmax(decay_db < -25) - np.argmax(decay_db < -5)  # the -5 to -25 dB slope, x3 for 60 dB
    assert 3 * t20 / sr == pytest.approx(0.6, rel=0.5)
    shorter = simulated_room(sr, 3, rt60=0.3)
    assert len(shorter) < len(ir)


def test_room_recording_keeps_length_and_level_and_smears_a_click():
    click = np.zeros(16000, np.float32)
    click[100] = 1.0
    y = room_recording(click, 16000, np.random.default_rng(0))
    assert len(y) == len(click) and rms(y) == pytest.approx(rms(click), rel=1e-4)
    assert np.abs(y).argmax() == 100 + 64  # the direct sound 64 samples (its delay filter's lead) after the click
    assert np.count_nonzero(np.abs(y) > 1e-4) > 2000  # ... and reflections follow it
    np.testing.assert_array_equal(room_recording(click, 16000, None, room=5), room_recording(click, 16000, None, room=5))
    assert room_recording(np.zeros(0, np.float32), 16000, None, room=5).size == 0


def test_groups_names_and_all():
    assert GROUPS["everyday"] == perturbation_names(None) and len(GROUPS["everyday"]) == 10
    assert perturbation_names(["all"]) == list(PERTURBATIONS)
    assert perturbation_names(["pitch-tempo", "pitch+1"]) == GROUPS["pitch-tempo"]
    with pytest.raises(SimsearchError, match="groups"):
        perturbation_names(["pitch+3"])


def test_same_claims_leave_out_the_query_and_the_recording_mixed_in():
    match = np.array([[50.0, 12.0, 0.0], [4.0, 40.0, 0.0], [0.0, 30.0, 20.0]])
    assert same_claims(match) == {"own_same": 1.0, "false_same": 2 / 6, "false_bonus": 3 / 6,
                                   "pairs": 6}
    assert same_claims(match, np.array([-1, -1, 1])) == {"own_same": 1.0, "false_same": 1 / 5,
                                                             "false_bonus": 2 / 5, "pairs": 5}


def test_a_first_hit_on_the_recording_mixed_in_counts_as_either_not_as_own():
    originals = np.eye(3, dtype=np.float32)
    copies = np.array([[1, 0, 0], [0.2, 0, 1], [0, 0.9, 0.1]], np.float32)  # copy 1 lands on original 2
    plain = recovery(originals, copies, ["a", "b", "c"])
    mixed = recovery(originals, copies, ["a", "b", "c"], partner=np.array([-1, 2, -1]))
    assert plain["rank1"] == mixed["rank1"] == 1 / 3 and "rank1_either" not in plain
    assert mixed["rank1_either"] == 2 / 3


def test_robustness_mixes_other_clips_and_reports_same_claims(class_folder):
    run = RobustnessRun(encoder="spectral", perturbations=["music0", "pitch+1"], progress=False,
                        music=str(class_folder))
    r = run_robustness(class_folder, run)
    assert r.rows["music0"]["pairs"] == 12 * 11 - 12  # each copy's own original and the clip mixed in left out
    assert r.rows["clean"]["pairs"] == 12 * 11 and 0.0 <= r.summary()["false_same"] <= 1.0
    with pytest.raises(SimsearchError, match="--speech"):
        run_robustness(class_folder, RobustnessRun(encoder="spectral", perturbations=["speech5"], progress=False))


def test_robustness_asks_plain_queries_of_rows_with_a_room_twin(class_folder):
    """With a room twin only the rows carry the room view: the clean originals, asked as queries, are embedded
    plain, so their cosine to their own rows drops below 1 while most still come back first."""
    run = RobustnessRun(encoder="spectral", perturbations=["room0.6"], progress=False, fingerprint=False)
    plain = run_robustness(class_folder, run)
    assert plain.rows["clean"]["cosine"] == pytest.approx(1.0, abs=1e-5)
    twin = run_robustness(class_folder, RobustnessRun(**{**run.__dict__, "options": {"room_twin": 0.5}}))
    assert 0.9 < twin.rows["clean"]["cosine"] < 0.999 and twin.rows["clean"]["rank1"] > 0.75
    assert twin.info["encoder"]["room_twin"] == 0.5 and set(twin.rows) == {"clean", "room0.6"}


def test_excerpt_keeps_the_middle_two_seconds():
    x = np.arange(5 * SR, dtype=np.float32)
    y = perturb("excerpt2", x, SR)
    assert len(y) == 2 * SR and y[0] == (5 * SR - 2 * SR) // 2
    short = np.ones(SR, np.float32)
    np.testing.assert_array_equal(perturb("excerpt2", short, SR), short)
    assert GROUPS["hard"] == ["white0", "excerpt2"]
    loud = perturb("white0", tone(440, 1.0, SR, noise=0.0), SR)
    assert rms(loud - tone(440, 1.0, SR, noise=0.0)) == pytest.approx(rms(tone(440, 1.0, SR, noise=0.0)), rel=1e-3)
