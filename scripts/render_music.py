"""Render the labelled music development sets (instrument notes, chords, drum one-shots) with FluidSynth.

Each set is written as one General MIDI file whose events sit in fixed slots, rendered once per SoundFont
(FluidSynth loads a 140 MB SoundFont in seconds, so one run per set rather than per file), then cut into one
WAV file per slot. File names carry the label and the fold key (see scripts/music_table.sh for the regexes):

  notes/  {instrument}-{soundfont}-p{midi pitch}-v{velocity}.wav      15 instrument labels; fold key: pitch
  chords/ {root}{maj|min}-{instrument}-{voicing}-{soundfont}.wav      24 labels: 12 roots x major/minor
  drums/  {drum type}-{kit}-{note}v{velocity}.wav                     9 drum types; kit = fold key

Drum renders that repeat another kit's sample (SoundFont kits share many samples) are dropped, so a fold by kit
never holds the same sample on both sides; lmms-common's one-shots join as kits of one sample each.
Run by scripts/make_music_data.sh, which installs FluidSynth, the SoundFonts and lmms-common's samples.
"""
from __future__ import annotations

import argparse
import random
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 44100
TICKS_PER_S = 960  # division 480 at the default tempo of 120 bpm
SOUNDFONTS = {"fluid": "/usr/share/sounds/sf2/FluidR3_GM.sf2", "tim": "/usr/share/sounds/sf2/TimGM6mb.sf2"}

# General MIDI program and a playable range (MIDI pitches) for each instrument label.
INSTRUMENTS = {
    "piano": (0, 36, 96), "marimba": (12, 48, 96), "violin": (40, 55, 96), "viola": (41, 48, 84),
    "cello": (42, 36, 72), "contrabass": (43, 28, 55), "harp": (46, 36, 96), "trumpet": (56, 55, 82),
    "trombone": (57, 40, 72), "tuba": (58, 28, 55), "horn": (60, 41, 77), "oboe": (68, 58, 91),
    "bassoon": (70, 34, 72), "clarinet": (71, 50, 91), "flute": (73, 60, 96),
}
# TimGM6mb plays viola and cello from (nearly) its violin sample: magnitude spectra of a 1-s C4 have cosine 0.94
# and 0.93 with its violin there, against 0.44 and 0.34 in FluidR3; no encoder could tell them apart.
SAME_SAMPLE = {"tim": {"viola", "cello"}}
CHORD_INSTRUMENTS = {"piano": 0, "epiano": 4, "nylon": 24, "steel": 25, "electric": 27}
GUITARS = {"nylon", "steel", "electric"}
ROOTS = ["C", "Cs", "D", "Ds", "E", "F", "Fs", "G", "Gs", "A", "As", "B"]
QUALITIES = {"maj": (0, 4, 7), "min": (0, 3, 7)}
# GM percussion notes per drum type (channel 10); kits are bank-128 presets.
DRUMS = {
    "kick": (35, 36), "snare": (38, 40), "clap": (39,), "hat_closed": (42, 44), "hat_open": (46,),
    "tom": (41, 45, 48, 50), "crash": (49, 57), "ride": (51, 59), "rim": (37,),
}
DRUM_VELOCITIES = (60, 90, 110, 127)
# The Brush and Orchestra kits are left out: they put other instruments on these notes (brush swirl on 40,
# castanets on 39, timpani on 41-53), so the GM drum names above would be wrong labels there.
KITS = {"standard": 0, "room": 8, "power": 16, "electronic": 24, "tr808": 25, "jazz": 32}
LMMS_DRUMS = [  # file-name prefix in lmms-common's samples/drums -> drum type (first match wins)
    ("snare_rim", "rim"), ("nasty_rim", "rim"), ("rim", "rim"), ("sidestick", "rim"), ("bassdrum", "kick"),
    ("kick", "kick"), ("nasty_snare", "snare"), ("snare", "snare"), ("clap", "clap"), ("hihat_closed", "hat_closed"),
    ("hihat_foot", "hat_closed"), ("hihat_opened", "hat_open"), ("tom", "tom"), ("crash", "crash"), ("ride", "ride"),
]


def vlq(n: int) -> bytes:
    """MIDI variable-length quantity."""
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(reversed(out))


def write_midi(path: Path, events: list[tuple[float, bytes]]) -> None:
    """Format-0 MIDI file from (seconds, raw message) events."""
    track, now = bytearray(), 0
    for t, msg in sorted(events, key=lambda e: (e[0], e[1][0] & 0xF0 != 0xC0)):  # program changes first
        tick = int(round(t * TICKS_PER_S))
        track += vlq(tick - now) + msg
        now = tick
    track += vlq(TICKS_PER_S) + b"\xff\x2f\x00"
    head = b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480)
    path.write_bytes(head + b"MTrk" + struct.pack(">I", len(track)) + bytes(track))


