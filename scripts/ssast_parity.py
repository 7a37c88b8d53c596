"""SSAST parity recipe: deterministic weights and input shared by the reference run and tests/test_ssast.py.

The weights come from a seed in sorted key order of the official checkpoint layout (scripts/passt_parity.py's
recipe), so SSAST's reference code (src/models/ast_models.py, timm 0.4.5) and simsearch's module get the same numbers.

    python scripts/ssast_parity.py              # real size (SSAST-Base-Patch): parameters, CPU s per 10-s clip, diffs
    PYTHONPATH=/tmp/ssast_ref:/tmp/ssast_ref_src python scripts/ssast_parity.py --reference   # rebuild the .npz

`--reference` needs SSAST's ast_models.py (from github.com/YuanGongND/ssast) and timm==0.4.5 (plus torchvision,
which timm imports) on the path, e.g. `pip install --no-deps --target /tmp/ssast_ref timm==0.4.5
torchvision==<torch's>`, kept out of the project's environment.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from passt_parity import parity_main, recipe_state_dict  # noqa: E402

from simsearch.encoders.ssast import SsastConfig  # noqa: E402

REFERENCE = ROOT / "tests" / "data" / "ssast_reference.npz"
SAMPLE_RATE = 16000
REAL = SsastConfig()  # SSAST-Base-Patch: 768-d, 12 layers, 16x16 patches, pretrained on 128 x 1024 frames
TINY = SsastConfig(embed_dim=192, num_heads=3, mlp_hidden=768)  # the reference's model_size='tiny'
TINY_FRAME = SsastConfig(embed_dim=192, num_heads=3, mlp_hidden=768, fshape=128, tshape=2)
SIZES = {192: "tiny", 768: "base"}  # the reference's model_size for a width
CASES = {"small": (TINY, 11, 10.255), "short": (TINY, 12, 3.3), "frame": (TINY_FRAME, 13, 2.0),
         "real": (REAL, 7, 10.255)}  # config, seed, seconds (10.255 s = the 1024 pretraining frames)
TOKEN_ROWS = (0, 1, 2, -1)  # CLS, distillation, first patch, last patch
FBANK_FRAMES = (0, 1, 2, 150, -2, -1)


def official_shapes(cfg: SsastConfig) -> dict[str, tuple[int, ...]]:
    """Shapes under the official checkpoint's keys: the DataParallel state dict of the pretraining-stage model."""
    from simsearch.encoders.vit_audio import AudioViT

    d = cfg.embed_dim
    f, t = cfg.grid
    vit = AudioViT(d, cfg.depth, cfg.num_heads, cfg.mlp_hidden, (cfg.fshape, cfg.tshape), f * t, cfg.dist_token)
    shapes = {f"module.v.{k}": tuple(v.shape) for k, v in vit.state_dict().items()}
    for head in ("head", "head_dist"):  # the ImageNet heads timm's DeiT carries
        shapes[f"module.v.{head}.weight"], shapes[f"module.v.{head}.bias"] = (1000, d), (1000,)
    for pred in ("cpredlayer", "gpredlayer"):  # the pretraining heads
        shapes.update({f"module.{pred}.0.weight": (d, d), f"module.{pred}.0.bias": (d,),
                       f"module.{pred}.2.weight": (256, d), f"module.{pred}.2.bias": (256,)})
    shapes.update({"module.mask_embed": (1, 1, d), "module.p_input_fdim": (), "module.p_input_tdim": ()})
    return shapes


def recipe_checkpoint(cfg: SsastConfig, seed: int) -> dict:
    """A pretrained-checkpoint state dict in the official layout with seeded weights and the recorded input size."""
    import torch

    state = recipe_state_dict(official_shapes(cfg), seed)
    state["module.p_input_fdim"] = torch.tensor(cfg.input_fdim)
    state["module.p_input_tdim"] = torch.tensor(cfg.input_tdim)
    return state


