"""Collection profiles (`simsearch index --profile`): which encoder fits which kind of collection, and why.

The encoders and numbers come from the music table in docs/benchmarks.md (kNN / probe / leave-one-out P@1, 5 folds).
`auto` first listens to a seeded sample of the collection: each clip's top YAMNet tag and its length once silent
lead-in and tail are cut say whether the collection is mostly one-shot hits, music, or anything else (`decide`).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from simsearch.audio.condition import CONDITIONING, trim_silence
from simsearch.audio.decode import decode
from simsearch.encoders import DEFAULT_ENCODER, default_conditioning, get_encoder
from simsearch.errors import AudioError, SimsearchError


@dataclass(frozen=True)
class Profile:
    """A kind of collection, the encoder measured best for it, and the numbers that chose it."""

    name: str
    encoder: str
    why: str


PROFILES = {p.name: p for p in [
    Profile("general", DEFAULT_ENCODER,
            "speech, environmental and other sound: the offline default (FSDD kNN 0.993; robust to noise and crops)"),
    # Music material: the timbre parts whitened on the collection (simsearch.encoders.whitening) and basic-pitch at
    # weight 3, the weight whose worse set of notes and chords is best when the map is fitted on training folds only
    # (notes / chords 0.952 / 0.706 at 1, 0.943 / 0.889 at 2, 0.920 / 0.961 at 3, 0.902 / 0.981 at 4;
    # scripts/whitening_folds.py). Unwhitened yamnet+aisfx+basic-pitch gave notes 0.833, chords 0.908.
    Profile("music", "whiten(yamnet)+whiten(aisfx)+basic-pitch*3",
            "notes, chords, instrument samples: kNN notes 0.914, chords 0.989 "
            "(the default 0.795, 0.044)"),
    Profile("oneshots", "aisfx+spectral+onset-envelope",
            "drum and percussion one-shots: kNN drums 0.853 (the default 0.711)"),
    # Near-copy search: the default plus a copy detector trained on the collection at 0.4 of the weight
    # (simsearch.encoders.copynet; the share measured in docs/benchmarks.md, "The copy detector").
    Profile("copies", f"{DEFAULT_ENCODER}+copynet*1.333",
            "finding recordings again through loud noise, rooms, mixes, pitch and tempo changes: every change "
            "of the robustness harness >= 0.90 rank-1 on FSDD (the default: white noise at 0 dB 0.56, rooms 0.60)"),
]}
AUTO = "auto"
NAMES = (*PROFILES, AUTO)

# auto. Shares over all files of rendered notes / chords / drums (scripts/make_music_data.sh), Sonic Pi and FSDD:
# one-shot share 0.04 / 0.00 / 0.74 / 0.52 / 0.00, music share 0.82 / 0.94 / 0.88 / 0.72 / 0.00; the 64-file
# sample gives the same choice for ten seeds on each.
SAMPLE_FILES = 64  # files auto listens to: a share's standard error is then at most about 0.06
HEAD_S = 10.0  # seconds decoded from each
SEED = 0
SHORT_S = 1.0  # a clip shorter than this once trimmed is a hit: rendered drums last 0.1-0.9 s, notes 1.3-2 s
ONESHOTS_MIN = 0.6  # share of hits that makes a one-shot library
MUSIC_MIN = 0.5  # share of music (music-tagged clips and hits) that makes a music collection


def encoder_for(profile: str) -> str:
    """The encoder a named profile stands for (auto has none until it has listened to the collection)."""
    if profile not in PROFILES:
        raise SimsearchError(f"unknown profile {profile!r}; known: {', '.join(NAMES)}")
    return PROFILES[profile].encoder


def resolve(profile: str, paths: list[str]) -> dict:
    """What --profile means for these files, as index.json records it: name, chose, encoder, why (+ evidence)."""
    if profile == AUTO:
        chose, evidence = choose(paths)
        return {"name": AUTO, "chose": chose, "encoder": encoder_for(chose), "why": PROFILES[chose].why,
                "evidence": evidence}
    return {"name": profile, "chose": profile, "encoder": encoder_for(profile), "why": PROFILES[profile].why}


def record_line(record: dict) -> str:
    """A recorded profile in one line, for `simsearch info` and the app: 'auto -> music (sampled 64, ...)'."""
    chose = f" -> {record.get('chose')}" if record.get("chose") != record.get("name") else ""
    evidence = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in (record.get("evidence") or {}).items())
    return f"{record.get('name')}{chose}" + (f" ({evidence})" if evidence else "")


def choose(paths: list[str], sample: int = SAMPLE_FILES, seed: int = SEED) -> tuple[str, dict]:
    """auto: the profile a seeded sample of the files points to, and the shares it read (module constants)."""
    picked = random.Random(seed).sample(sorted(paths), min(sample, len(paths)))
    enc = get_encoder("yamnet", **default_conditioning("yamnet"))
    sr, names = enc.sample_rate, enc.class_names()
    music = set(names[names.index("Music"):names.index("Scary music") + 1])  # AudioSet's Music branch
    voice = set(names[:names.index("Whistling")])  # its Human voice branch: Speech ... Grunt
    clips = []
    for p in picked:
        try:
            clips.append(decode(p, sr, max_seconds=HEAD_S))
        except AudioError:
            continue  # the indexing run reports bad files
    hits, musical = [], []
    for start in range(0, len(clips), 16):
        batch = clips[start:start + 16]
        for x, scores in zip(batch, enc.embed_batch(batch)["tag_scores"]):
            top = names[int(np.argmax(scores))]
            hits.append(len(trim_silence(x, sr, CONDITIONING["trim"])) < SHORT_S * sr and top not in voice)
            musical.append(hits[-1] or top in music)
    evidence = {"sampled": len(clips), "unreadable": len(picked) - len(clips),
                "oneshot_share": _share(hits), "music_share": _share(musical)}
    return decide(evidence["oneshot_share"], evidence["music_share"]), evidence


def _share(flags: list[bool]) -> float:
    return round(float(np.mean(flags)), 3) if flags else 0.0


def decide(oneshot_share: float, music_share: float) -> str:
    """Mostly short non-voice hits: oneshots; mostly music-tagged clips or hits: music; else general.

    Hits, not drum tags, mark one-shots: YAMNet tags only 48 % of rendered drums with a drum or percussion tag in
    its top three (it calls kicks Silence: its mel bands start at 125 Hz), so tags only rule out speech there.
    """
    if oneshot_share >= ONESHOTS_MIN:
        return "oneshots"
    return "music" if music_share >= MUSIC_MIN else "general"