def render(events: list[tuple[float, bytes]], soundfont: str, tmp: Path) -> np.ndarray:
    """Mono float32 render at RATE of the events (reverb and chorus off, so each slot holds only its own sound)."""
    mid, wav = tmp / "in.mid", tmp / "out.wav"
    write_midi(mid, events)
    subprocess.run(["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.6", "-r", str(RATE), "-F", str(wav),
                    "-T", "wav", soundfont, str(mid)], check=True, stdout=subprocess.DEVNULL)
    x, sr = sf.read(wav, dtype="float32", always_2d=True)
    assert sr == RATE, sr
    return x.mean(axis=1)


def note_on(ch: int, pitch: int, vel: int) -> bytes:
    return bytes([0x90 | ch, pitch, vel])


def note_off(ch: int, pitch: int) -> bytes:
    return bytes([0x80 | ch, pitch, 0])


def program(ch: int, prog: int) -> bytes:
    return bytes([0xC0 | ch, prog])


def cut_slots(audio: np.ndarray, slots: list[tuple[Path, float, float]]) -> int:
    """Write each (path, start s, length s) slice as 16-bit WAV; silent slices (missing preset) are skipped."""
    written = 0
    for path, start, length in slots:
        clip = audio[int(start * RATE): int((start + length) * RATE)]
        if len(clip) == 0 or np.abs(clip).max() < 1e-4:
            continue
        peak = np.abs(clip).max()
        if peak > 0.99:
            clip = clip * (0.99 / peak)
        sf.write(path, clip, RATE, subtype="PCM_16")
        written += 1
    return written


def notes_set(out: Path, rng: random.Random, pitches: int, slot: float = 3.0, held: float = 1.2,
              length: float = 2.0) -> None:
    """Single notes: each instrument at `pitches` pitches spread over its range, per SoundFont, random velocity;
    instruments a SoundFont plays from another one's sample are left out of it (SAME_SAMPLE)."""
    out.mkdir(parents=True, exist_ok=True)
    for sf_name, sf_path in SOUNDFONTS.items():
        same = SAME_SAMPLE.get(sf_name, set())
        events, slots = [], []
        for name, (prog, low, high) in INSTRUMENTS.items():
            if name in same:
                continue
            grid = np.linspace(low, high, pitches).round().astype(int)
            for pitch in grid:
                pitch = int(np.clip(pitch + rng.choice([-1, 0, 0, 1]), low, high))
                vel = rng.randint(60, 120)
                t = len(slots) * slot + 0.1
                lead = rng.uniform(0.0, 0.05)
                events += [(t - 0.05, program(0, prog)), (t + lead, note_on(0, pitch, vel)),
                           (t + lead + held, note_off(0, pitch))]
                slots.append((out / f"{name}-{sf_name}-p{pitch:03d}-v{vel:03d}.wav", t, length))
        with tempfile.TemporaryDirectory() as tmp:
            n = cut_slots(render(events, sf_path, Path(tmp)), slots)
        print(f"notes/{sf_name}: {n} files; left out as another instrument's sample: {sorted(same) or 'none'}")


def voicing(root_pc: int, quality: str, kind: str, rng: random.Random) -> list[int]:
    """MIDI pitches of one chord voicing: close (root position or an inversion) or a guitar-like open shape."""
    third, fifth = QUALITIES[quality][1], QUALITIES[quality][2]
    base = 40 + (root_pc - 4) % 12  # lowest root from E2 (guitar range) up
    if kind == "open":  # E-shape barre: R 5 R 3 5 R
        return [base, base + fifth, base + 12, base + 12 + third, base + 12 + fifth, base + 24]
    octave_root = 48 + root_pc + rng.choice([0, 12])
    tones = [octave_root, octave_root + third, octave_root + fifth]
    if kind == "inv1":
        tones = [tones[1], tones[2], tones[0] + 12]
    elif kind == "inv2":
        tones = [tones[2] - 12, tones[0], tones[1]]
    return tones + ([octave_root - 12] if rng.random() < 0.5 else [])  # sometimes a bass note under it


def chords_set(out: Path, rng: random.Random, slot: float = 3.5, held: float = 1.8, length: float = 2.5) -> None:
    """Major and minor triads on every root, per instrument in three voicings; the SoundFont drawn per file."""
    out.mkdir(parents=True, exist_ok=True)
    jobs = {name: ([], []) for name in SOUNDFONTS}
    for inst, prog in CHORD_INSTRUMENTS.items():
        for r, root in enumerate(ROOTS):
            for quality in QUALITIES:
                for kind in ("close", "inv1" if rng.random() < 0.5 else "inv2", "open"):
                    sf_name = rng.choice(list(SOUNDFONTS))
                    events, slots = jobs[sf_name]
                    t = len(slots) * slot + 0.1
                    pitches = voicing(r, quality, kind, rng)
                    strum = rng.uniform(0.015, 0.04) if inst in GUITARS else rng.uniform(0.0, 0.008)
                    vel = rng.randint(70, 115)
                    events.append((t - 0.05, program(0, prog)))
                    for i, p in enumerate(sorted(pitches)):
                        v = int(np.clip(vel + rng.randint(-8, 8), 1, 127))
                        events += [(t + i * strum, note_on(0, p, v)), (t + held, note_off(0, p))]
                    slots.append((out / f"{root}{quality}-{inst}-{kind}-{sf_name}.wav", t, length))
    for sf_name, (events, slots) in jobs.items():
        with tempfile.TemporaryDirectory() as tmp:
            n = cut_slots(render(events, SOUNDFONTS[sf_name], Path(tmp)), slots)
        print(f"chords/{sf_name}: {n} files")


