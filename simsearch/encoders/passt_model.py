"""PaSST network (patchout audio spectrogram transformer) and its mel front end, in the official key layout.

Our own implementation of Koutini et al. 2022 at inference (no patchout): a ViT over 16x16 log-mel patches with
separate frequency and time positional embeddings, CLS and distillation tokens. It loads the official
checkpoints (e.g. passt-s-f128-p16-s10-ap.476-swa.pt) key for key; the size is read from the state dict.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from simsearch.encoders.checkpoint_file import load_strict, read_checkpoint
from simsearch.errors import SimsearchError

SAMPLE_RATE = 32000
HOP = 320  # 10 ms at 32 kHz
CHECKPOINT_HELP = (
    "PaSST needs an official checkpoint file: pass --checkpoint FILE.pt, e.g. passt-s-f128-p16-s10-ap.476-swa.pt "
    "from https://github.com/kkoutini/PaSST/releases (the file hear21passt downloads)")


@dataclass(frozen=True)
class PasstConfig:
    """Sizes of a PaSST network; all but num_heads and the strides are read from a checkpoint's shapes."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_hidden: int = 3072
    patch: int = 16
    fstride: int = 10
    tstride: int = 10
    n_mels: int = 128
    f_grid: int = 12  # frequency positions (rows of patches)
    t_grid: int = 99  # time positions: the longest input, 99 patches = 10 s
    num_classes: int = 527  # 0: no classifier heads

    @property
    def window_seconds(self) -> float:
        """Longest input the time positions cover, rounded to whole seconds (10 for 99 positions)."""
        return float(round(self.t_grid * self.tstride * HOP / SAMPLE_RATE))


class MelFrontEnd(nn.Module):
    """PaSST's AugmentMelSTFT at inference: preemphasis, |STFT|^2, Kaldi-style mel banks, log, (x + 4.5) / 5."""

    def __init__(self, n_mels: int = 128, n_fft: int = 1024, win_length: int = 800, hop: int = HOP,
                 fmin: float = 0.0, fmax: float = 15000.0):
        super().__init__()
        import torchaudio

        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(win_length, periodic=False), persistent=False)
        banks, _ = torchaudio.compliance.kaldi.get_mel_banks(n_mels, n_fft, SAMPLE_RATE, fmin, fmax, 100.0, -500.0, 1.0)
        self.register_buffer("banks", F.pad(banks, (0, 1)), persistent=False)  # [n_mels, n_fft // 2 + 1]

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, samples] at 32 kHz -> [B, n_mels, frames] (100 frames/s)."""
        x = wave[:, 1:] - 0.97 * wave[:, :-1]
        spec = torch.stft(x, self.n_fft, hop_length=self.hop, win_length=self.window.numel(), window=self.window,
                          center=True, pad_mode="reflect", normalized=False, return_complex=True)
        power = spec.real.square() + spec.imag.square()
        mel = torch.matmul(self.banks, power)
        return (torch.log(mel + 1e-5) + 4.5) / 5.0


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection (timm ViT layout)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """Two linear layers with exact GELU between them."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn, self.mlp = Attention(dim, heads), Mlp(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Overlapping 16x16 patches of the mel by one convolution (key patch_embed.proj)."""

    def __init__(self, cfg: PasstConfig):
        super().__init__()
        self.proj = nn.Conv2d(1, cfg.embed_dim, cfg.patch, stride=(cfg.fstride, cfg.tstride))


