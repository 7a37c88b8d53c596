"""HTS-AT network (hierarchical token-semantic audio transformer) and its log-mel front end, official key layout.

Our own implementation of Chen et al. 2022 at inference: a 4-stage Swin transformer over a 32 kHz log-mel whose
1024 time frames are folded into four 256-frame rows of 64 mel bands (a 256x256 "image"), a final norm, and the
token-semantic head (tscam_conv over the unfolded frequency axis, mean over time) giving the clip logits. It loads
the official AudioSet checkpoints (HTSAT_AudioSet_Saved_*.ckpt, keys under "sed_model.") key for key; sizes,
window and heads are read from the state dict.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from simsearch.encoders.checkpoint_file import load_strict, read_checkpoint
from simsearch.encoders.passt_model import Mlp
from simsearch.errors import SimsearchError

SAMPLE_RATE = 32000
N_FFT, HOP = 1024, 320  # 32 ms window, 10 ms hop
CHECKPOINT_HELP = (
    "HTS-AT needs an official checkpoint file: pass --checkpoint FILE.ckpt, e.g. HTSAT_AudioSet_Saved_1.ckpt from "
    "the checkpoint folder linked in https://github.com/RetroCirce/HTS-Audio-Transformer (README, 'Model Checkpoints')")
# Keys of the official checkpoint that are fixed signal processing or index tables, rebuilt here, never learnt.
FIXED_KEYS = ("spectrogram_extractor.", "logmel_extractor.", "relative_position_index", "attn_mask")


@dataclass(frozen=True)
class HtsatConfig:
    """Sizes of an HTS-AT network; all but spec_size and the patch stride are read from a checkpoint's shapes."""

    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window: int = 8
    spec_size: int = 256
    patch: int = 4
    n_mels: int = 64
    mlp_ratio: float = 4.0
    num_classes: int = 527

    @property
    def num_features(self) -> int:
        """Width of the last stage (768 for the AudioSet model)."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @property
    def freq_ratio(self) -> int:
        """How many time rows are stacked along frequency (4: 1024 frames -> 4 x 256)."""
        return self.spec_size // self.n_mels

    @property
    def frames(self) -> int:
        """Mel frames one input holds (1024, a little over 10 s)."""
        return self.spec_size * self.freq_ratio


def slaney_mel_banks(n_freqs: int, fmin: float, fmax: float, n_mels: int, sample_rate: int) -> torch.Tensor:
    """librosa.filters.mel's default banks (Slaney mel scale and area normalisation) as [n_freqs, n_mels], built in
    float64: torchaudio's melscale_fbanks(norm="slaney", mel_scale="slaney") gives the same banks but computes them
    in float32, which moves quiet mel bins by up to 2e-4 dB."""
    def to_mel(hz: torch.Tensor) -> torch.Tensor:  # linear below 1 kHz, logarithmic above
        return torch.where(hz < 1000.0, hz * 3.0 / 200.0, 15.0 + torch.log(hz / 1000.0) * 27.0 / math.log(6.4))

    def to_hz(mel: torch.Tensor) -> torch.Tensor:
        return torch.where(mel < 15.0, mel * 200.0 / 3.0, 1000.0 * torch.exp((mel - 15.0) * math.log(6.4) / 27.0))

    f64 = torch.float64
    freqs = torch.linspace(0, sample_rate / 2, n_freqs, dtype=f64)
    edges = to_hz(torch.linspace(float(to_mel(torch.tensor(fmin, dtype=f64))),
                                 float(to_mel(torch.tensor(fmax, dtype=f64))), n_mels + 2, dtype=f64))
    rising = (freqs[:, None] - edges[None, :-2]) / (edges[1:-1] - edges[:-2])
    falling = (edges[None, 2:] - freqs[:, None]) / (edges[2:] - edges[1:-1])
    return torch.clamp(torch.minimum(rising, falling), min=0.0) * (2.0 / (edges[2:] - edges[:-2]))


class LogMel(nn.Module):
    """torchlibrosa's Spectrogram + LogmelFilterBank as HTS-AT sets them up: periodic Hann, centred reflect-padded
    power STFT, librosa's Slaney mel banks (50 Hz - 14 kHz), 10 log10(max(mel, 1e-10))."""

    def __init__(self, n_mels: int = 64, fmin: float = 50.0, fmax: float = 14000.0):
        super().__init__()
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True, dtype=torch.float64), persistent=False)
        banks = slaney_mel_banks(N_FFT // 2 + 1, fmin, fmax, n_mels, SAMPLE_RATE)
        self.register_buffer("banks", banks.float(), persistent=False)  # [n_fft // 2 + 1, n_mels]

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, samples] at 32 kHz -> [B, frames, n_mels] (100 frames/s)."""
        spec = torch.stft(wave, N_FFT, hop_length=HOP, window=self.window.to(wave.dtype), center=True,
                          pad_mode="reflect", return_complex=True)
        power = (spec.real.square() + spec.imag.square()).transpose(1, 2)
        return 10.0 * torch.log10(torch.clamp(power @ self.banks, min=1e-10))


def window_partition(x: torch.Tensor, w: int) -> torch.Tensor:
    """[B, H, W, C] -> [B * windows, w * w, C]."""
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, c)


def window_merge(x: torch.Tensor, w: int, h: int, wd: int) -> torch.Tensor:
    """Inverse of window_partition: [B * windows, w * w, C] -> [B, H, W, C]."""
    c = x.shape[-1]
    x = x.view(-1, h // w, wd // w, w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, wd, c)


class WindowAttention(nn.Module):
    """Multi-head attention inside w x w windows with a learnt relative position bias (Swin layout)."""

    def __init__(self, dim: int, window: int, heads: int):
        super().__init__()
        self.heads, self.window = heads, window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("index", rel[..., 0] * (2 * window - 1) + rel[..., 1], persistent=False)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.index.reshape(-1)].view(n, n, -1).permute(2, 0, 1)
        if mask is not None:  # [windows, n, n], repeated over the batch
            bias = (bias[None, None] + mask[None, :, None]).expand(b // mask.shape[0], -1, -1, -1, -1)
            bias = bias.reshape(b, self.heads, n, n)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class SwinBlock(nn.Module):
    """Pre-norm Swin block: (shifted) window attention, then the MLP; a window as large as the grid never shifts."""

    def __init__(self, dim: int, resolution: tuple[int, int], heads: int, window: int, shift: int, mlp_ratio: float):
        super().__init__()
        self.resolution = resolution
        if min(resolution) <= window:
            window, shift = min(resolution), 0
        self.window, self.shift = window, shift
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.register_buffer("mask", self.shift_mask() if shift else None, persistent=False)

    def shift_mask(self) -> torch.Tensor:
        """-100 between tokens that the cyclic shift brought from different image regions, else 0."""
        h, wd = self.resolution
        region = torch.zeros(1, h, wd, 1)
        cuts = (slice(0, -self.window), slice(-self.window, -self.shift), slice(-self.shift, None))
        for i, (rows, cols) in enumerate((r, c) for r in cuts for c in cuts):
            region[:, rows, cols] = i
        ids = window_partition(region, self.window)[..., 0]
        diff = ids[:, None, :] - ids[:, :, None]
        return torch.where(diff != 0, -100.0, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, wd = self.resolution
        b, n, c = x.shape
        y = self.norm1(x).view(b, h, wd, c)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), dims=(1, 2))
        y = window_merge(self.attn(window_partition(y, self.window), self.mask), self.window, h, wd)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), dims=(1, 2))
        x = x + y.reshape(b, n, c)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 neighbouring tokens concatenated, normed and projected to twice the width."""

    def __init__(self, dim: int, resolution: tuple[int, int]):
        super().__init__()
        self.resolution = resolution
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, wd = self.resolution
        b, _, c = x.shape
        x = x.view(b, h, wd, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.reshape(b, -1, 4 * c)))