def save_checkpoint(path: Path, cfg: SsastConfig, seed: int) -> Path:
    """An SSAST checkpoint file in the official layout."""
    import torch

    torch.save(recipe_checkpoint(cfg, seed), path)
    return path


def test_input(seed: int, seconds: float) -> np.ndarray:
    """A sound-like clip at 16 kHz: harmonic tones with vibrato, a decaying noise burst and a little hiss."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    x = np.zeros_like(t)
    for f0 in rng.uniform(110, 2000, size=3):
        for h in range(1, 5):
            x += np.sin(2 * np.pi * f0 * h * t + 0.3 * np.sin(2 * np.pi * 5 * t)) / h
    x += 2.0 * rng.standard_normal(len(t)) * np.exp(-((t - seconds / 2) ** 2) / 0.02)
    x += 0.05 * rng.standard_normal(len(t))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def outputs(case: str, spec, states, vec) -> dict[str, np.ndarray]:
    """The small slices stored and compared: fbank frames, a few token rows, the clip vector."""
    return {f"{case}_fbank": spec[0][list(FBANK_FRAMES)].numpy(), f"{case}_fbank_mean": spec[0].mean(dim=0).numpy(),
            f"{case}_tokens": states[0, list(TOKEN_ROWS)].numpy(), f"{case}_pooled": vec[0].numpy()}


def ours(case: str) -> dict[str, np.ndarray]:
    """simsearch's outputs for one case, under the names the reference file uses."""
    import torch

    from simsearch.encoders.ssast import build_from_state, patch_positions
    from simsearch.encoders.vit_audio import fbank

    cfg, seed, seconds = CASES[case]
    model, cfg = build_from_state(recipe_checkpoint(cfg, seed))
    with torch.inference_mode():
        spec = fbank(torch.from_numpy(test_input(seed, seconds)))[None]
        grid = model.patches(spec)
        states = model(grid, patch_positions(model, cfg, grid.shape[-1]))
    return outputs(case, spec, states, states[:, model.extra_tokens:].mean(dim=1))


def reference(case: str) -> dict[str, np.ndarray]:
    """SSAST's outputs: its data loader's fbank, ASTModel(pretrain_stage=False) on the saved checkpoint, ft_avgtok."""
    import torch
    import torchaudio
    from ast_models import ASTModel

    cfg, seed, seconds = CASES[case]
    wave = torch.from_numpy(test_input(seed, seconds))[None]
    wave = wave - wave.mean()
    spec = torchaudio.compliance.kaldi.fbank(wave, htk_compat=True, sample_frequency=SAMPLE_RATE, use_energy=False,
                                             window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)
    spec = ((spec - (-4.2677393)) / (4.5689974 * 2))[None]
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(Path(tmp) / "ssast.pth", cfg, seed)
        pre = torch.nn.DataParallel(ASTModel(fshape=cfg.fshape, tshape=cfg.tshape, fstride=cfg.fshape,
                                             tstride=cfg.tshape, model_size=SIZES[cfg.embed_dim]))
        assert set(pre.state_dict()) == set(official_shapes(cfg)), "key layout differs from the pretraining model's"
        net = ASTModel(label_dim=527, fshape=cfg.fshape, tshape=cfg.tshape, fstride=cfg.fshape, tstride=cfg.tshape,
                       input_fdim=128, input_tdim=spec.shape[1], model_size=SIZES[cfg.embed_dim],
                       pretrain_stage=False, load_pretrained_mdl_path=str(path)).eval()
    kept = {}
    net.v.norm.register_forward_hook(lambda m, i, o: kept.update(states=o))
    net.mlp_head.register_forward_hook(lambda m, i, o: kept.update(vec=i[0]))
    with torch.no_grad():
        net(spec, task="ft_avgtok")
    return outputs(case, spec, kept["states"], kept["vec"])


def main() -> None:
    parity_main("ssast", sys.modules[__name__], "ssast.pth", 7)


if __name__ == "__main__":
    main()
