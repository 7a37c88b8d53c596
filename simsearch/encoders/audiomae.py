"""Audio-MAE encoder: the encoder of a masked-autoencoder audio ViT (Huang et al. 2022) on an official pretrained
checkpoint such as pretrained.pth (--checkpoint FILE).

* the network is simsearch.encoders.vit_audio.AudioViT holding the checkpoint's encoder (`patch_embed.proj`,
  `cls_token`, `pos_embed`, `blocks.N`, `norm`; the decoder is left out); width and depth are read from the file,
  heads are width / 64 as in the published ViT-B. Input: 128-bin fbank, 1024 frames (10.24 s) cut into 16x16
  patches as a [time, frequency] grid, with the checkpoint's fixed 2-D sin-cos positions.
* clip vector: the mean of the patch token states after the encoder's final norm (`forward_encoder` with nothing
  masked), for each piece of up to 10.24 s; a longer clip is cut into pieces, pooled over them. A shorter piece
  keeps only the patches that hold audio with their own positions (the first time rows of the grid), the way
  the encoder sees the visible patches of a masked input, so no padding enters the vector.
"""
from __future__ import annotations

from dataclasses import dataclass

from simsearch.encoders.checkpoint_file import load_strict, read_checkpoint
from simsearch.encoders.vit_audio import FbankPieces
from simsearch.errors import SimsearchError

N_MELS = 128
CHECKPOINT_HELP = (
    "Audio-MAE needs an official pretrained checkpoint: pass --checkpoint FILE.pth, e.g. the ViT-B "
    "'pretrained.pth' (AudioSet-2M) linked from https://github.com/facebookresearch/AudioMAE (README)")


@dataclass(frozen=True)
class AudioMaeConfig:
    """Sizes of an Audio-MAE encoder, read from a checkpoint's shapes."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_hidden: int = 3072
    patch: int = 16
    t_grid: int = 64  # time rows of patches: 1024 frames

    @property
    def f_grid(self) -> int:
        """Frequency columns of patches over the 128 mel bins."""
        return N_MELS // self.patch


def encoder_state(raw) -> dict:
    """The encoder's weights out of a checkpoint object (under 'model' or bare; decoder and heads left out)."""
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        raw = raw["model"]
    if not isinstance(raw, dict):
        raise SimsearchError(f"an Audio-MAE checkpoint holds a state dict, not {type(raw).__name__}")
    return {k.removeprefix("module."): v for k, v in raw.items()
            if not k.removeprefix("module.").startswith(("decoder", "mask_token", "head."))}


def config_from_state(state: dict) -> AudioMaeConfig:
    """An AudioMaeConfig that fits the encoder state's shapes."""
    try:
        d, _, patch, _ = state["patch_embed.proj.weight"].shape
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
        positions = state["pos_embed"].shape[1] - 1
        state["norm.weight"]
    except (KeyError, ValueError, IndexError, AttributeError) as e:
        raise SimsearchError(f"not an Audio-MAE pretrained checkpoint (missing or odd {e}); keys look like "
                             f"{sorted(state)[:5]}") from None
    f = N_MELS // patch
    if positions % f:
        raise SimsearchError(f"Audio-MAE checkpoint has {positions} positions, which fit no grid over {N_MELS} "
                             f"mel bins in {patch}-bin patches")
    return AudioMaeConfig(embed_dim=d, depth=depth, num_heads=max(1, d // 64), mlp_hidden=hidden, patch=patch,
                          t_grid=positions // f)


def build_from_state(raw):
    """(our ViT holding exactly the checkpoint's encoder weights, its config); strict on every encoder key."""
    from simsearch.encoders.vit_audio import AudioViT

    state = encoder_state(raw)
    cfg = config_from_state(state)
    model = AudioViT(cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_hidden, (cfg.patch, cfg.patch),
                     cfg.t_grid * cfg.f_grid, time_major=True)
    return load_strict("Audio-MAE", model, state), cfg


def load_checkpoint(path: str | None):
    """(our Audio-MAE encoder, config) from an official checkpoint file, or a ModelNotFoundError saying how to
    get one."""
    raw = read_checkpoint("Audio-MAE", path, CHECKPOINT_HELP)
    return build_from_state(raw)


def encode(model, cfg: AudioMaeConfig, spec):
    """Normed token states [b, 1 + t*F, D] of same-length fbank pieces [b, frames, mels]: the patches of the
    first t = frames // patch time rows, each with its own position."""
    grid = model.patches(spec)  # [b, D, t, F]
    t = grid.shape[2]
    if t > cfg.t_grid:
        raise SimsearchError(f"Audio-MAE input of {t} time patches is longer than its {cfg.t_grid} positions")
    return model(grid, model.pos_embed[:, 1:1 + t * cfg.f_grid])


class AudioMaeEncoder(FbankPieces):
    """Options: pooling (over the 10.24-s pieces of a longer clip)."""

    def __init__(self, name: str = "audiomae", checkpoint: str | None = None, device: str = "cpu",
                 pooling: str = "mean"):
        from simsearch.encoders.vit_audio import samples_for_frames

        model, self.cfg = self.open_checkpoint(name, pooling, device, checkpoint, load_checkpoint)
        self.model = model.to(self.device)
        self.frame_dim = self.cfg.embed_dim
        self.window = samples_for_frames(self.cfg.t_grid * self.cfg.patch)
        self.min_samples = samples_for_frames(self.cfg.patch)

    def describe(self) -> dict:
        return {**super().describe(), "num_heads": self.cfg.num_heads, "window_seconds": self.window / self.sample_rate}

    def embed_spec(self, spec):
        """Mean patch-token state [b, D] of same-length fbank pieces [b, frames, mels]."""
        return encode(self.model, self.cfg, spec)[:, 1:].mean(dim=1)
