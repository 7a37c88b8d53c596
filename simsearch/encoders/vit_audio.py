"""A plain ViT over Kaldi fbank patches, shared by the SSAST and Audio-MAE encoders (timm ViT key layout).

Both models read 16-kHz audio as 128-bin Kaldi fbank (25 ms Hann window, 10 ms shift), normalised with the
AudioSet mean and std as their data loaders do, cut into non-overlapping patches by one convolution, and run it
through pre-norm transformer blocks (the same blocks as PaSST's, simsearch.encoders.passt_model.Block).
"""
from __future__ import annotations

import torch
from torch import nn

from simsearch.encoders.passt_model import Block
from simsearch.encoders.pieces import PieceEncoder

SAMPLE_RATE = 16000
FBANK_MEAN, FBANK_STD = -4.2677393, 4.5689974  # AudioSet fbank statistics both models were trained with
WINDOW, SHIFT = 400, 160  # samples of one fbank frame and between frames at 16 kHz


def fbank(wave: torch.Tensor, n_mels: int = 128) -> torch.Tensor:
    """One mono clip [samples] -> normalised fbank [frames, n_mels], as the models' data loaders compute it."""
    import torchaudio

    wave = wave - wave.mean()
    feats = torchaudio.compliance.kaldi.fbank(wave[None], htk_compat=True, sample_frequency=SAMPLE_RATE,
                                              use_energy=False, window_type="hanning", num_mel_bins=n_mels,
                                              dither=0.0, frame_shift=10)
    return (feats - FBANK_MEAN) / (FBANK_STD * 2)


def samples_for_frames(frames: int) -> int:
    """Samples that give exactly this many fbank frames."""
    return WINDOW + (frames - 1) * SHIFT


class PatchEmbed(nn.Module):
    """Non-overlapping patches of the fbank by one convolution (key patch_embed.proj)."""

    def __init__(self, dim: int, patch: tuple[int, int]):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, patch, stride=patch)


class AudioViT(nn.Module):
    """Patch embedding, class token(s), transformer blocks and final norm in timm's ViT key layout; the positional
    embeddings of the patches are passed in, so each model chooses how they fit an input's patch grid."""

    def __init__(self, dim: int, depth: int, heads: int, hidden: int, patch: tuple[int, int], positions: int,
                 dist_token: bool = False, time_major: bool = False):
        super().__init__()
        self.time_major = time_major  # Audio-MAE's patch grid is [time, frequency]; SSAST's [frequency, time]
        self.patch_embed = PatchEmbed(dim, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim)) if dist_token else None
        self.extra_tokens = 2 if dist_token else 1
        self.pos_embed = nn.Parameter(torch.zeros(1, self.extra_tokens + positions, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def patches(self, spec: torch.Tensor) -> torch.Tensor:
        """Fbank [B, frames, mels] -> patch grid [B, D, F, T] ([B, D, T, F] when time-major)."""
        return self.patch_embed.proj((spec if self.time_major else spec.transpose(1, 2)).unsqueeze(1))

    def forward(self, grid: torch.Tensor, patch_pos: torch.Tensor) -> torch.Tensor:
        """Patch grid [B, D, H, W] plus positions [1, H*W, D] -> normed states [B, extra_tokens + F*T, D]."""
        b = grid.shape[0]
        x = grid.flatten(2).transpose(1, 2) + patch_pos
        tokens = [self.cls_token] + ([self.dist_token] if self.dist_token is not None else [])
        lead = torch.cat(tokens, dim=1) + self.pos_embed[:, :self.extra_tokens]
        return self.norm(self.blocks(torch.cat([lead.expand(b, -1, -1), x], dim=1)))


class FbankPieces(PieceEncoder):
    """A PieceEncoder over 16-kHz Kaldi fbank pieces whose model gives one vector per piece (`embed_spec`), no tags."""

    sample_rate = SAMPLE_RATE

    def embed_spec(self, spec: torch.Tensor) -> torch.Tensor:
        """Vectors [b, D] of same-length fbank pieces [b, frames, mels]."""
        raise NotImplementedError

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.stack([fbank(w) for w in wave])

    def run(self, spec: torch.Tensor):
        return self.embed_spec(spec), None
