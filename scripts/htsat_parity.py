"""HTS-AT parity recipe: deterministic weights and input shared by the reference run and tests/test_htsat.py.

The weights come from a seed, not from any library's initialiser, so HTS-AT's reference code and simsearch's module
get the same numbers. The input and the comparison are PaSST's recipe (scripts/passt_parity.py), same 32 kHz.

    python scripts/htsat_parity.py              # real size (AudioSet model): parameters, CPU s per 10-s clip, diffs
    PYTHONPATH=/tmp/htsat_ref python scripts/htsat_parity.py --reference   # rebuild tests/data/htsat_reference.npz

`--reference` needs the reference network as the package `htsat_reference` (model/htsat.py of
RetroCirce/HTS-Audio-Transformer, or its copy clap_module/htsat.py in laion_clap, which has the same layers and
token-semantic head; with its `interpolate` / `do_mixup` helpers beside it) and torchlibrosa with librosa on the
path, e.g. `pip install --no-deps --target /tmp/htsat_ref torchlibrosa librosa numba llvmlite ...`, kept out of
the project's environment. The reference runs its front end (Spectrogram, LogmelFilterBank), bn0, the inference
mode's repeat and reshape_wav2img, and forward_features.
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from passt_parity import parity_main, test_input  # noqa: E402

from simsearch.encoders.htsat_model import HtsatConfig  # noqa: E402

REFERENCE = ROOT / "tests" / "data" / "htsat_reference.npz"
REAL = HtsatConfig()  # AudioSet model: 96-d patches, depths 2-2-6-2, heads 4-8-16-32, window 8, 256x256, 64 mels
# Same structure, test-sized; a smaller window so that the last stage shifts too.
SMALL = replace(REAL, embed_dim=32, depths=(2, 2, 2, 2), num_heads=(2, 2, 4, 4), window=4)
CASES = {"small": (SMALL, 11, 10.0), "short": (SMALL, 12, 3.3), "real": (REAL, 7, 10.0)}  # config, seed, seconds
MEL_FRAMES = (0, 1, 2, 150, -2, -1)


def recipe_state_dict(shapes: dict[str, tuple[int, ...]], seed: int) -> dict:
    """Weights for HTS-AT's official learnt key names, drawn in sorted key order from one seeded generator."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
            continue
        draw = torch.randn(shape, generator=gen)
        if key == "bn0.running_mean":  # log-mel levels in dB
            value = -30.0 + 5.0 * draw
        elif key == "bn0.running_var":
            value = 400.0 * torch.exp(0.1 * draw)
        elif ("norm" in key or key.startswith("bn0")) and key.endswith("weight"):
            value = 1.0 + 0.1 * draw
        elif key.endswith("bias"):
            value = 0.05 * draw
        elif "relative_position_bias_table" in key:
            value = 0.5 * draw
        else:
            value = draw / float(np.sqrt(np.prod(shape[1:])))
        state[key] = value.contiguous()
    return state


def official_shapes(cfg: HtsatConfig) -> dict[str, tuple[int, ...]]:
    """Shapes under HTS-AT's learnt key names, read off simsearch's module of that size."""
    from simsearch.encoders.htsat_model import HTSAT

    return {k: tuple(v.shape) for k, v in HTSAT(cfg).state_dict().items()}


def save_checkpoint(path: Path, cfg: HtsatConfig, seed: int) -> Path:
    """An HTS-AT checkpoint file in the official layout: a Lightning-style dict whose state_dict keys start with
    'sed_model.' (the fixed STFT / mel / index tables left out: the loader rebuilds them either way)."""
    import torch

    state = recipe_state_dict(official_shapes(cfg), seed)
    lightning = {"epoch": 0, "global_step": 0, "pytorch-lightning_version": "1.5.9", "callbacks": {},
                 "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0]}]}],
                 "lr_schedulers": [{"base_lrs": [1e-3], "last_epoch": 0, "lr_lambdas": [None]}]}
    torch.save({**lightning, "state_dict": {f"sed_model.{k}": v for k, v in state.items()}}, path)
    return path


def outputs(case: str, mel, latent, probs) -> dict[str, np.ndarray]:
    """The small slices stored and compared: mel frames [T, n_mels] (computed in float64, so that the comparison
    sees the two front ends' maths rather than float32 rounding in quiet bins), the pooled latent and the clip
    probabilities (float32 throughout, as the encoder runs)."""
    return {f"{case}_mel": mel[0][list(MEL_FRAMES)].numpy(), f"{case}_mel_mean": mel[0].mean(dim=0).numpy(),
            f"{case}_latent": latent[0].numpy(), f"{case}_probs": probs[0].numpy()}


def ours(case: str) -> dict[str, np.ndarray]:
    """simsearch's outputs for one case, under the names the reference file uses."""
    import torch

    from simsearch.encoders.htsat_model import LogMel, build_from_state

    cfg, seed, seconds = CASES[case]
    model = build_from_state(recipe_state_dict(official_shapes(cfg), seed))
    wave = torch.from_numpy(test_input(seed, seconds))[None]
    with torch.inference_mode():
        latent, logits = model(LogMel(cfg.n_mels)(wave))
        mel = LogMel(cfg.n_mels).double()(wave.double())
    return outputs(case, mel, latent, torch.sigmoid(logits))


def reference(case: str) -> dict[str, np.ndarray]:
    """The reference network's outputs (eval mode, its inference-mode path for inputs up to 1024 frames)."""
    from types import SimpleNamespace

    import torch
    from htsat_reference.htsat import HTSAT_Swin_Transformer

    from simsearch.encoders.htsat_model import FIXED_KEYS

    cfg, seed, seconds = CASES[case]
    conf = SimpleNamespace(mel_bins=cfg.n_mels, window_size=1024, hop_size=320, sample_rate=32000, fmin=50,
                           fmax=14000, enable_tscam=True, htsat_attn_heatmap=False, loss_type="clip_bce",
                           enable_repeat_mode=False)
    net = HTSAT_Swin_Transformer(spec_size=cfg.spec_size, patch_size=cfg.patch, patch_stride=(cfg.patch, cfg.patch),
                                 num_classes=cfg.num_classes, embed_dim=cfg.embed_dim, depths=list(cfg.depths),
                                 num_heads=list(cfg.num_heads), window_size=cfg.window, config=conf).eval()
    result = net.load_state_dict(recipe_state_dict(official_shapes(cfg), seed), strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    assert all(any(p in k for p in FIXED_KEYS) for k in result.missing_keys), result.missing_keys
    wave = torch.from_numpy(test_input(seed, seconds))[None]
    with torch.no_grad():
        x = net.logmel_extractor(net.spectrogram_extractor(wave))  # [B, 1, T, n_mels]
        x = net.bn0(x.transpose(1, 3)).transpose(1, 3)
        x = x.repeat(1, 1, (net.spec_size * net.freq_ratio) // x.shape[2], 1)
        out = net.forward_features(net.reshape_wav2img(x))
        mel = net.logmel_extractor.double()(net.spectrogram_extractor.double()(wave.double()))
    return outputs(case, mel[:, 0], out["embedding"], out["clipwise_output"])


def main() -> None:
    parity_main("htsat", sys.modules[__name__], "htsat.ckpt", 7)


if __name__ == "__main__":
    main()
