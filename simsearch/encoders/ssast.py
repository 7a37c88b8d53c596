"""SSAST encoder: a self-supervised Audio Spectrogram Transformer (Gong et al. 2022) on an official pretrained
checkpoint such as SSAST-Base-Patch-400.pth (--checkpoint FILE).

* the network is simsearch.encoders.vit_audio.AudioViT holding the checkpoint's `module.v.*` backbone; patch shape
  (16x16 patches or 128x2 frames), width, depth and the pretraining input size (`module.p_input_fdim` /
  `p_input_tdim`, 128 x 1024 frames) are read from the file; heads are width / 64 as in every published SSAST.
* patches are split without overlap (stride = patch, as in pretraining); a clip shorter than the pretraining input
  uses the centre of the positional grid in time, as the reference fine-tuning code does for a shorter input.
* clip vector: the mean of the patch token states after the final norm, the reference's default fine-tuning
  representation (`ft_avgtok`: the pretraining supervises every patch token, not the class tokens), for each piece
  of up to 10.24 s (the pretraining length); a longer clip is cut into pieces, one frame each, pooled over them.
  Pieces are run in groups of one length and never padded, so a clip's vector does not depend on its batch.
"""
from __future__ import annotations

from dataclasses import dataclass

from simsearch.encoders.checkpoint_file import load_strict, read_checkpoint
from simsearch.encoders.vit_audio import FbankPieces
from simsearch.errors import SimsearchError

CHECKPOINT_HELP = (
    "SSAST needs an official pretrained checkpoint: pass --checkpoint FILE.pth, e.g. SSAST-Base-Patch-400.pth "
    "or SSAST-Base-Frame-400.pth from https://github.com/YuanGongND/ssast (README, 'Pretrained-Models')")


@dataclass(frozen=True)
class SsastConfig:
    """Sizes of an SSAST backbone, read from a checkpoint's shapes."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_hidden: int = 3072
    fshape: int = 16
    tshape: int = 16
    input_fdim: int = 128  # mel bins of the pretraining input
    input_tdim: int = 1024  # fbank frames of the pretraining input
    dist_token: bool = True  # DeiT-style models carry a second class token

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (frequency, time) of the pretraining input."""
        return self.input_fdim // self.fshape, self.input_tdim // self.tshape


def official_state(raw) -> tuple[dict, dict]:
    """(backbone state under the ViT's own keys, the checkpoint's other entries) out of a DataParallel state dict."""
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        raw = raw["model"]
    if not isinstance(raw, dict):
        raise SimsearchError(f"an SSAST checkpoint holds a state dict, not {type(raw).__name__}")
    backbone, rest = {}, {}
    for key, value in raw.items():
        key = key.removeprefix("module.")
        if key.startswith("v.") and not key.startswith(("v.head.", "v.head_dist.")):
            backbone[key[2:]] = value
        else:
            rest[key] = value
    return backbone, rest


def config_from_state(backbone: dict, rest: dict) -> SsastConfig:
    """An SsastConfig that fits the checkpoint's shapes and recorded pretraining input size."""
    try:
        d, _, fshape, tshape = backbone["patch_embed.proj.weight"].shape
        depth = 1 + max(int(k.split(".")[1]) for k in backbone if k.startswith("blocks."))
        hidden = backbone["blocks.0.mlp.fc1.weight"].shape[0]
        fdim, tdim = int(rest["p_input_fdim"].item()), int(rest["p_input_tdim"].item())
    except (KeyError, ValueError, IndexError, AttributeError) as e:
        raise SimsearchError(f"not an SSAST pretrained checkpoint (missing or odd {e}); keys look like "
                             f"{sorted(backbone or rest)[:5]}") from None
    return SsastConfig(embed_dim=d, depth=depth, num_heads=max(1, d // 64), mlp_hidden=hidden, fshape=fshape,
                       tshape=tshape, input_fdim=fdim, input_tdim=tdim, dist_token="dist_token" in backbone)


def build_from_state(raw):
    """(our ViT holding exactly the checkpoint's backbone weights, its config); strict on every backbone key."""
    from simsearch.encoders.vit_audio import AudioViT

    backbone, rest = official_state(raw)
    cfg = config_from_state(backbone, rest)
    f, t = cfg.grid
    model = AudioViT(cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_hidden, (cfg.fshape, cfg.tshape), f * t,
                     cfg.dist_token)
    return load_strict("SSAST", model, backbone), cfg


def load_checkpoint(path: str | None):
    """(our SSAST backbone, config) from an official checkpoint file, or a ModelNotFoundError saying how to get one."""
    raw = read_checkpoint("SSAST", path, CHECKPOINT_HELP)
    return build_from_state(raw)


def patch_positions(model, cfg: SsastConfig, t_dim: int):
    """Positional embeddings [1, F*t_dim, D] for an input of t_dim time patches: the pretraining grid's centre
    columns when shorter (the reference fine-tuning code's cut), the whole grid at full length."""
    f, t = cfg.grid
    if t_dim > t:
        raise SimsearchError(f"SSAST input of {t_dim} time patches is longer than its {t} positions")
    grid = model.pos_embed[:, model.extra_tokens:].reshape(1, f, t, -1)
    start = t // 2 - t_dim // 2
    return grid[:, :, start:start + t_dim].reshape(1, f * t_dim, -1)


def embed_pieces(model, cfg: SsastConfig, spec):
    """Mean patch-token state [b, D] of same-length fbank pieces [b, frames, mels]."""
    grid = model.patches(spec)
    states = model(grid, patch_positions(model, cfg, grid.shape[-1]))
    return states[:, model.extra_tokens:].mean(dim=1)


class SsastEncoder(FbankPieces):
    """Options: pooling (over the 10.24-s pieces of a longer clip)."""

    sample_rate = 16000

    def __init__(self, name: str = "ssast", checkpoint: str | None = None, device: str = "cpu",
                 pooling: str = "mean"):
        from simsearch.encoders.vit_audio import samples_for_frames

        model, self.cfg = self.open_checkpoint(name, pooling, device, checkpoint, load_checkpoint)
        if self.cfg.input_fdim != 128:
            raise SimsearchError(f"SSAST checkpoint was pretrained on {self.cfg.input_fdim} mel bins; "
                                 "simsearch computes 128")
        self.model = model.to(self.device)
        self.frame_dim = self.cfg.embed_dim
        self.window = samples_for_frames(self.cfg.input_tdim)
        self.min_samples = samples_for_frames(self.cfg.tshape)

    def describe(self) -> dict:
        return {**super().describe(), "num_heads": self.cfg.num_heads, "patch": [self.cfg.fshape, self.cfg.tshape],
                "window_seconds": self.window / self.sample_rate}

    def embed_spec(self, spec):
        """Clip vectors [b, D] of same-length fbank pieces [b, frames, mels]."""
        return embed_pieces(self.model, self.cfg, spec)
