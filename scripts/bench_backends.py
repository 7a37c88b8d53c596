"""The offline default's models on each backend side by side, and query-by-example latency of the default.

    .venv/bin/python scripts/bench_backends.py --data ../shared/data/sonic-pi [--device cpu] [-n 50]

Part 1, one row per model and backend (simsearch.encoders.backends) on the device: forward clips/s on 10-s clips
(batch 32), one 5-s clip's embedding in ms (p50 of 20), and against the reference computed on the CPU (YAMNet:
torch, the graph's own arithmetic; Whisper: CTranslate2 float32) the cosine of every file's vector (mean, min)
and the top-10 overlap: rows made on the reference, each file's query made on the backend, the share of the
reference's own top 10 that the query finds (what an index built on one backend and searched on another gives).
Part 2: `Index.search` in-process on an index of the files cut or looped to 5 s (44.1 kHz WAV, so decoding
resamples), p50 / p95 of n queries, with the time of each stage: decode, each model, the rest (landmarks, FAISS).
Prints Markdown tables.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simsearch.audio.decode import AUDIO_EXTENSIONS, decode
from simsearch.cli.options import backend_arg
from simsearch.encoders import default_conditioning, get_encoder
from simsearch.vectors import normalize

SR = 16000
ROWS = {  # model -> [(label, backend, extra constructor options)] per device kind
    "cpu": {"yamnet": [("onnx-s8", "onnx-s8", {}), ("onnx", "onnx", {}), ("torch", "torch", {})],
            "whisper-tiny-offline": [("ct2 float32", "ct2", {}), ("ct2 int8", "ct2", {"compute_type": "int8"}),
                                     ("torch", "torch", {})]},
    "cuda": {"yamnet": [("torch bf16", "torch", {}), ("onnx (CPU)", "onnx", {})],
             "whisper-tiny-offline": [("torch bf16", "torch", {}), ("ct2 float16", "ct2", {})]},
}
REFERENCE = {"yamnet": "torch", "whisper-tiny-offline": "ct2"}


def looped(x: np.ndarray, n: int) -> np.ndarray:
    """x repeated or cut to n samples."""
    return np.tile(x, int(np.ceil(n / max(1, len(x)))))[:n].astype(np.float32)


def model(name: str, backend: str, device: str, **extra):
    return get_encoder(name, None, device, backend=backend, **default_conditioning(name), **extra)


def vectors(enc, clips: list[np.ndarray]) -> np.ndarray:
    return normalize(np.concatenate([enc.embed_audio(clips[s:s + 32]) for s in range(0, len(clips), 32)]))


def forward_rate(enc, clips: list[np.ndarray]) -> float:
    """Clips/s of embed_audio on 10-s clips in batches of 32 (after one warm-up batch)."""
    enc.embed_audio(clips[:32])
    t = time.perf_counter()
    for s in range(0, len(clips), 32):
        enc.embed_audio(clips[s:s + 32])
    return len(clips) / (time.perf_counter() - t)


def one_clip_ms(enc, clip: np.ndarray, runs: int = 20) -> float:
    enc.embed_audio([clip])
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        enc.embed_audio([clip])
        times.append(1000 * (time.perf_counter() - t))
    return statistics.median(times)


def top10_overlap(rows: np.ndarray, queries: np.ndarray) -> float:
    """Mean share of each file's top 10 among reference rows that its backend query finds too."""
    ref = np.argsort(-(rows @ rows.T), axis=1)[:, :10]
    got = np.argsort(-(queries @ rows.T), axis=1)[:, :10]
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ref, got)]))


