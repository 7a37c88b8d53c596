"""Compare encoders and fusions on the music sets (and FSDD / Sonic Pi): kNN, probe and leave-one-out P@1.

    .venv/bin/python scripts/music_eval.py --data /tmp/music_data --work /tmp/music_eval \\
        --sets notes,chords,drums,fsdd,sonicpi --encoders spectral,yamnet+whisper-tiny-offline,basic-pitch

Each plain encoder is run once per set through the real indexer (simsearch.indexing, 10-s windows, the encoder's
default conditioning), cached under WORK/cache/SET/ENCODER. basic-pitch (not in the registry yet) is run on the
same windows with the same conditioning by BasicPitchEncoder, and its feature groups are cached, so variants
`bp(chroma=1,envelope=0.5)` cost nothing more. A fusion 'a*w+b' is built from the cached parts row by row exactly
as FusionEncoder builds it (each part L2-normalised, scaled by sqrt(weight share), concatenated), then windows are
pooled per file and scored with simsearch.evaluation.compare (labelled_set, make_splits, evaluate_set).
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simsearch.audio.condition import CONDITIONING
from simsearch.audio.decode import iter_windows
from simsearch.encoders.basic_pitch import DEFAULT_GROUPS, SAMPLE_RATE, BasicPitchEncoder, clip_vector
from simsearch.encoders.fusion import parse_part
from simsearch.evaluation.compare import embed_with, evaluate_set, labelled_set, make_splits
from simsearch.indexing.options import IndexOptions
from simsearch.indexing.sources import collect
from simsearch.search.index import Index
from simsearch.vectors import normalize


@dataclass(frozen=True)
class MusicSet:
    """A labelled folder and how its labels and folds come from file names."""

    src: str
    label_regex: str
    fold_regex: str | None  # None: stratified 5-fold


def sets(data: Path, work: Path) -> dict[str, MusicSet]:
    return {
        "notes": MusicSet(str(data / "notes"), r"^([a-z]+)-", r"-p(\d+)-"),  # folds by pitch
        "chords": MusicSet(str(data / "chords"), r"^([A-G]s?(?:maj|min))-", r"^[A-Za-z]+-([a-z]+)-"),  # by instrument
        "drums": MusicSet(str(data / "drums"), r"^([a-z_]+)-", r"^[a-z_]+-([a-z0-9]+)-"),  # folds by kit
        "fsdd": MusicSet(str(work / "fsdd600"), r"^(\d)_", r"_(\d+)\.wav$"),
        "sonicpi": MusicSet("/work/shared/data/sonic-pi", r"^([a-z]+)_", None),
    }


def fsdd_subset(work: Path, takes: int = 10) -> None:
    """Takes 0..takes-1 of every speaker and digit (600 files), copied so the indexer sees a plain folder."""
    out = work / "fsdd600"
    if out.is_dir():
        return
    out.mkdir(parents=True)
    for f in sorted(Path("/work/shared/data/fsdd/recordings").glob("*.wav")):
        if int(f.stem.split("_")[2]) < takes:
            shutil.copy(f, out / f.name)


def cache_key(path: str, offset: float) -> str:
    return f"{path}|{offset:.3f}"


def index_rows(name: str, ms: MusicSet, work: Path, set_name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row paths, row offsets, normalised row embeddings) of a registry encoder via the indexer (cached)."""
    cache = work / "cache" / set_name / name
    opts = IndexOptions(encoder=name, label_regex=ms.label_regex, fingerprint=False, progress=False, device="cpu")
    embed_with(ms.src, cache, opts)
    index = Index.open(cache, device="cpu")
    return index.rows["path"].to_numpy(), index.rows["offset_s"].to_numpy(), index.embeddings()


def bp_features(ms: MusicSet, work: Path, set_name: str, paths: np.ndarray, offsets: np.ndarray) -> dict:
    """basic-pitch feature groups per row, cached; rows not in the cache yet are computed and added."""
    cache = work / "cache" / set_name / "basic-pitch-groups.npz"
    out: dict = {}
    if cache.is_file():
        with np.load(cache, allow_pickle=True) as z:
            out = z["groups"].item()
    wanted = {cache_key(p, o) for p, o in zip(paths, offsets)} - set(out)
    if not wanted:
        return out
    enc = BasicPitchEncoder(threads=2)
    for key, value in CONDITIONING.items():  # the measured default every offline encoder gets
        setattr(enc, key, value)
    batch, keys = [], []
    t0 = time.time()

    def flush() -> None:
        out.update(zip(keys, enc.features(batch)))
        batch.clear()
        keys.clear()

    for path in dict.fromkeys(p for p, o in zip(paths, offsets) if cache_key(p, o) in wanted):
        for w in iter_windows(path, SAMPLE_RATE, 10.0):
            if cache_key(path, w.offset_s) in wanted:
                x = enc.condition(w.samples)  # as Encoder.embed_batch: conditioned, then padded to min_seconds
                n = int(enc.min_seconds * SAMPLE_RATE)
                batch.append(x if len(x) >= n else np.pad(x, (0, n - len(x))))
                keys.append(cache_key(path, w.offset_s))
                if len(batch) >= 16:
                    flush()
    if batch:
        flush()
    logging.info("basic-pitch features for %s: %d rows in %.1f s", set_name, len(wanted), time.time() - t0)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, groups=np.array(out, dtype=object))
    return out


