"""Audio-MAE parity recipe: deterministic weights and input shared by the reference run and tests/test_audiomae.py.

The weights come from a seed in sorted key order of the official pretrained.pth layout (encoder and decoder),
drawn as in scripts/passt_parity.py, so Audio-MAE's reference code (models_mae.py MaskedAutoencoderViT on timm
0.4.5) and simsearch's module get the same numbers.

    python scripts/audiomae_parity.py              # real size (ViT-B): parameters, CPU s per 10-s clip, differences
    PYTHONPATH=/tmp/ssast_ref:/tmp/audiomae_ref_src python scripts/audiomae_parity.py --reference   # rebuild .npz

`--reference` needs the encoder part of AudioMAE's models_mae.py (github.com/facebookresearch/AudioMAE; the Swin
decoder it also imports is never run) and timm's ViT Block (timm==0.4.5 plus torchvision, `pip install --no-deps
--target /tmp/ssast_ref ...`), kept out of the project's environment.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from passt_parity import parity_main, recipe_state_dict  # noqa: E402
from ssast_parity import FBANK_FRAMES, test_input  # noqa: E402

from simsearch.encoders.audiomae import AudioMaeConfig  # noqa: E402

REFERENCE = ROOT / "tests" / "data" / "audiomae_reference.npz"
REAL = AudioMaeConfig()  # ViT-B/16 on 128 x 1024 fbank; decoder 512-d, 8 layers
SMALL = AudioMaeConfig(embed_dim=192, depth=2, num_heads=3, mlp_hidden=768)
DECODER = {768: (512, 8, 16), 192: (64, 1, 2)}  # width -> decoder width, depth, heads
CASES = {"small": (SMALL, 21, 10.255), "real": (REAL, 8, 10.255)}  # config, seed, seconds (1024 frames)
TOKEN_ROWS = (0, 1, 2, -1)  # CLS, first patches, last patch


def official_shapes(cfg: AudioMaeConfig) -> dict[str, tuple[int, ...]]:
    """Shapes under the official pretrained checkpoint's keys: MaskedAutoencoderViT's encoder and decoder."""
    from simsearch.encoders.vit_audio import AudioViT

    n = cfg.t_grid * cfg.f_grid
    vit = AudioViT(cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_hidden, (cfg.patch, cfg.patch), n)
    shapes = {k: tuple(v.shape) for k, v in vit.state_dict().items()}
    dd, depth, _ = DECODER[cfg.embed_dim]
    shapes.update({"decoder_embed.weight": (dd, cfg.embed_dim), "decoder_embed.bias": (dd,),
                   "mask_token": (1, 1, dd), "decoder_pos_embed": (1, n + 1, dd),
                   "decoder_norm.weight": (dd,), "decoder_norm.bias": (dd,),
                   "decoder_pred.weight": (cfg.patch ** 2, dd), "decoder_pred.bias": (cfg.patch ** 2,)})
    for i in range(depth):
        block = AudioViT(dd, 1, 1, 4 * dd, (cfg.patch, cfg.patch), 1).blocks[0]
        shapes.update({f"decoder_blocks.{i}.{k}": tuple(v.shape) for k, v in block.state_dict().items()})
    return shapes


def save_checkpoint(path: Path, cfg: AudioMaeConfig, seed: int) -> Path:
    """An Audio-MAE checkpoint file in the official layout (the state dict under 'model')."""
    import torch

    torch.save({"model": recipe_state_dict(official_shapes(cfg), seed)}, path)
    return path


def outputs(case: str, spec, states, vec) -> dict[str, np.ndarray]:
    """The small slices stored and compared: fbank frames, a few token rows, the clip vector."""
    return {f"{case}_fbank": spec[0][list(FBANK_FRAMES)].numpy(), f"{case}_tokens": states[0, list(TOKEN_ROWS)].numpy(),
            f"{case}_pooled": vec[0].numpy()}


def ours(case: str) -> dict[str, np.ndarray]:
    """simsearch's outputs for one case, under the names the reference file uses."""
    import torch

    from simsearch.encoders.audiomae import build_from_state, encode
    from simsearch.encoders.vit_audio import fbank

    cfg, seed, seconds = CASES[case]
    model, cfg = build_from_state({"model": recipe_state_dict(official_shapes(cfg), seed)})
    with torch.inference_mode():
        spec = fbank(torch.from_numpy(test_input(seed, seconds)))[None]
        states = encode(model, cfg, spec)
    return outputs(case, spec, states, states[:, 1:].mean(dim=1))


def reference(case: str) -> dict[str, np.ndarray]:
    """Audio-MAE's outputs: its data loader's fbank, MaskedAutoencoderViT.forward_encoder with nothing masked
    (tokens put back in order with its ids_restore)."""
    from functools import partial

    import torch
    import torchaudio
    from models_mae_enc import MaskedAutoencoderViT
    from torch import nn

    cfg, seed, seconds = CASES[case]
    wave = torch.from_numpy(test_input(seed, seconds))[None]
    wave = wave - wave.mean()
    spec = torchaudio.compliance.kaldi.fbank(wave, htk_compat=True, sample_frequency=16000, use_energy=False,
                                             window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)
    spec = ((spec - (-4.2677393)) / (4.5689974 * 2))[None]
    dd, depth, heads = DECODER[cfg.embed_dim]
    net = MaskedAutoencoderViT(img_size=(1024, 128), patch_size=16, in_chans=1, embed_dim=cfg.embed_dim,
                               depth=cfg.depth, num_heads=cfg.num_heads, decoder_embed_dim=dd, decoder_depth=depth,
                               decoder_num_heads=heads, mlp_ratio=4, norm_layer=partial(nn.LayerNorm, eps=1e-6)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(Path(tmp) / "pretrained.pth", cfg, seed)
        net.load_state_dict(torch.load(path, map_location="cpu")["model"], strict=True)
    with torch.no_grad():
        x, _, ids_restore, _ = net.forward_encoder(spec.unsqueeze(1), mask_ratio=0.0)
    patches = torch.gather(x[:, 1:], 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))
    states = torch.cat([x[:, :1], patches], dim=1)
    return outputs(case, spec, states, states[:, 1:].mean(dim=1))


def main() -> None:
    parity_main("audiomae", sys.modules[__name__], "mae.pth", 8)


if __name__ == "__main__":
    main()