def backend_table(clips: list[np.ndarray], device: str) -> list[str]:
    lines = ["| model | backend | precision | forward clips/s (10 s, batch 32) | one 5-s clip ms | cosine to reference "
             "mean / min | top-10 overlap |", "|---|---|---|---:|---:|---|---:|"]
    ten = [looped(x, 10 * SR) for x in (clips * 2)[:64]]
    five = looped(clips[0], 5 * SR)
    for name, rows in ROWS[device].items():
        ref = vectors(model(name, REFERENCE[name], "cpu"), clips)
        for label, backend, extra in rows:
            on = "cpu" if "(CPU)" in label else device
            enc = model(name, backend, on, **extra)
            vec = vectors(enc, clips)
            cos = (vec * ref).sum(axis=1)
            lines.append(f"| {name} | {label} | {enc.precision} | {forward_rate(enc, ten):.1f} | "
                         f"{one_clip_ms(enc, five):.1f} | {cos.mean():.4f} / {cos.min():.4f} | "
                         f"{top10_overlap(ref, vec):.3f} |")
            print(lines[-1], flush=True)
            del enc
    return lines


def query_table(files: list[Path], device: str, n: int, tmp: Path, backends: list[str]) -> list[str]:
    """p50 / p95 of Index.search on 5-s clips, per backend choice, with the stage times."""
    from simsearch.indexing.job import run_index
    from simsearch.indexing.options import IndexOptions
    from simsearch.search.index import QUERY_MAX_S, Index

    folder = tmp / "five"
    folder.mkdir()
    for f in files:
        x, sr = sf.read(f, dtype="float32", always_2d=True)
        sf.write(folder / f"{f.stem}.wav", looped(x.mean(axis=1), 5 * sr), sr, subtype="PCM_16")
    queries = sorted(folder.glob("*.wav"))[:n]
    lines = ["| backend | rows | search p50 ms | p95 ms | decode ms | models ms (each) | landmarks + FAISS ms |",
             "|---|---:|---:|---:|---:|---|---:|"]
    for backend in backends:
        out = tmp / f"ix-{backend}"
        run_index(folder, out, IndexOptions(device=device, progress=False,
                                            backend=backend_arg(backend) if backend else None))
        ix = Index.open(out, device=device)
        ix.search(audio=str(queries[0]), k=10)  # loads the models, the landmark table and FAISS
        total, dec, parts = [], [], {p.name: [] for p in ix.encoder.parts}
        for q in queries:
            t = time.perf_counter()
            ix.search(audio=str(q), k=10)
            total.append(1000 * (time.perf_counter() - t))
            t = time.perf_counter()
            x = decode(str(q), ix.encoder.sample_rate, max_seconds=QUERY_MAX_S)
            dec.append(1000 * (time.perf_counter() - t))
            for p in ix.encoder.parts:
                t = time.perf_counter()
                p.embed_audio([x])
                parts[p.name].append(1000 * (time.perf_counter() - t))
        p50 = {k: statistics.median(v) for k, v in parts.items()}
        rest = statistics.median(total) - statistics.median(dec) - sum(p50.values())
        each = ", ".join(f"{k} ({ix.encoder.backend[k]}) {v:.0f}" for k, v in p50.items())
        lines.append(f"| {backend or 'auto'} | {len(ix)} | {statistics.median(total):.0f} | "
                     f"{np.percentile(total, 95):.0f} | {statistics.median(dec):.0f} | {each} | {rest:.0f} |")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="folder of audio files (e.g. ../shared/data/sonic-pi)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("-n", type=int, default=50, help="queries for the latency table")
    ap.add_argument("--skip-backends", action="store_true", help="only the query table")
    args = ap.parse_args()
    files = sorted(p for p in args.data.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        sys.exit(f"no audio files under {args.data}")
    clips = [decode(p, SR) for p in files]
    if not args.skip_backends:
        lines = backend_table(clips, args.device)
        print(f"\n{len(files)} files from {args.data}, device {args.device}\n\n" + "\n".join(lines))
    tmp = Path(tempfile.mkdtemp(prefix="bench_backends_"))
    try:
        backends = ["", "onnx-s8", "torch"] if args.device == "cpu" else ["", "yamnet=onnx,whisper-tiny-offline=ct2"]
        lines = query_table(files, args.device, args.n, tmp, backends)
        print("\nIndex.search, 5-s clips, in-process:\n\n" + "\n".join(lines))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