def same_sample(a: np.ndarray, b: np.ndarray, max_lag: int = 512) -> bool:
    """Whether two unit-norm clip heads are one waveform up to gain and a shift of at most max_lag samples."""
    from scipy.signal import correlate

    c = correlate(a, b, mode="full", method="fft")
    mid = len(b) - 1
    return float(np.abs(c[mid - max_lag: mid + max_lag + 1]).max()) > 0.97


def drums_set(out: Path, lmms: Path | None, per_class: int = 4, slot: float = 2.5,
              length: float = 1.5) -> None:
    """GM drum kits of both SoundFonts (a kit's velocity layers share its fold key) plus lmms-common one-shots."""
    out.mkdir(parents=True, exist_ok=True)
    kept: dict[str, list[tuple[str, np.ndarray]]] = {}  # drum type -> (kit, normalised head) of renders kept
    written = dropped = 0
    for sf_name, sf_path in SOUNDFONTS.items():
        events, slots = [], []
        for kit, prog in KITS.items():
            for label, notes in DRUMS.items():
                for i in range(per_class):
                    note, vel = notes[i % len(notes)], DRUM_VELOCITIES[i % len(DRUM_VELOCITIES)]
                    t = len(slots) * slot + 0.1
                    events += [(t - 0.05, program(9, prog)), (t, note_on(9, note, vel)), (t + 0.5, note_off(9, note))]
                    slots.append((out / f"{label}-{sf_name}{kit}-{note}v{vel:03d}.wav", t, length, label,
                                  sf_name + kit))
        with tempfile.TemporaryDirectory() as tmp:
            audio = render(events, sf_path, Path(tmp))
        for path, start, dur, label, kit_key in slots:
            clip = audio[int(start * RATE): int((start + dur) * RATE)]
            head = clip[: RATE // 4] / (np.linalg.norm(clip[: RATE // 4]) + 1e-9)
            # another kit's sample, at any velocity, is the same waveform scaled (and shifted by up to one synth
            # block): peak normalised cross-correlation ~1. A kit's own velocity layers share its fold key.
            if not np.abs(head).max() or any(k != kit_key and same_sample(head, h) for k, h in kept.get(label, [])):
                dropped += 1
                continue
            written += cut_slots(clip, [(path, 0.0, dur)])
            kept.setdefault(label, []).append((kit_key, head))
        print(f"drums/{sf_name}: {written} files so far, {dropped} dropped as another kit's sample")
    if lmms is not None and lmms.is_dir():
        n = 0
        for f in sorted(lmms.glob("*.ogg")):
            label = next((lab for prefix, lab in LMMS_DRUMS if f.stem.startswith(prefix)), None)
            if label is None:
                continue
            try:
                x, sr = sf.read(f, dtype="float32", always_2d=True)
            except sf.LibsndfileError as e:  # kick04.ogg is a WAV with a malformed header
                print(f"skipped {f.name}: {e}")
                continue
            x = x.mean(axis=1)[: int(sr * length)]
            kit = "lmms" + f.stem.replace("_", "")
            sf.write(out / f"{label}-{kit}-0v100.wav", x, sr, subtype="PCM_16")
            n += 1
        print(f"drums/lmms: {n} files")


def main() -> None:
    """Render the sets named by --sets under --out."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder that receives notes/, chords/ and drums/")
    ap.add_argument("--sets", default="notes,chords,drums")
    ap.add_argument("--lmms-drums", help="lmms-common's samples/drums folder (extracted .deb)")
    ap.add_argument("--pitches", type=int, default=12, help="pitches per instrument and SoundFont")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out, sets = Path(args.out), set(args.sets.split(","))
    # each set draws from its own generator, so rendering one set alone gives the same files as rendering all
    if "notes" in sets:
        notes_set(out / "notes", random.Random(args.seed), args.pitches)
    if "chords" in sets:
        chords_set(out / "chords", random.Random(args.seed))
    if "drums" in sets:
        drums_set(out / "drums", Path(args.lmms_drums) if args.lmms_drums else None)


if __name__ == "__main__":
    main()
