"""PaSST parity recipe: deterministic weights and input shared by the reference run and tests/test_passt.py.

The weights come from a seed, not from any library's initialiser, so PaSST's reference code (hear21passt) and
simsearch's module get the same numbers.

    python scripts/passt_parity.py              # real size (PaSST-S): parameters, CPU s per 10-s clip, differences
    PYTHONPATH=/tmp/passt_ref python scripts/passt_parity.py --reference   # rebuild tests/data/passt_reference.npz

`--reference` needs hear21passt and its timm==0.4.12 (and torchvision, which timm imports) on the path, e.g.
`pip install --no-deps --target /tmp/passt_ref hear21passt timm==0.4.12 torchvision==<torch's>`, kept out of the
project's environment.
"""
from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simsearch.encoders.passt_model import PasstConfig  # noqa: E402

REFERENCE = ROOT / "tests" / "data" / "passt_reference.npz"
SAMPLE_RATE = 32000
REAL = PasstConfig()  # PaSST-S: 768-d, 12 layers, 12 heads, 128 mels, patch 16 stride 10, 10-s input
# Same structure, test-sized; 64 dims per head as in every published PaSST, so a checkpoint implies its heads.
SMALL = replace(REAL, embed_dim=128, depth=2, num_heads=2, mlp_hidden=256)
CASES = {"small": (SMALL, 11, 10.0), "short": (SMALL, 12, 3.3), "real": (REAL, 7, 10.0)}  # config, seed, seconds
TOKEN_ROWS = (0, 1, 2, -1)  # CLS, distillation, first patch, last patch
MEL_FRAMES = (0, 1, 2, 150, -2, -1)


def recipe_state_dict(shapes: dict[str, tuple[int, ...]], seed: int) -> dict:
    """Weights for PaSST's official key names, drawn in sorted key order from one seeded generator."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        draw = torch.randn(shape, generator=gen)
        if "norm" in key and key.endswith("weight") or key == "head.0.weight":
            value = 1.0 + 0.1 * draw
        elif key.endswith("bias"):
            value = 0.05 * draw
        elif "token" in key or "pos_embed" in key:
            value = 0.1 * draw
        else:
            value = draw / float(np.sqrt(np.prod(shape[1:])))
        state[key] = value.contiguous()
    return state


def official_shapes(cfg: PasstConfig) -> dict[str, tuple[int, ...]]:
    """Shapes under PaSST's key names, read off simsearch's module of that size."""
    from simsearch.encoders.passt_model import PaSST

    return {k: tuple(v.shape) for k, v in PaSST(cfg).state_dict().items()}


def test_input(seed: int, seconds: float) -> np.ndarray:
    """A sound-like clip: a few harmonic tones with vibrato, a decaying noise burst and a little hiss."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    x = np.zeros_like(t)
    for f0 in rng.uniform(110, 2000, size=3):
        for h in range(1, 5):
            x += np.sin(2 * np.pi * f0 * h * t + 0.3 * np.sin(2 * np.pi * 5 * t)) / h
    x += 2.0 * rng.standard_normal(len(t)) * np.exp(-((t - seconds / 2) ** 2) / 0.02)
    x += 0.05 * rng.standard_normal(len(t))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def save_checkpoint(path: Path, cfg: PasstConfig, seed: int) -> Path:
    """A PaSST checkpoint file in the official layout (a bare state dict of the PaSST module)."""
    import torch

    torch.save(recipe_state_dict(official_shapes(cfg), seed), path)
    return path


def ours(case: str) -> dict[str, np.ndarray]:
    """simsearch's outputs for one case, under the names the reference file uses."""
    import torch

    from simsearch.encoders.passt_model import MelFrontEnd, build_from_state, pooled

    cfg, seed, seconds = CASES[case]
    model = build_from_state(recipe_state_dict(official_shapes(cfg), seed), cfg.num_heads)
    wave = torch.from_numpy(test_input(seed, seconds))[None]
    with torch.inference_mode():
        mel = MelFrontEnd(cfg.n_mels)(wave)
        states, logits = model(mel)
    return outputs(case, mel, states, pooled(states), logits)