def parse_groups(name: str) -> dict[str, float]:
    """'bp(chroma=1,envelope=0.5)' -> {'chroma': 1.0, 'envelope': 0.5}; 'basic-pitch' -> the default groups."""
    if name == "basic-pitch":
        return dict(DEFAULT_GROUPS)
    inner = name[name.index("(") + 1: name.rindex(")")]
    return {k: float(v) for k, v in (kv.split("=") for kv in inner.split(",") if kv)}


class SetRows:
    """Row-aligned part vectors of one set, computed on demand and kept."""

    def __init__(self, set_name: str, ms: MusicSet, work: Path):
        self.set_name, self.ms, self.work = set_name, ms, work
        self.parts: dict[str, np.ndarray] = {}
        self.keys: list[str] | None = None
        self.paths: np.ndarray | None = None
        self.bp: dict | None = None

    def part(self, name: str) -> np.ndarray:
        if name in self.parts:
            return self.parts[name]
        if name == "onset-envelope":  # the same group as bp(envelope=1), without the network
            return self.part("bp(envelope=1)")
        if name == "basic-pitch" or name.startswith("bp("):
            if self.keys is None:
                self.part("spectral")  # row layout from the cheapest registry encoder
            if self.bp is None:
                p, o = zip(*(k.split("|") for k in self.keys))
                self.bp = bp_features(self.ms, self.work, self.set_name, np.array(p), np.array(o, float))
            x = np.stack([clip_vector(self.bp[k], parse_groups(name)) for k in self.keys])
            self.parts[name] = normalize(x)
            return self.parts[name]
        paths, offsets, emb = index_rows(name, self.ms, self.work, self.set_name)
        keys = [cache_key(p, o) for p, o in zip(paths, offsets)]
        if self.keys is None:
            self.keys, self.paths = keys, paths
        else:  # align to the first encoder's row order
            pos = {k: i for i, k in enumerate(keys)}
            emb = emb[[pos[k] for k in self.keys]]
        self.parts[name] = emb
        return emb

    def vectors(self, name: str) -> np.ndarray:
        """Row vectors of an encoder or a fusion 'a*w+b' (FusionEncoder's construction)."""
        pieces = split_fusion(name)
        if len(pieces) == 1:
            return self.part(name)
        parsed = [parse_part(p, name) for p in pieces]
        total = sum(w for _, w in parsed)
        return np.concatenate([np.sqrt(w / total) * self.part(n) for n, w in parsed], axis=1)


def split_fusion(name: str) -> list[str]:
    """'yamnet+bp(a=1,b=2)*0.5' -> ['yamnet', 'bp(a=1,b=2)*0.5'] ('+' inside parentheses is not a separator)."""
    out, depth, cur = [], 0, ""
    for ch in name:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "+" and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return out + [cur]


def loo_p1(x: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out precision at 1: is each file's nearest other file of its class."""
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    return float((labels[sims.argmax(axis=1)] == labels).mean())


def score(rows: SetRows, name: str) -> dict:
    x = rows.vectors(name)
    items, _ = collect(rows.ms.src, rows.ms.label_regex)
    label_of = {it.path: it.label for it in items}
    data = labelled_set(rows.paths, x, label_of.get)
    splits, how = make_splits(data.paths, data.labels, 5, rows.ms.fold_regex)
    m = evaluate_set(name, data, splits).metrics
    return {"knn": m["knn_accuracy"], "probe": m["probe_accuracy"], "loo_p1": loo_p1(data.x, data.labels),
            "p_at_10": m["p_at_10"], "files": m["n_files"], "classes": m["n_classes"], "splits": how,
            "confused_knn": m["confused_knn"][:3]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/tmp/music_data")
    ap.add_argument("--work", default="/tmp/music_eval")
    ap.add_argument("--sets", default="notes,chords,drums")
    ap.add_argument("--encoders", default="spectral,yamnet+whisper-tiny-offline,basic-pitch",
                    help="comma-separated; fusions 'a*w+b'; basic-pitch variants 'bp(chroma=1,envelope=0.5)'")
    ap.add_argument("--json", help="append results here, one JSON object a line")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("simsearch", "faiss"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    work = Path(args.work)
    fsdd_subset(work)
    all_sets = sets(Path(args.data), work)
    names = split_top(args.encoders)
    print(f"{'set':<12} {'encoder':<60} {'kNN':>6} {'probe':>6} {'LOO':>6}")
    for set_name in args.sets.split(","):
        rows = SetRows(set_name, all_sets[set_name], work)
        for name in names:
            r = score(rows, name)
            print(f"{set_name:<12} {name:<60} {r['knn']:6.3f} {r['probe']:6.3f} {r['loo_p1']:6.3f}  "
                  f"{r['confused_knn']}", flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps({"set": set_name, "encoder": name, **r}) + "\n")


def split_top(text: str) -> list[str]:
    """Comma-separated names, ignoring commas inside parentheses."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return [n for n in out + [cur.strip()] if n]


if __name__ == "__main__":
    main()
