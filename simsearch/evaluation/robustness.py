"""Does search still find a clip after everyday changes? Perturb each clip, embed, and check recovery.

For every clip of a labelled set we embed the original and a perturbed copy (see simsearch.perturb)
with the same encoder and options, exactly as a query is embedded (windows, normalised mean), and
report per perturbation:

* rank-1 recovery: the share of copies whose own original is the nearest of all originals;
* mAP by label: mean average precision of the originals ranked for each copy, relevant = same label
  (the copy's own original included), so it also shows whether neighbours of the same kind survive;
* the mean cosine between each copy and its original;
* same-recording claims: how often the landmarks alone call the copy's own original the same recording, and the
  false ones: the share of (copy, original of a *different* recording) pairs whose landmark
  match reaches fingerprint.SAME_RECORDING (what search reports as "the same recording" and exclude_same drops),
  and the share that earns any bonus (>= fingerprint.MIN_SCORE).

The default changes are the everyday ones (perturb.GROUPS); pitch / tempo / speed, mixes and reverb are asked
for by name or group. A mix takes another recording of its kind from `speech` / `music` (a folder or manifest;
when it is the collection under test, a clip other than the query, whose original then does not count as a
false claim).

Copies are made at the file's own sample rate; each (clip, perturbation) pair has its own seeded RNG,
so numbers reproduce and do not depend on --limit order.
"""
from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from simsearch.audio import fingerprint, landmark_kinds
from simsearch.audio.decode import decode
from simsearch.audio.fingerprint import MIN_SCORE, SAME_RECORDING, fuse
from simsearch.audio.perturb import GROUPS, PERTURBATIONS, perturb
from simsearch.audio.resample import resample
from simsearch.audio.windows import split_windows
from simsearch.encoders import DEFAULT_ENCODER, Encoder, copynet, get_encoder
from simsearch.errors import SimsearchError
from simsearch.indexing import copynet_fit
from simsearch.indexing.options import DEFAULT_WINDOW_S
from simsearch.vectors import pooled

log = logging.getLogger(__name__)
MAX_RATE = 48000  # files above this are decoded at 48 kHz; every encoder here runs at or below it
MAX_BACKGROUNDS = 50  # a mix draws from a seeded subset of this many recordings of another collection


@dataclass
class Clip:
    """One labelled original at its own sample rate (mono float32)."""

    path: str
    label: str
    samples: np.ndarray
    sample_rate: int


@dataclass
class RobustnessResult:
    """Per-perturbation metrics plus what produced them."""

    rows: dict[str, dict]  # perturbation -> {"rank1", "map", "cosine", "n"}
    info: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """Mean and worst rank-1 recovery over the everyday changes (all changes when none of them ran; the clean
        row left out), the mean per group, and the false-claim rates over every row."""
        changed = [k for k in self.rows if k != "clean"]
        if not changed:
            return {}
        everyday = [k for k in changed if k in GROUPS["everyday"]] or changed
        r1 = {k: self.rows[k]["rank1"] for k in everyday}
        worst = min(r1, key=r1.get)
        groups = {g: float(np.mean([self.rows[k]["rank1"] for k in names if k in self.rows]))
                  for g, names in GROUPS.items() if any(k in self.rows for k in names)}
        out = {"mean_rank1": float(np.mean(list(r1.values()))), "min_rank1": r1[worst], "worst": worst,
               "mean_map": float(np.mean([self.rows[k]["map"] for k in everyday])), "group_rank1": groups}
        pairs = sum(v.get("pairs", 0) for v in self.rows.values())
        if pairs:
            for key in ("false_same", "false_bonus"):
                out[key] = sum(v[key] * v["pairs"] for v in self.rows.values() if "pairs" in v) / pairs
            out["pairs"] = pairs
        return out

    def to_json(self) -> dict:
        return {"info": self.info, "rows": self.rows, "summary": self.summary()}


