#!/usr/bin/env python
"""Check our BEATs on a GPU: bf16 autocast on CUDA vs float32 on CPU, same random-weight *base* model.

Builds the official base architecture (12 layers, 768 dim, 12 heads, 3072 FFN, 16x16 patches, deep norm, gated
relative position bias, AudioSet head) with random weights, saves it in the official checkpoint layout, loads it
through the encoder registry on both devices, embeds a batch of random 10 s clips, and prints per-clip cosine
(CUDA bf16 vs CPU fp32), the largest tag-score difference, and clips/s on each device.

    python scripts/beats_gpu_check.py [--clips 8] [--seconds 10] [--repeats 5] [--min-cos 0.99]

Exits 0 with a message when torch sees no CUDA GPU; exits 1 when any cosine is below --min-cos.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BASE_CFG = {  # the hyper-parameters of the official BEATs_iter3(+AS2M) cfg
    "encoder_layers": 12, "encoder_embed_dim": 768, "encoder_ffn_embed_dim": 3072, "encoder_attention_heads": 12,
    "activation_fn": "gelu", "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0,
    "encoder_layerdrop": 0.05, "dropout_input": 0.0, "layer_norm_first": False, "conv_bias": False,
    "conv_pos": 128, "conv_pos_groups": 16, "relative_position_embedding": True, "num_buckets": 320,
    "max_distance": 800, "gru_rel_pos": True, "deep_norm": True, "input_patch_size": 16,
    "layer_wise_gradient_decay_ratio": 0.6, "embed_dim": 512, "finetuned_model": True,
    "predictor_dropout": 0.0, "predictor_class": 527,
}


def random_clips(n: int, seconds: float, seed: int = 0) -> list[np.ndarray]:
    """Tones, chirps and noise at different levels, so the clips are not all alike."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    clips = []
    for i in range(n):
        f0 = rng.uniform(80, 4000)
        sweep = np.sin(2 * np.pi * (f0 * t + rng.uniform(-200, 200) * t**2))
        x = rng.uniform(0.05, 0.5) * sweep + rng.uniform(0.005, 0.2) * rng.standard_normal(t.size)
        if i % 3 == 2:  # bursts
            x *= (np.sin(2 * np.pi * rng.uniform(0.5, 4) * t) > 0)
        clips.append(x.astype(np.float32))
    return clips


def timed(enc, clips, repeats: int, sync) -> tuple[dict, float]:
    out = enc.embed_batch(clips)  # warm-up (kernels, allocator)
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = enc.embed_batch(clips)
    sync()
    return out, repeats * len(clips) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=5, help="timed batches on CUDA (CPU runs one)")
    ap.add_argument("--min-cos", type=float, default=0.99)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("beats_gpu_check: torch sees no CUDA GPU; nothing to compare (run this on a machine with one).")
        return 0

    from simsearch.encoders import get_encoder
    from simsearch.encoders.beats_model import BEATs, BEATsConfig

    torch.manual_seed(args.seed)
    model = BEATs(BEATsConfig.from_dict(BASE_CFG))
    n_params = sum(p.numel() for p in model.parameters())
    clips = random_clips(args.clips, args.seconds, args.seed)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "beats_base_random.pt"
        torch.save({"cfg": BASE_CFG, "model": model.state_dict(),
                    "label_dict": {i: f"class{i}" for i in range(527)}}, path)
        del model
        cpu = get_encoder("beats", checkpoint=str(path), device="cpu")
        gpu = get_encoder("beats", checkpoint=str(path), device="cuda")

    print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; "
          f"random base BEATs, {n_params / 1e6:.1f} M parameters; {args.clips} clips x {args.seconds:g} s")
    out_gpu, rate_gpu = timed(gpu, clips, args.repeats, torch.cuda.synchronize)
    out_cpu, rate_cpu = timed(cpu, clips, 1, lambda: None)

    a, b = out_cpu["embedding"].astype(np.float64), out_gpu["embedding"].astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    for i, c in enumerate(cos):
        print(f"clip {i}: cosine(cuda bf16, cpu fp32) = {c:.5f}")
    tag_diff = float(np.abs(out_cpu["beats_tags"] - out_gpu["beats_tags"]).max())
    print(f"min cosine {cos.min():.5f}; max |tag score difference| {tag_diff:.4f}")
    print(f"throughput: cuda bf16 {rate_gpu:.1f} clips/s, cpu fp32 {rate_cpu:.2f} clips/s "
          f"(peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB)")
    if cos.min() < args.min_cos:
        print(f"FAIL: cosine below {args.min_cos}")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
