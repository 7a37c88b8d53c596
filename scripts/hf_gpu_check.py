#!/usr/bin/env python
"""Check the transformers encoders on CUDA (bfloat16 autocast) against CPU (float32), and time them.

No hub here, so the models are random-weight base-size configs (wav2vec2-base = default
Wav2Vec2Config, AST base = default ASTConfig, CLAP with the default HTSAT-tiny audio tower and a small
text tower), saved with `save_pretrained` to a temporary folder and loaded back through
`simsearch.encoders.get_encoder`, i.e. the real loading path. For each model a batch of random 10-s
clips is embedded on both devices; it prints the cosine per clip (must be >= 0.99) and clips/s.

    .venv/bin/python scripts/hf_gpu_check.py                 # wav2vec2, ast, clap; batch 8, 10 s
    .venv/bin/python scripts/hf_gpu_check.py --models whisper,hubert --batch 16
    .venv/bin/python scripts/hf_gpu_check.py --smoke         # no GPU: run the "GPU" side on CPU, tiny batch

Exit status: 0 when all cosines pass (or there is no CUDA device), 1 otherwise.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # tiny_models: the offline tokenizer trainer for CLAP

THRESHOLD = 0.99


def build(name: str, out: Path) -> Path:
    """Random-weight base-size model + its feature extractor (+ processor for CLAP) saved to `out`."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    w2v_fe = dict(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True)
    if name == "clap":
        from tiny_models import train_tiny_roberta_tokenizer

        tok = train_tiny_roberta_tokenizer(out.parent / "clap_bpe")
        text = tf.ClapTextConfig(vocab_size=len(tok), hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=512, pad_token_id=tok.pad_token_id,
                                 bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
        cfg = tf.ClapConfig(text_config=text.to_dict(), audio_config=tf.ClapAudioConfig().to_dict())  # HTSAT-tiny
        fe = tf.ClapFeatureExtractor(truncation="rand_trunc", padding="repeatpad", frequency_min=50,
                                     frequency_max=14000)  # laion/clap-htsat-unfused's preprocessor config
        tf.ClapModel(cfg).save_pretrained(out)
        tf.ClapProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(out)
        return out
    if name == "wav2vec2":
        model, fe = tf.Wav2Vec2Model(tf.Wav2Vec2Config()), tf.Wav2Vec2FeatureExtractor(
            return_attention_mask=False, **w2v_fe)
    elif name == "hubert":
        model, fe = tf.HubertModel(tf.HubertConfig()), tf.Wav2Vec2FeatureExtractor(return_attention_mask=False,
                                                                                   **w2v_fe)
    elif name == "wavlm":
        model, fe = tf.WavLMModel(tf.WavLMConfig()), tf.Wav2Vec2FeatureExtractor(return_attention_mask=True, **w2v_fe)
    elif name == "data2vec-audio":
        model, fe = tf.Data2VecAudioModel(tf.Data2VecAudioConfig()), tf.Wav2Vec2FeatureExtractor(
            return_attention_mask=True, **w2v_fe)
    elif name == "ast":
        model, fe = tf.ASTModel(tf.ASTConfig()), tf.ASTFeatureExtractor()
    elif name == "hf-tagger":  # AST with an AudioSet-size head: its vector and its 527 label scores
        model, fe = tf.ASTForAudioClassification(tf.ASTConfig(num_labels=527)), tf.ASTFeatureExtractor()
    elif name == "whisper":
        cfg = tf.WhisperConfig(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048,
                               decoder_layers=1, decoder_attention_heads=8)  # whisper-base encoder geometry
        model, fe = tf.WhisperModel(cfg), tf.WhisperFeatureExtractor(feature_size=80)
    else:
        raise SystemExit(f"unknown model {name!r}")
    model.save_pretrained(out)
    fe.save_pretrained(out)
    return out


def make_clips(n: int, seconds: float, sr: int, seed: int = 0) -> list[np.ndarray]:
    """Noise, chirps and tone mixes of `seconds` each, different per clip."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    clips = []
    for i in range(n):
        f0, f1 = rng.uniform(80, 800), rng.uniform(1000, min(8000, sr / 2 - 100))
        x = 0.3 * np.sin(2 * np.pi * (f0 * t + 0.5 * (f1 - f0) / seconds * t**2)) if i % 2 else \
            0.2 * np.sin(2 * np.pi * f0 * t) + 0.1 * np.sin(2 * np.pi * 3.1 * f0 * t)
        x = x + rng.uniform(0.01, 0.2) * rng.standard_normal(t.size)
        clips.append((x * rng.uniform(0.3, 1.0)).astype(np.float32))
    return clips


def timed(fn, reps: int) -> tuple[np.ndarray, float]:
    out = fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        out = fn()
    return out, (time.perf_counter() - t0) / max(reps, 1)


def check(name: str, ckpt: Path, device: str, args) -> bool:
    import torch

    from simsearch.encoders import get_encoder

    opts = {"torch_features": True} if name == "clap" and args.smoke else {}
    cpu = get_encoder(name, checkpoint=str(ckpt), device="cpu")
    dev = get_encoder(name, checkpoint=str(ckpt), device=device, **opts)
    clips = make_clips(args.batch, args.seconds, cpu.sample_rate)

    ref, t_cpu = timed(lambda: cpu.embed_audio(clips), reps=1)
    got, t_dev = timed(lambda: dev.embed_audio(clips), reps=args.reps)
    if device == "cuda":
        torch.cuda.synchronize()
    cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    ok = bool(np.isfinite(got).all() and cos.min() >= THRESHOLD)
    print(f"\n{name}: dim {dev.dim}, {args.batch} clips x {args.seconds:g} s at {dev.sample_rate} Hz")
    print("  cosine per clip (device bf16 vs CPU fp32): " + " ".join(f"{c:.4f}" for c in cos)
          + f"  -> {'ok' if ok else 'FAIL'} (min {cos.min():.4f}, need >= {THRESHOLD})")
    print(f"  {device}: {args.batch / t_dev:8.1f} clips/s ({t_dev * 1000:.0f} ms/batch, mean of {args.reps})"
          f"   cpu: {args.batch / t_cpu:6.2f} clips/s")
    if name == "clap":
        ok &= clap_extras(cpu, dev, clips, args)
    return ok


def clap_extras(cpu, dev, clips, args) -> bool:
    """Log-mel on the device vs the numpy extractor, front-end throughput, and the text tower."""
    import torch

    with torch.inference_mode():
        ref, _ = cpu.features(clips)
        got, _ = dev.features(clips)
    diff = (ref.to(got.device) - got).abs()
    fe_np = timed(lambda: cpu.features(clips), 1)[1]
    fe_dev = timed(lambda: dev.features(clips), args.reps)[1]
    texts = ["a dog barking", "rain on a tin roof", "a car engine starting"]
    tc = (cpu.embed_text(texts) * dev.embed_text(texts)).sum(1)
    ok = float(diff.max()) < 0.05 and tc.min() >= THRESHOLD
    print(f"  log-mel device vs numpy: max |diff| {float(diff.max()):.4f} dB, mean {float(diff.mean()):.2e} dB; "
          f"front end {args.batch / fe_dev:.0f} clips/s on {dev.device} vs {args.batch / fe_np:.1f} clips/s numpy")
    print("  text cosine (device vs CPU): " + " ".join(f"{c:.4f}" for c in tc) + ("" if ok else "  FAIL"))
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="wav2vec2,ast,clap",
                    help="comma list of: wav2vec2, hubert, wavlm, data2vec-audio, ast, whisper, clap, hf-tagger")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--reps", type=int, default=5, help="timed device batches after one warm-up")
    ap.add_argument("--smoke", action="store_true", help="no GPU needed: 'device' side on CPU, batch 2 x 2 s")
    args = ap.parse_args(argv)

    import torch

    if args.smoke:
        device, args.batch, args.seconds, args.reps = "cpu", 2, 2.0, 1
    elif not torch.cuda.is_available():
        print("hf_gpu_check: no CUDA device here; nothing to check (run it on a GPU machine, or --smoke)")
        return 0
    else:
        device = "cuda"
        print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            t0 = time.perf_counter()
            ckpt = build(name, Path(tmp) / name)
            print(f"[{name}] built + saved random-weight model in {time.perf_counter() - t0:.1f} s")
            ok &= check(name, ckpt, device, args)
    print("\nall ok" if ok else "\nSOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
