"""Parity of YAMNet on torch (yamnet_torch) with the ONNX path (yamnet) on real audio, and the CPU speed of both.

Five ways to run the same weights:
  onnx         today's YamnetEncoder: onnxruntime with all graph optimisations (QDQ pairs fused into int8 kernels,
               whose u8 x s8 products can saturate on x86 CPUs without VNNI, so the result depends on the CPU)
  onnx-ref     the same graph with optimisations off: its QuantizeLinear/DequantizeLinear ops run as written,
               i.e. the model's defined output, whatever the CPU's int8 instructions
  onnx-basic   the same graph with basic optimisations only (no int8 kernel fusion): a candidate fix for `onnx`
  torch        YamnetTorchEncoder() (quantize=True): activations rounded onto the graph's uint8 grids
  torch-float  YamnetTorchEncoder(quantize=False): float activations within the graph's ranges

For each data set it prints, for pairs of these, mean / minimum cosine of the clip embeddings (mean of patch
embeddings) and top-1 tag agreement (top-1: same argmax of tag_scores; tied: the first one's top tag is one of
the second's tied top tags, as the graph's logits come in steps of 0.76); the leave-one-out P@1 of each (label
of the nearest other clip); then clips/s on 10-s clips in batches of 32 with 2 threads.

    .venv/bin/python scripts/yamnet_parity.py [--sonic 100] [--fsdd 100] [--speed-batches 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SR = 16000
PAIRS = [("torch", "onnx"), ("torch-float", "onnx"), ("torch", "onnx-ref"), ("torch-float", "onnx-ref"),
         ("onnx", "onnx-ref"), ("onnx-basic", "onnx-ref")]


class ReferenceOnnx:
    """YamnetEncoder's graph and batching with fewer onnxruntime graph optimisations ("none": the graph as
    written; "basic": constant folding and the like, QDQ pairs left as float ops)."""

    def __init__(self, threads: int, level: str = "none"):
        import onnxruntime as ort

        from simsearch.encoders.yamnet import YamnetEncoder

        self.enc = YamnetEncoder(name=f"yamnet-{level}", threads=threads)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.graph_optimization_level = {"none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                         "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}[level]
        # The encoder runs whatever session it holds; this one keeps the QDQ ops unfused.
        self.enc.session = ort.InferenceSession(str(self.enc._model_path), sess_options=opts,
                                                providers=["CPUExecutionProvider"])

    def embed_batch(self, batch):
        return self.enc.embed_batch(batch)


def pick(files: list[Path], n: int) -> list[Path]:
    """n files spread evenly over the sorted list, so every label prefix is represented."""
    if len(files) <= n:
        return files
    return [files[i] for i in np.linspace(0, len(files) - 1, n).round().astype(int)]


def load_sets(data: Path, n_sonic: int, n_fsdd: int) -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
    from simsearch.audio.decode import decode

    sets = {}
    for name, files in [("sonic-pi", pick(sorted((data / "sonic-pi").glob("*.flac")), n_sonic)),
                        ("fsdd", pick(sorted((data / "fsdd" / "recordings").glob("*.wav")), n_fsdd))]:
        if not files:
            print(f"(no {name} files under {data})")
            continue
        wavs = [decode(f, SR) for f in files]
        sets[name] = (wavs, np.array([f.name.split("_")[0] for f in files]))
    return sets


def run(enc, wavs: list[np.ndarray], batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Clip embeddings [N, 1024] and tag scores [N, 521] in batches."""
    outs = [enc.embed_batch(wavs[i:i + batch]) for i in range(0, len(wavs), batch)]
    return np.concatenate([o["embedding"] for o in outs]), np.concatenate([o["tag_scores"] for o in outs])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def loo_p_at_1(emb: np.ndarray, labels: np.ndarray) -> float:
    """Share of clips whose nearest other clip (cosine) has the same label."""
    e = emb / (np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12)
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    return float((labels[sim.argmax(1)] == labels).mean())


def parity_table(encoders: dict, sets: dict) -> None:
    for set_name, (wavs, labels) in sets.items():
        res = {name: run(enc, wavs) for name, enc in encoders.items()}
        secs = np.array([len(w) / SR for w in wavs])
        print(f"\n{set_name}: {len(wavs)} clips, {secs.mean():.2f} s mean ({secs.min():.2f}-{secs.max():.2f} s)")
        print(f"  {'pair':<26} {'mean cos':>9} {'min cos':>9} {'top-1':>8} {'tied':>8}")
        for a, b in PAIRS:
            if a in res and b in res:
                c = cosines(res[a][0], res[b][0])
                top_a, tags_b = res[a][1].argmax(1), res[b][1]
                agree = float((top_a == tags_b.argmax(1)).mean())
                tied = float((tags_b[np.arange(len(top_a)), top_a] >= tags_b.max(1) - 1e-6).mean())
                print(f"  {a + ' vs ' + b:<26} {c.mean():>9.4f} {c.min():>9.4f} {agree:>8.1%} {tied:>8.1%}")
        print("  LOO P@1 by label: " + ", ".join(f"{n} {loo_p_at_1(r[0], labels):.3f}" for n, r in res.items()))


def speed_table(encoders: dict, sets: dict, batches: int, batch: int = 32) -> None:
    """clips/s on 10-s clips (real audio tiled to 10 s), after one warm-up batch."""
    source = next(iter(sets.values()))[0] if sets else [np.random.default_rng(0).standard_normal(SR) * 0.1]
    clips = [np.resize(source[i % len(source)], 10 * SR).astype(np.float32) for i in range(batch * batches)]
    print(f"\nspeed: 10-s clips, batch {batch}, {batches} timed batches, torch threads {_threads()}")
    for name, enc in encoders.items():
        enc.embed_batch(clips[:batch])
        t = time.perf_counter()
        for i in range(0, len(clips), batch):
            enc.embed_batch(clips[i:i + batch])
        dt = time.perf_counter() - t
        print(f"  {name:<12} {len(clips) / dt:8.1f} clips/s")


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--sonic", type=int, default=100)
    ap.add_argument("--fsdd", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--speed-batches", type=int, default=2, help="timed batches of 32 10-s clips (0: skip)")
    ap.add_argument("--no-ref", action="store_true", help="leave out onnx-ref and onnx-basic (slow)")
    args = ap.parse_args()

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from simsearch.encoders.yamnet import YamnetEncoder
    from simsearch.encoders.yamnet_torch import YamnetTorchEncoder

    encoders = {"onnx": YamnetEncoder(threads=args.threads)}
    if not args.no_ref:
        encoders["onnx-ref"] = ReferenceOnnx(args.threads, "none")
        encoders["onnx-basic"] = ReferenceOnnx(args.threads, "basic")
    encoders["torch"] = YamnetTorchEncoder(device="cpu")
    encoders["torch-float"] = YamnetTorchEncoder(device="cpu", quantize=False)
    sets = load_sets(args.data, args.sonic, args.fsdd)
    parity_table(encoders, sets)
    if args.speed_batches > 0:
        speed_table(encoders, sets, args.speed_batches)


if __name__ == "__main__":
    main()
