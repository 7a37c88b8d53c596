"""MERT parity recipe: deterministic weights and input shared by the reference run and tests/test_mert.py.

The weights come from a seed, not from any library's initialiser, so MERT's reference code (on the transformers
it was written for) and simsearch's module get the same numbers. `python scripts/mert_parity.py` measures the
real-size (MERT-v1-95M) config: parameter count, CPU time per 10-s clip, and the difference from the stored
reference outputs in tests/data/mert_reference.npz.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "data" / "mert_reference.npz"
SAMPLE_RATE = 24000

# MERT-v1-95M's config.json architecture fields (the hub file also names auto_map / MERTModel).
REAL = {
    "model_type": "mert_model", "architectures": ["MERTModel"], "hidden_size": 768, "num_hidden_layers": 12,
    "num_attention_heads": 12, "intermediate_size": 3072, "hidden_act": "gelu", "layer_norm_eps": 1e-5,
    "feat_extract_norm": "group", "feat_extract_activation": "gelu", "conv_dim": [512] * 7,
    "conv_stride": [5, 2, 2, 2, 2, 2, 2], "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_bias": False,
    "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16, "do_stable_layer_norm": False,
    "feat_proj_layer_norm": True, "feature_extractor_cqt": False, "feature_extractor_cqt_bins": 336,
    "deepnorm": False, "attention_relax": -1.0, "sample_rate": SAMPLE_RATE, "mask_time_prob": 0.05,
}
# The same structure, small enough for a test run in well under a second.
SMALL = {**REAL, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
         "conv_dim": [16] * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4}
PREPROCESSOR = {"do_normalize": True, "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
                "padding_side": "right", "padding_value": 0.0, "return_attention_mask": True,
                "sampling_rate": SAMPLE_RATE}
# The other layouts MERT's code builds: deepnorm residuals, and pre-norm (stable layer norm) layers over a
# layer-norm conv front end (attention_relax set as a pre-norm checkpoint may set it; it changes nothing).
DEEPNORM = {**SMALL, "deepnorm": True}
PRENORM = {**SMALL, "do_stable_layer_norm": True, "feat_extract_norm": "layer", "attention_relax": 32.0}
CASES = {"small": (SMALL, 11, 3.0), "real": (REAL, 7, 5.0), "deepnorm": (DEEPNORM, 13, 2.0),
         "prenorm": (PRENORM, 17, 2.0)}  # name -> (config, seed, input seconds)


def recipe_state_dict(shapes: dict[str, tuple[int, ...]], seed: int) -> dict:
    """Weights for MERT's official key names, drawn in sorted key order from one seeded generator."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        draw = torch.randn(shape, generator=gen)
        if key.endswith(("norm.weight", "weight_g")):
            value = 1.0 + 0.1 * draw
        elif key.endswith("bias") or len(shape) == 1:
            value = 0.05 * draw
        else:
            value = draw / float(np.sqrt(np.prod(shape[1:])))
        state[key] = value.contiguous()
    return state


def official_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Shapes under MERT's saved names (weight norm as weight_g / weight_v, no training-only parameters)."""
    from simsearch.encoders.mert import build_model

    shapes = {}
    for key, value in build_model(config).state_dict().items():
        key = key.replace("parametrizations.weight.original0", "weight_g")
        key = key.replace("parametrizations.weight.original1", "weight_v")
        shapes[key] = tuple(value.shape)
    return shapes


def test_input(seed: int, seconds: float) -> np.ndarray:
    """A music-like clip: a few harmonic tones with vibrato and a little noise, not yet normalised."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    x = np.zeros_like(t)
    for f0 in rng.uniform(110, 880, size=3):
        for h in range(1, 5):
            x += np.sin(2 * np.pi * f0 * h * t + 0.3 * np.sin(2 * np.pi * 5 * t)) / h
    x += 0.05 * rng.standard_normal(len(t))
    return (0.2 * x / np.abs(x).max()).astype(np.float32)


def save_checkpoint(folder: Path, config: dict, seed: int) -> Path:
    """A MERT checkpoint folder in the official layout (config.json, pytorch_model.bin, preprocessor_config.json)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2))
    torch.save(recipe_state_dict(official_shapes(config), seed), folder / "pytorch_model.bin")
    return folder


def compare(case: str, encoder, ref) -> dict:
    """Max abs difference and cosine of simsearch's outputs against the stored reference ones."""
    config, seed, seconds = CASES[case]
    x = test_input(seed, seconds)
    out = {}
    for layer, key in ((None, "last"), (config["num_hidden_layers"] // 2, "mid")):
        encoder.layer = layer
        frames = encoder.embed_frames([x]).frames[0]
        got = {"first": frames[0], "final": frames[-1], "pooled": frames.mean(axis=0)}
        for part, value in got.items():
            want = ref[f"{case}_{key}_{part}"]
            cos = float(value @ want / (np.linalg.norm(value) * np.linalg.norm(want)))
            out[f"{key}_{part}"] = (float(np.abs(value - want).max()), cos)
    return out


def main() -> None:
    import torch

    sys.path.insert(0, str(ROOT))
    from simsearch.encoders import get_encoder

    torch.set_num_threads(2)
    ref = np.load(REFERENCE)
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_checkpoint(Path(tmp) / "mert", REAL, CASES["real"][1])
        enc = get_encoder("mert", checkpoint=str(folder), device="cpu")
        print("parameters:", sum(p.numel() for p in enc.model.parameters()))
        for name, (diff, cos) in compare("real", enc, ref).items():
            print(f"{name}: max abs diff {diff:.2e}, cosine {cos:.8f}")
        enc.layer = None
        clip = test_input(0, 10.0)
        enc.embed_audio([clip])  # warm-up
        start = time.perf_counter()
        for _ in range(3):
            enc.embed_audio([clip])
        print(f"CPU s per 10-s clip ({torch.get_num_threads()} threads): {(time.perf_counter() - start) / 3:.3f}")


if __name__ == "__main__":
    main()