class PaSST(nn.Module):
    """The transformer: mel [B, n_mels, frames] -> (normed token states [B, 2 + F*T, D], AudioSet logits or None)."""

    def __init__(self, cfg: PasstConfig):
        super().__init__()
        d = cfg.embed_dim
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, d))
        self.new_pos_embed = nn.Parameter(torch.zeros(1, 2, d))
        self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, d, cfg.f_grid, 1))
        self.time_new_pos_embed = nn.Parameter(torch.zeros(1, d, 1, cfg.t_grid))
        self.blocks = nn.Sequential(*[Block(d, cfg.num_heads, cfg.mlp_hidden) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(d, eps=1e-6)
        if cfg.num_classes:
            self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, cfg.num_classes))
            self.head_dist = nn.Linear(d, cfg.num_classes)  # in the checkpoints; the reference forward leaves it out
        else:
            self.head = self.head_dist = None

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.patch_embed.proj(mel.unsqueeze(1))  # [B, D, F, T]
        t = x.shape[-1]
        if t > self.cfg.t_grid:
            raise SimsearchError(f"PaSST input of {t} time patches is longer than its {self.cfg.t_grid} positions")
        x = x + self.time_new_pos_embed[..., :t] + self.freq_new_pos_embed
        x = x.flatten(2).transpose(1, 2)
        b = x.shape[0]
        cls = (self.cls_token + self.new_pos_embed[:, :1]).expand(b, -1, -1)
        dist = (self.dist_token + self.new_pos_embed[:, 1:]).expand(b, -1, -1)
        x = self.norm(self.blocks(torch.cat([cls, dist, x], dim=1)))
        logits = self.head(pooled(x)) if self.head is not None else None
        return x, logits


def pooled(states: torch.Tensor) -> torch.Tensor:
    """The clip vector PaSST's HEAR wrapper reports: the mean of the CLS and distillation token states."""
    return (states[:, 0] + states[:, 1]) / 2


def min_samples(cfg: PasstConfig) -> int:
    """Samples for one patch of mel frames (shorter clips are zero-padded to this)."""
    return (cfg.patch - 1) * HOP + 2


def config_from_state(state: dict, num_heads: int | None = None) -> PasstConfig:
    """A PasstConfig that fits a state dict's shapes (heads: embed_dim / 64 as in every published PaSST)."""
    try:
        d, _, patch, _ = state["patch_embed.proj.weight"].shape
        f_grid = state["freq_new_pos_embed"].shape[2]
        t_grid = state["time_new_pos_embed"].shape[3]
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
    except (KeyError, ValueError, IndexError, AttributeError) as e:
        raise SimsearchError(f"not a PaSST state dict (missing or odd {e}); keys look like "
                             f"{sorted(state)[:5]}") from None
    n_mels = 128
    stride = next((s for s in range(patch, 0, -1) if (n_mels - patch) // s + 1 == f_grid and n_mels // s == f_grid),
                  None)
    if stride is None:
        raise SimsearchError(f"PaSST checkpoint has {f_grid} frequency positions, which fits no patch stride "
                             f"over {n_mels} mel bands")
    classes = state["head.1.weight"].shape[0] if "head.1.weight" in state else 0
    return PasstConfig(embed_dim=d, depth=depth, num_heads=num_heads or max(1, d // 64), mlp_hidden=hidden,
                       patch=patch, fstride=stride, tstride=stride, n_mels=n_mels, f_grid=f_grid, t_grid=t_grid,
                       num_classes=classes)


def official_state(raw) -> dict:
    """The PaSST module's state dict out of a checkpoint object (bare, under 'model'/'state_dict', or a wrapper's
    'net.' keys)."""
    if isinstance(raw, dict):
        for key in ("state_dict", "model"):
            if isinstance(raw.get(key), dict):
                raw = raw[key]
    if not isinstance(raw, dict):
        raise SimsearchError(f"a PaSST checkpoint holds a state dict, not {type(raw).__name__}")
    state = {}
    for key, value in raw.items():
        for prefix in ("module.", "net."):
            key = key.removeprefix(prefix)
        if not key.startswith("mel.") and key != "device_proxy":
            state[key] = value
    return state


def build_from_state(state: dict, num_heads: int | None = None) -> PaSST:
    """A PaSST network holding exactly these weights (strict: every key must match)."""
    model = PaSST(config_from_state(state, num_heads))
    if "head.1.weight" in state and "head_dist.weight" not in state:
        model.head_dist = None
    return load_strict("PaSST", model, state)


def load_checkpoint(path: str | None, num_heads: int | None = None) -> PaSST:
    """Our PaSST network on an official checkpoint file, or a ModelNotFoundError saying how to get one."""
    raw = read_checkpoint("PaSST", path, CHECKPOINT_HELP)
    return build_from_state(official_state(raw), num_heads)