class Stage(nn.Module):
    """Swin blocks alternating plain and shifted windows, then patch merging (all but the last stage)."""

    def __init__(self, dim: int, resolution: tuple[int, int], depth: int, heads: int, window: int, mlp_ratio: float,
                 merge: bool):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, resolution, heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio) for i in range(depth))
        self.downsample = PatchMerging(dim, resolution) if merge else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class PatchEmbed(nn.Module):
    """Non-overlapping patches of the folded spectrogram by one convolution, then LayerNorm."""

    def __init__(self, cfg: HtsatConfig):
        super().__init__()
        self.proj = nn.Conv2d(1, cfg.embed_dim, cfg.patch, stride=cfg.patch)
        self.norm = nn.LayerNorm(cfg.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class HTSAT(nn.Module):
    """HTS-AT from the log-mel on: bn0, fold to the square image, Swin stages, norm, token-semantic head."""

    def __init__(self, cfg: HtsatConfig):
        super().__init__()
        self.cfg = cfg
        self.bn0 = nn.BatchNorm2d(cfg.n_mels)
        self.patch_embed = PatchEmbed(cfg)
        grid = cfg.spec_size // cfg.patch
        self.layers = nn.ModuleList(
            Stage(cfg.embed_dim * 2 ** i, (grid // 2 ** i, grid // 2 ** i), d, cfg.num_heads[i], cfg.window,
                  cfg.mlp_ratio, i < len(cfg.depths) - 1) for i, d in enumerate(cfg.depths))
        self.norm = nn.LayerNorm(cfg.num_features)
        if cfg.num_classes:
            rows = grid // 2 ** (len(cfg.depths) - 1) // cfg.freq_ratio
            self.tscam_conv = nn.Conv2d(cfg.num_features, cfg.num_classes, (rows, 3), padding=(0, 1))
            self.head = nn.Linear(cfg.num_classes, cfg.num_classes)  # in the checkpoints; the tscam path skips it

    def to_image(self, mel: torch.Tensor) -> torch.Tensor:
        """[B, frames, n_mels] -> [B, 1, spec, spec]: repeated whole times up to the input length, stretched
        (bicubic) to exactly it, and its four time quarters stacked along frequency (the reference's infer mode)."""
        cfg = self.cfg
        frames = mel.shape[1]
        if frames > cfg.frames:
            raise SimsearchError(f"HTS-AT takes at most {cfg.frames} mel frames at once, not {frames}")
        x = mel.repeat(1, cfg.frames // frames, 1)[:, None]
        if x.shape[2] < cfg.frames:
            x = F.interpolate(x, (cfg.frames, cfg.n_mels), mode="bicubic", align_corners=True)
        x = x.transpose(2, 3).reshape(x.shape[0], 1, cfg.n_mels, cfg.freq_ratio, cfg.spec_size)
        return x.permute(0, 1, 3, 2, 4).reshape(x.shape[0], 1, cfg.spec_size, cfg.spec_size)

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-mel [B, frames, n_mels] -> (pooled latent [B, num_features], clip logits [B, classes] or None)."""
        cfg = self.cfg
        x = self.bn0(mel.transpose(1, 2)[..., None])[..., 0].transpose(1, 2)
        x = self.patch_embed(self.to_image(x))
        for stage in self.layers:
            x = stage(x)
        x = self.norm(x)
        b, n, c = x.shape
        side = math.isqrt(n)
        x = x.transpose(1, 2).reshape(b, c, side, side)
        rows = side // cfg.freq_ratio  # unfold the time quarters back along time: [B, C, rows, 4 * side]
        x = x.reshape(b, c, cfg.freq_ratio, rows, side).permute(0, 1, 3, 2, 4).reshape(b, c, rows, -1)
        latent = x.flatten(2).mean(dim=2)
        if not cfg.num_classes:
            return latent, None
        return latent, self.tscam_conv(x).flatten(2).mean(dim=2)


def config_from_state(state: dict, spec_size: int = 256) -> HtsatConfig:
    """The network size an official state dict implies (patch stride = patch size, as in every published model)."""
    try:
        d, _, patch, _ = state["patch_embed.proj.weight"].shape
        n_mels = state["bn0.weight"].shape[0]
        depths, heads, windows = [], [], []
        while f"layers.{len(depths)}.blocks.0.norm1.weight" in state:
            i = len(depths)
            depths.append(sum(1 for k in state if k.startswith(f"layers.{i}.blocks.") and k.endswith(".norm1.weight")))
            rows, h = state[f"layers.{i}.blocks.0.attn.relative_position_bias_table"].shape
            heads.append(h)
            windows.append((math.isqrt(rows) + 1) // 2)
        hidden = state["layers.0.blocks.0.mlp.fc1.weight"].shape[0]
    except KeyError as e:
        raise SimsearchError(f"not an HTS-AT state dict: no {e.args[0]!r} (keys start {list(state)[:4]})") from None
    if not depths:
        raise SimsearchError("not an HTS-AT state dict: no Swin stages (layers.0.blocks.*)")
    classes = state["tscam_conv.weight"].shape[0] if "tscam_conv.weight" in state else 0
    return HtsatConfig(embed_dim=d, depths=tuple(depths), num_heads=tuple(heads), window=windows[0],
                       spec_size=spec_size, patch=patch, n_mels=n_mels, mlp_ratio=hidden / d, num_classes=classes)


def official_state(raw) -> dict:
    """The HTS-AT module's learnt weights out of a checkpoint object (a Lightning .ckpt with 'state_dict' keys under
    'sed_model.', or a bare state dict); the fixed STFT, mel and index tables are dropped, they are rebuilt here."""
    if isinstance(raw, dict):
        for key in ("state_dict", "model"):
            if isinstance(raw.get(key), dict):
                raw = raw[key]
    if not isinstance(raw, dict):
        raise SimsearchError(f"an HTS-AT checkpoint holds a state dict, not {type(raw).__name__}")
    state = {}
    for key, value in raw.items():
        for prefix in ("module.", "sed_model."):
            key = key.removeprefix(prefix)
        if not any(part in key for part in FIXED_KEYS):
            state[key] = value
    return state


def build_from_state(state: dict) -> HTSAT:
    """An HTS-AT network holding exactly these weights (strict: every key must match)."""
    model = HTSAT(config_from_state(state))
    return load_strict("HTS-AT", model, state)


def load_checkpoint(path: str | None) -> HTSAT:
    """Our HTS-AT network on an official checkpoint file, or a ModelNotFoundError saying how to get one."""
    raw = read_checkpoint("HTS-AT", path, CHECKPOINT_HELP)
    return build_from_state(official_state(raw))