def pick_items(src: str | Path, label_regex: str | None, limit: int | None, seed: int) -> list:
    """Labelled items of src; a seeded random subset of `limit` of them (in path order) when asked."""
    from simsearch.indexing.sources import collect

    items, _ = collect(Path(src), label_regex)
    items = [it for it in items if it.label not in (None, "")]
    if not items:
        raise SimsearchError(f"{src}: no labelled files; give --label-regex or use sub-folders as labels")
    if limit is not None and 0 < limit < len(items):
        keep = np.sort(np.random.default_rng(seed).choice(len(items), size=limit, replace=False))
        items = [items[i] for i in keep]
    return items


def load_clips(items: Sequence, max_duration_s: float | None = None) -> tuple[list[Clip], list[dict]]:
    """Decode each item at its own rate (capped at 48 kHz); unreadable ones are returned as errors."""
    import soundfile as sf

    from simsearch.errors import AudioError

    clips, errors = [], []
    for it in items:
        try:
            info = sf.info(it.path)
            if max_duration_s is not None and info.duration > max_duration_s:
                raise AudioError(it.path, f"too long ({info.duration:.0f} s; limit {max_duration_s:.0f} s)")
            rate = min(int(info.samplerate), MAX_RATE)
            clips.append(Clip(it.path, str(it.label), decode(it.path, rate), rate))
        except (AudioError, RuntimeError, sf.LibsndfileError) as e:
            errors.append({"path": it.path, "reason": getattr(e, "reason", str(e))})
    return clips, errors


def perturbation_names(asked: Sequence[str] | None) -> list[str]:
    """Perturbation names from names, group names (perturb.GROUPS) or "all"; the everyday group by default."""
    names = []
    for a in asked or ["everyday"]:
        names += list(PERTURBATIONS) if a == "all" else GROUPS.get(a, [a])
    unknown = [n for n in names if n not in PERTURBATIONS]
    if unknown:
        raise SimsearchError(f"unknown perturbation(s) {', '.join(unknown)}; known: {', '.join(PERTURBATIONS)}, "
                             f"the groups {', '.join(GROUPS)} or all")
    return list(dict.fromkeys(names))


def clip_seed(seed: int, clip: int, perturbation: str) -> int:
    """Independent, reproducible RNG seed for one (clip, perturbation) pair."""
    j = list(PERTURBATIONS).index(perturbation) if perturbation in PERTURBATIONS else 0
    return int(np.random.SeedSequence([seed, clip, j]).generate_state(1)[0])


def embed_clips(enc: Encoder, waves: Sequence[np.ndarray], rates: Sequence[int], window_s: float = DEFAULT_WINDOW_S,
                hop_s: float | None = None, batch_size: int = 16, query: bool = False) -> np.ndarray:
    """One normalised vector per clip, as an index row (or, with `query`, as a query) is made: windows, normalise,
    mean, normalise (batched across many clips, without an index folder)."""
    owner, pending = [], []
    for i, (x, sr) in enumerate(zip(waves, rates)):
        y = resample(x, sr, enc.sample_rate)
        for w in split_windows(y, enc.sample_rate, window_s, hop_s):
            owner.append(i)
            pending.append(w.samples)
    emb = np.concatenate([enc.embed_audio(pending[s:s + batch_size], query)
                          for s in range(0, len(pending), batch_size)])
    return pooled(emb, np.asarray(owner))


def recovery(originals: np.ndarray, copies: np.ndarray, labels: Sequence[str], match: np.ndarray | None = None,
             partner: np.ndarray | None = None) -> dict:
    """rank-1 recovery of each copy's own original, label mAP of the originals ranked per copy, mean cosine.

    match: landmark match scores [copies, originals]; when given, originals are ranked as a search ranks them
    (cosine + fingerprint bonus). partner[i]: the original mixed into copy i (-1: none from the bank); when given,
    "rank1_either" also counts a first hit on it, since a copy that holds two recordings equally holds both.
    (evaluate.retrieval_metrics is leave-one-out within one set; here queries and bank differ.)
    """
    from sklearn.metrics import average_precision_score

    labels = np.asarray(labels)
    cosines = copies @ originals.T
    sims = fuse(cosines, match)
    n = len(originals)
    first = sims.argmax(axis=1)
    rank1 = float((first == np.arange(n)).mean())
    aps = [average_precision_score(labels == labels[i], sims[i]) for i in range(n)]
    out = {"rank1": rank1, "map": float(np.mean(aps)), "cosine": float(np.mean(np.diag(cosines))), "n": int(n)}
    if partner is not None and (partner >= 0).any():
        out["rank1_either"] = float(((first == np.arange(n)) | (first == partner)).mean())
    return out


