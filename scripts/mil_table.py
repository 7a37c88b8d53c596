"""Attention vs mean pooling of windows for the probe, on long files whose label is one short event.

Each long file is LENGTH seconds of Sonic Pi samples (random pieces, end to end, each at one level) with one FSDD
spoken digit (about 0.4 s) mixed in at a random place at SNR dB against the background around it; its label is the
digit. Held-out protocol as for FSDD elsewhere: takes 0-4 of every speaker and digit are the test files, a seeded
sample of takes 5-49 the training files. The files are indexed through the command line in 1-s windows
(`simsearch index --window 1 --hop 1`), then two probes are trained on the training files' windows:

* mean: the linear probe `simsearch probe` trains (logistic regression, C by 5-fold CV) on each file's mean window
  vector;
* attention: `simsearch probe --pooling attention`, gated attention over the windows trained with the linear layer.

Both are scored on the test files (accuracy). Usage:

    python scripts/mil_table.py [--data ../shared/data] [--work /tmp/mil_table] [--encoder yamnet] [--train 600]
"""
from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

SR = 16000


def load(path: Path) -> np.ndarray:
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if sr != SR:
        g = np.gcd(sr, SR)
        x = resample_poly(x, SR // g, sr // g).astype(np.float32)
    return x


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x), dtype=np.float64)) + 1e-9)


def background(pool: list[np.ndarray], seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Random pieces of random Sonic Pi samples, end to end, each scaled to a random level within 12 dB."""
    out, n = [], int(seconds * SR)
    while sum(len(p) for p in out) < n:
        x = pool[int(rng.integers(len(pool)))]
        piece = x[int(rng.integers(max(1, len(x) - SR // 2))):][: int(rng.uniform(0.5, 3.0) * SR)]
        if rms(piece) > 1e-4:
            out.append(piece / rms(piece) * 0.05 * 10 ** (rng.uniform(-6, 6) / 20))
    return np.concatenate(out)[:n].astype(np.float32)


def make_files(data: Path, out: Path, n_train: int, length: float, snr: float, seed: int) -> dict:
    """Write out/{digit}_{speaker}_{take}.wav long files; returns what was made."""
    rng = np.random.default_rng(seed)
    pool = [load(p) for p in sorted((data / "sonic-pi").glob("*.flac"))]
    digits = sorted((data / "fsdd" / "recordings").glob("*.wav"))
    take = {p: int(p.stem.split("_")[2]) for p in digits}
    test = [p for p in digits if take[p] < 5]
    train = [digits[i] for i in sorted(rng.choice([i for i, p in enumerate(digits) if take[p] >= 5], n_train,
                                                  replace=False))]
    out.mkdir(parents=True, exist_ok=True)
    for p in test + train:
        bg = background(pool, length, rng)
        d = load(p)
        at = int(rng.integers(0, len(bg) - len(d)))
        around = rms(bg[at:at + len(d)])
        bg[at:at + len(d)] += d / rms(d) * around * 10 ** (snr / 20)
        sf.write(str(out / f"{p.stem}.wav"), bg / max(1.0, float(np.abs(bg).max())), SR)
    return {"test": len(test), "train": len(train), "seconds": length, "snr_db": snr}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = Path(__file__).resolve().parent
    ap.add_argument("--data", default=str(here.parents[1] / "shared" / "data"))
    ap.add_argument("--work", default="/tmp/mil_table")
    ap.add_argument("--encoder", default="yamnet")
    ap.add_argument("--train", type=int, default=600, help="training files (test: all 300 files of takes 0-4)")
    ap.add_argument("--length", type=float, default=8.0, help="seconds per long file")
    ap.add_argument("--snr", type=float, default=0.0, help="digit level against the background around it, dB")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from simsearch.classify.knn import file_vectors
    from simsearch.classify.probe import fit_attention_probe, fit_probe
    from simsearch.cli.core import main as cli
    from simsearch.search.index import Index

    work = Path(args.work)
    files = work / "files"
    made_file = work / "made.json"
    if not made_file.is_file():
        made_file.parent.mkdir(parents=True, exist_ok=True)
        made_file.write_text(json.dumps(make_files(Path(args.data), files, args.train, args.length, args.snr,
                                                   args.seed)))
    made = json.loads(made_file.read_text())
    ix = work / f"ix-{args.encoder}"
    t0 = time.time()
    cli(["index", str(files), "--out", str(ix), "--encoder", args.encoder, "--window", "1", "--hop", "1",
         "--label-regex", r"^(\d)_", "--no-fingerprint", "--device", "cpu"])
    t_index = time.time() - t0
    index = Index.open(ix, device="cpu")
    paths = index.rows["path"].to_numpy()
    emb = index.embeddings()
    names, vecs = file_vectors(paths, emb)
    bags = {p: emb[paths == p] for p in names}
    is_test = np.array([int(re.search(r"_(\d+)\.wav$", p).group(1)) < 5 for p in names])
    labels = np.array([Path(p).name[0] for p in names])

    t0 = time.time()
    mean = fit_probe(vecs[~is_test], labels[~is_test])
    t_mean = time.time() - t0
    acc_mean = float(np.mean(mean.predict(vecs[is_test]) == labels[is_test]))
    t0 = time.time()
    attn = fit_attention_probe([bags[p] for p in names[~is_test]], list(labels[~is_test]))
    t_attn = time.time() - t0
    pred = [attn.classes[int(np.argmax(attn.scores_windows(bags[p])))] for p in names[is_test]]
    acc_attn = float(np.mean(np.array(pred) == labels[is_test]))
    result = {"encoder": args.encoder, **made, "windows": int(len(paths)), "mean_accuracy": round(acc_mean, 3),
              "attention_accuracy": round(acc_attn, 3), "attention_epochs": attn.meta["epochs"],
              "index_s": round(t_index, 1), "fit_mean_s": round(t_mean, 1), "fit_attention_s": round(t_attn, 1)}
    print(json.dumps(result))
    (work / f"result-{args.encoder}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
