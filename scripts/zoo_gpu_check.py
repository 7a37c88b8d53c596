"""Our own model implementations on a GPU: bf16 autocast on CUDA vs fp32 on the CPU, and clips/s, real-size configs.

    python3 scripts/zoo_gpu_check.py [--models passt,htsat,ssast,audiomae,mert] [--batch 8]   # on a CUDA machine
    python3 scripts/zoo_gpu_check.py --smoke --models htsat                                   # anywhere: CPU vs CPU

Each model's real-size checkpoint is written with the seeded weights its parity script uses
(scripts/MODEL_parity.py: save_checkpoint), loaded through get_encoder on both devices, and run on the same clips.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
THRESHOLD = 0.99
MODELS = ("passt", "htsat", "ssast", "audiomae", "mert")


def checkpoint(name: str, tmp: Path) -> Path:
    """The real-size checkpoint of `name` in its official layout, seeded weights (file or folder)."""
    parity = importlib.import_module(f"{name}_parity")
    target = tmp / name if name == "mert" else tmp / f"{name}.pt"
    return parity.save_checkpoint(target, parity.REAL, 7)


def check(name: str, device: str, batch: int, seconds: float, reps: int, tmp: Path) -> bool:
    import torch

    from simsearch.encoders import get_encoder

    ckpt = str(checkpoint(name, tmp))
    cpu = get_encoder(name, checkpoint=ckpt, device="cpu")
    dev = get_encoder(name, checkpoint=ckpt, device=device)
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * cpu.sample_rate)) / cpu.sample_rate
    clips = [(0.3 * np.sin(2 * np.pi * (110 + 40 * i) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
             for i in range(batch)]
    ref = cpu.embed_audio(clips)
    dev.embed_audio(clips[:1])  # warm-up
    start = time.perf_counter()
    for _ in range(reps):
        got = dev.embed_audio(clips)
    if device == "cuda":
        torch.cuda.synchronize()
    per_batch = (time.perf_counter() - start) / reps
    cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    ok = bool(np.isfinite(got).all() and cos.min() >= THRESHOLD)
    print(f"{name}: dim {dev.dim}, {batch} clips x {seconds:g} s; cosine {device} vs CPU fp32 min {cos.min():.4f} "
          f"mean {cos.mean():.4f} -> {'ok' if ok else 'FAIL'}; {device} {batch / per_batch:.1f} clips/s")
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="no GPU needed: both sides on the CPU, 2 clips x 2 s")
    args = ap.parse_args(argv)
    import torch

    if args.smoke:
        device, args.batch, args.seconds, args.reps = "cpu", 2, 2.0, 1
    elif not torch.cuda.is_available():
        print("zoo_gpu_check: no CUDA device here; nothing to check (run it on a GPU machine, or --smoke)")
        return 0
    else:
        device = "cuda"
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            ok &= check(name, device, args.batch, args.seconds, args.reps, Path(tmp))
    print("\nall ok" if ok else "\nSOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