def neighbour_accuracy(originals: np.ndarray, labels: Sequence[str], match: np.ndarray | None = None,
                       queries: np.ndarray | None = None) -> float:
    """Leave-one-out P@1 by label among the originals (each asked as a query: `queries`, by default the originals
    themselves), ranked as search ranks them: shows whether the landmark bonus (meant for copies of one recording)
    disturbs the neighbours of clips that are different recordings."""
    sims = fuse((originals if queries is None else queries) @ originals.T, match)
    np.fill_diagonal(sims, -np.inf)
    labels = np.asarray(labels)
    return float((labels[sims.argmax(axis=1)] == labels).mean())


def same_claims(match: np.ndarray, partner: np.ndarray | None = None) -> dict:
    """How often the landmarks call a copy's own original the same recording (score >= SAME_RECORDING), and the
    share of (query, original of a different recording) pairs they call so, or give a bonus (>= MIN_SCORE); the
    diagonal, and partner[i] (the recording mixed into copy i, -1 for none), are the query's own recordings."""
    own = np.eye(*match.shape, dtype=bool)
    if partner is not None:
        rows = np.flatnonzero(partner >= 0)
        own[rows, partner[rows]] = True
    other = match[~own]
    return {"own_same": float((np.diag(match) >= SAME_RECORDING).mean()),
            "false_same": float((other >= SAME_RECORDING).mean()) if other.size else 0.0,
            "false_bonus": float((other >= MIN_SCORE).mean()) if other.size else 0.0, "pairs": int(other.size)}


def load_backgrounds(kind_src: str | Path, src: str | Path, seed: int) -> list[Clip] | None:
    """Recordings a mix draws from: a seeded subset of kind_src, or None when it is the collection under test
    (the mix then takes another clip of it)."""
    from simsearch.indexing.sources import collect

    if Path(kind_src).resolve() == Path(src).resolve():
        return None
    items, _ = collect(Path(kind_src))
    if len(items) > MAX_BACKGROUNDS:
        items = [items[i] for i in np.sort(np.random.default_rng(seed).choice(len(items), MAX_BACKGROUNDS, False))]
    clips, _ = load_clips(items, 120.0)
    if not clips:
        raise SimsearchError(f"{kind_src}: no readable audio to mix in")
    return clips


def background(clips: list[Clip], pool: list[Clip] | None, i: int, seed: int) -> tuple[np.ndarray, int]:
    """(recording to mix into clip i at its rate, its place among the originals or -1): seeded, never clip i."""
    rng = np.random.default_rng([seed, i, 1])
    if pool is None:
        j = int(rng.integers(len(clips) - 1))
        j += j >= i
        other, partner = clips[j], j
    else:
        other, partner = pool[int(rng.integers(len(pool)))], -1
    return resample(other.samples, other.sample_rate, clips[i].sample_rate), partner


def match_scores(table, waves: Sequence[np.ndarray], rates: Sequence[int],
                 query_landmarks: Callable = fingerprint.query_landmarks) -> np.ndarray | None:
    """Landmark match scores of each clip against every stored original [clips, originals] (the table's kind makes
    the query's landmarks with `query_landmarks`); None without a table."""
    if table is None:
        return None
    return np.stack([table.scores(*query_landmarks(x, sr)) for x, sr in zip(waves, rates)])


