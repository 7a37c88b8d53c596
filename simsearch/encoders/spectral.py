"""Handcrafted baseline: log-mel and MFCC statistics over time, no learned weights."""
from __future__ import annotations

import numpy as np

from simsearch.encoders.base import Encoder, FrameOutput

N_MELS = 64
N_MFCC = 20


class SpectralEncoder(Encoder):
    """Frames = [log-mel (64), MFCC 1..20]; default pooling mean+std gives the classic 168-d baseline."""

    sample_rate = 16000
    frame_dim = N_MELS + N_MFCC

    def __init__(self, name: str = "spectral", checkpoint: str | None = None, device: str = "cpu",
                 pooling: str = "meanstd"):
        import torch
        import torchaudio.transforms as T

        self.name, self.checkpoint, self.pooling = name, None, pooling
        self.device = torch.device(device)
        self.mel = T.MelSpectrogram(sample_rate=16000, n_fft=512, win_length=400, hop_length=160,
                                    f_min=50.0, f_max=8000.0, n_mels=N_MELS).to(self.device)
        # MFCC 0 is overall loudness; drop it so the baseline is about timbre, not level.
        self.dct = T.MFCC(sample_rate=16000, n_mfcc=N_MFCC + 1, melkwargs={"n_mels": N_MELS}).dct_mat.to(self.device)

    def _frames(self, x: np.ndarray):
        import torch

        with torch.no_grad():
            mel = self.mel(torch.from_numpy(x).to(self.device))
            logmel = torch.log(mel + 1e-6)  # [n_mels, T]
            db = 10.0 * torch.log10(mel + 1e-10)
            mfcc = (db.T @ self.dct)[:, 1:]  # [T, N_MFCC]
            # Normalise log-mel per clip so cosine compares spectral shape; level is kept in MFCC statistics.
            logmel = logmel - logmel.mean()
            return torch.cat([logmel.T, mfcc / 10.0], dim=1).cpu().numpy()

    def embed_frames(self, batch: list[np.ndarray]) -> FrameOutput:
        feats = [self._frames(x) for x in batch]
        t = max(len(f) for f in feats)
        frames = np.zeros((len(feats), t, self.frame_dim), dtype=np.float32)
        mask = np.zeros((len(feats), t), dtype=bool)
        for i, f in enumerate(feats):
            frames[i, : len(f)], mask[i, : len(f)] = f, True
        return FrameOutput(frames, mask)