def outputs(case: str, mel, states, vec, logits) -> dict[str, np.ndarray]:
    """The small slices stored and compared: mel frames, a few token rows, the pooled vector, the logits."""
    return {f"{case}_mel": mel[0][:, list(MEL_FRAMES)].T.numpy(),
            f"{case}_mel_mean": mel[0].mean(dim=1).numpy(),
            f"{case}_tokens": states[0, list(TOKEN_ROWS)].numpy(),
            f"{case}_pooled": vec[0].numpy(), f"{case}_logits": logits[0].numpy()}


def reference(case: str) -> dict[str, np.ndarray]:
    """hear21passt's outputs (AugmentMelSTFT as its HEAR base model sets it up, PaSST in eval mode)."""
    import torch
    from hear21passt.models.passt import PaSST as RefPaSST
    from hear21passt.models.preprocess import AugmentMelSTFT

    cfg, seed, seconds = CASES[case]
    mel_fn = AugmentMelSTFT(n_mels=128, sr=32000, win_length=800, hopsize=320, n_fft=1024, freqm=48, timem=192,
                            htk=False, fmin=0.0, fmax=None, norm=1, fmin_aug_range=10, fmax_aug_range=2000).eval()
    net = RefPaSST(img_size=(128, 998), patch_size=cfg.patch, stride=(cfg.fstride, cfg.tstride), in_chans=1,
                   num_classes=cfg.num_classes, embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads,
                   mlp_ratio=cfg.mlp_hidden / cfg.embed_dim, distilled=True).eval()
    net.load_state_dict(recipe_state_dict(official_shapes(cfg), seed), strict=True)
    kept = {}
    net.norm.register_forward_hook(lambda m, i, o: kept.update(states=o))
    wave = torch.from_numpy(test_input(seed, seconds))[None]
    with torch.no_grad():
        mel = mel_fn(wave)
        logits, features = net(mel.unsqueeze(1))
    return outputs(case, mel, kept["states"], features, logits)


def compare(got: dict, want) -> dict[str, tuple[float, float]]:
    """Max abs difference and cosine per stored output."""
    out = {}
    for key, value in got.items():
        a, b = value.reshape(-1).astype(np.float64), want[key].reshape(-1).astype(np.float64)
        out[key] = (float(np.abs(a - b).max()), float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    return out


def parity_main(name: str, module, filename: str, seed: int = 7) -> None:
    """A parity script's entry: with --reference, rebuild module.REFERENCE from the reference code (module.reference
    per case); else print our real-size outputs against it, the parameter count and the CPU time per 10-s clip."""
    import torch

    torch.set_num_threads(2)
    if "--reference" in sys.argv:
        ref = {}
        for case in module.CASES:
            ref.update(module.reference(case))
        np.savez_compressed(module.REFERENCE, **{k: v.astype(np.float32) for k, v in ref.items()})
        print(f"wrote {module.REFERENCE} ({module.REFERENCE.stat().st_size} bytes)")
        return
    from simsearch.encoders import get_encoder

    want = np.load(module.REFERENCE)
    for key, (diff, cos) in compare(module.ours("real"), want).items():
        print(f"{key}: max abs diff {diff:.2e}, cosine {cos:.8f}")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = module.save_checkpoint(Path(tmp) / filename, module.REAL, seed)
        enc = get_encoder(name, checkpoint=str(ckpt), device="cpu")
        print("parameters:", sum(p.numel() for p in enc.model.parameters()))
        clip = module.test_input(0, 10.0)
        enc.embed_audio([clip])  # warm-up
        start = time.perf_counter()
        for _ in range(3):
            enc.embed_audio([clip])
        print(f"CPU s per 10-s clip ({torch.get_num_threads()} threads): {(time.perf_counter() - start) / 3:.3f}")


def main() -> None:
    parity_main("passt", sys.modules[__name__], "passt.pt")


if __name__ == "__main__":
    main()