@dataclass(frozen=True)
class RobustnessRun:
    """What a robustness run embeds with (as an index would) and which clips and changes it tries."""

    encoder: str = DEFAULT_ENCODER
    options: dict = field(default_factory=dict)  # encoder options as index.json records them (pooling, conditioning)
    checkpoint: str | None = None
    label_regex: str | None = None
    limit: int | None = None  # a seeded random subset of this many clips
    perturbations: Sequence[str] | None = None  # None: all of PERTURBATIONS
    seed: int = 0
    window_s: float = DEFAULT_WINDOW_S
    hop_s: float | None = None
    device: str = "auto"
    batch_size: int = 16
    max_duration_s: float | None = 120.0
    fingerprint: bool = True  # rank with the landmark bonus, as an index with fingerprints does
    landmarks: str = landmark_kinds.DEFAULT  # ... of this kind (pairs, triplets or both)
    speech: str | None = None  # folder or manifest of speech the speech mixes draw from
    music: str | None = None  # ... and of music, for the music mixes
    copynet_steps: int = 300  # training steps of a copynet part on the originals
    progress: bool = True


def train_copynet(enc: Encoder, clips: list[Clip], run: RobustnessRun) -> None:
    """Train the encoder's copynet part on the originals, as `simsearch index` trains it on a new collection."""
    part = copynet.untrained(enc)[0]
    rng = np.random.default_rng(copynet_fit.SEED)
    excerpts = [x for c in clips for x in copynet_fit.conditioned_excerpts(part, [c.samples], c.sample_rate, rng)]
    with tempfile.TemporaryDirectory(prefix="simsearch-copynet-") as tmp:
        copynet_fit.train_into(excerpts, run.device, Path(tmp) / copynet.COPYNET_FILE, run.copynet_steps, run.progress)
        part.load(str(Path(tmp) / copynet.COPYNET_FILE), own=True)  # a temp file: the report names none


def run_robustness(src: str | Path, run: RobustnessRun = RobustnessRun(), enc: Encoder | None = None) -> RobustnessResult:
    """Perturb every clip of src, embed originals and copies with one encoder (`enc`, or the one `run` names), and
    report recovery per perturbation, ranked as a search ranks them."""
    names = perturbation_names(run.perturbations)
    kinds = {PERTURBATIONS[n].background for n in names} - {None}
    missing = [k for k in sorted(kinds) if getattr(run, k) is None]
    if missing:
        raise SimsearchError(f"the {'/'.join(missing)} mixes need recordings to mix in: give --{' and --'.join(missing)}")
    options = {k: v for k, v in run.options.items() if v is not None}
    items = pick_items(src, run.label_regex, run.limit, run.seed)
    clips, errors = load_clips(items, run.max_duration_s)
    if len(clips) < 2:
        raise SimsearchError(f"{src}: need at least 2 readable labelled clips, found {len(clips)}")
    enc = enc or get_encoder(run.encoder, run.checkpoint, run.device, **options)
    if copynet.untrained(enc):  # as an index trains it on a new collection: on the originals
        train_copynet(enc, clips, run)
    labels = [c.label for c in clips]
    rates = [c.sample_rate for c in clips]
    embed: Callable[..., np.ndarray] = lambda waves, query=True: embed_clips(  # noqa: E731
        enc, waves, rates, run.window_s, run.hop_s, run.batch_size, query)
    bar = tqdm(total=len(names) + 1, desc=f"robustness ({enc.name})", unit="set", disable=not run.progress)
    originals = embed([c.samples for c in clips], query=False)
    # the originals as queries: the same vectors unless rows carry a view queries leave out (the room twin)
    clean = embed([c.samples for c in clips]) if enc.row_views else originals
    marks = landmark_kinds.module(run.landmarks)
    table = landmark_kinds.table_class(run.landmarks).build([marks.index_landmarks(c.samples, c.sample_rate)
                                                             for c in clips]) if run.fingerprint else None
    clean_match = match_scores(table, [c.samples for c in clips], rates, marks.query_landmarks)
    rows = {"clean": {**recovery(originals, clean, labels, clean_match),
                      "loo_p1": neighbour_accuracy(originals, labels, clean_match, clean)}}
    if clean_match is not None:
        rows["clean"].update(same_claims(clean_match))
    pools = {k: load_backgrounds(getattr(run, k), src, run.seed) for k in kinds}
    bar.update(1)
    for name in names:
        kind = PERTURBATIONS[name].background
        others = [background(clips, pools[kind], i, run.seed) for i in range(len(clips))] if kind else None
        copies = [perturb(name, c.samples, c.sample_rate, clip_seed(run.seed, i, name),
                          others[i][0] if others else None) for i, c in enumerate(clips)]
        match = match_scores(table, copies, rates, marks.query_landmarks)
        partner = np.array([o[1] for o in others]) if others else None
        rows[name] = recovery(originals, embed(copies), labels, match, partner)
        if match is not None:
            rows[name].update(same_claims(match, partner))
        bar.update(1)
        log.info("%s: %s", name, rows[name])
    bar.close()
    info = {"src": str(Path(src).absolute()), "encoder": enc.describe(), "options": options,
            "label_regex": run.label_regex, "limit": run.limit, "seed": run.seed, "n_clips": len(clips),
            "n_classes": len(set(labels)), "window_s": run.window_s, "hop_s": run.hop_s, "errors": errors,
            "fingerprint": run.fingerprint, "landmarks": run.landmarks, "speech": run.speech, "music": run.music,
            "perturbations": {n: PERTURBATIONS[n].summary for n in names}}
    return RobustnessResult(rows, info)


def markdown_table(results: dict[str, RobustnessResult]) -> str:
    """One row per perturbation, rank-1 and mAP columns per configuration, then mean / worst rank-1."""
    configs = list(results)
    names = list(dict.fromkeys(n for r in results.values() for n in r.rows))
    head = "| perturbation | " + " | ".join(f"{c} rank-1 | {c} mAP" for c in configs) + " |"
    lines = [head, "|---|" + "---:|---:|" * len(configs)]
    for n in names:
        cells = []
        for c in configs:
            row = results[c].rows.get(n)
            either = f" (own or mixed-in {row['rank1_either']:.3f})" if row and "rank1_either" in row else ""
            cells += [f"{row['rank1']:.3f}{either}", f"{row['map']:.3f}"] if row else ["-", "-"]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    cells = []
    for c in configs:
        s = results[c].summary()
        cells += [f"**{s['mean_rank1']:.3f}**", f"**{s['mean_map']:.3f}**"]
    everyday = any(n in GROUPS["everyday"] for n in names)
    lines.append(f"| mean over {'everyday changes' if everyday else 'perturbations'} | " + " | ".join(cells) + " |")
    worst = [results[c].summary() for c in configs]
    lines.append("| worst rank-1 | " + " | ".join(f"{s['min_rank1']:.3f} ({s['worst']}) | " for s in worst) + " |")
    for g in GROUPS:
        if any(g in s["group_rank1"] for s in worst) and len(worst[0]["group_rank1"]) > 1:
            lines.append(f"| mean rank-1, {g} | " + " | ".join(
                f"{s['group_rank1'][g]:.3f} | " if g in s["group_rank1"] else "- | " for s in worst) + " |")
    if any("pairs" in s for s in worst):
        for key, what in (("false_same", f"same recording, score >= {SAME_RECORDING:g}"),
                          ("false_bonus", f"any bonus, score >= {MIN_SCORE:g}")):
            lines.append(f"| false claims among different recordings ({what}) | " + " | ".join(
                f"{100 * s[key]:.3f} % | " if key in s else "- | " for s in worst) + " |")
    return "\n".join(lines)


def write_report(results: dict[str, RobustnessResult], out: str | Path, command: str | None = None) -> Path:
    """robustness.json (everything) and report.md (the table) in `out`; returns the report path."""
    from simsearch.files import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "robustness.json",
                      json.dumps({k: r.to_json() for k, r in results.items()}, indent=2, default=str))
    first = next(iter(results.values()))
    text = ["# Robustness of similarity search", ""]
    if command:
        text += ["```", command, "```", ""]
    text += [f"{first.info['n_clips']} clips, {first.info['n_classes']} labels from {first.info['src']} "
             f"(seed {first.info['seed']}).", "", markdown_table(results), "",
             "rank-1: share of perturbed copies whose own original is the nearest of all originals; "
             "mAP: mean average precision of the originals ranked for each copy, relevant = same label.", ""]
    text += [f"- `{n}`: {s}" for n, s in first.info["perturbations"].items()]
    atomic_write_text(out / "report.md", "\n".join(text) + "\n")
    return out / "report.md"

