"""PaSST encoder: our own PaSST network (passt_model.py) on an official .pt checkpoint (--checkpoint FILE).

* clip vector: the mean of the CLS and distillation token states after the final norm (768-d for PaSST-S), the
  features PaSST's HEAR wrapper reports, for each window of up to 10 s (the model's input length); a longer clip
  is cut into 10-s pieces, one frame each, pooled over the pieces. Pieces are run in groups of one length and never
  padded, so a clip's vector does not depend on what it was batched with.
* extras["tag_scores"]: [B, 527] AudioSet label probabilities, the sigmoid of the checkpoint's head on that vector
  (averaged over pieces), when the checkpoint has the AudioSet head; the label names are recorded in index.json
  (`class_names`) and text queries map onto them as for the other AudioSet taggers (simsearch.encoders.tag_text).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from simsearch.encoders.base import Encoder, FrameOutput, torch_setup
from simsearch.errors import SimsearchError

PIECES_PER_CALL = 8  # 10-s pieces per forward pass: ~1200 tokens each, so memory stays bounded on long batches


class PasstEncoder(Encoder):
    """Options: pooling (over the 10-s pieces of a longer clip)."""

    sample_rate = 32000

    def __init__(self, name: str = "passt", checkpoint: str | None = None, device: str = "cpu",
                 pooling: str = "mean"):

        from simsearch.encoders.audioset_labels import AUDIOSET_527
        from simsearch.encoders.passt_model import MelFrontEnd, load_checkpoint, min_samples

        self.name, self.pooling = name, pooling
        self.device = torch_setup(name, pooling, device)
        model = load_checkpoint(checkpoint)
        self.checkpoint = str(Path(checkpoint).expanduser().resolve())
        self.cfg = model.cfg
        self.model = model.to(self.device)
        self.mel = MelFrontEnd(n_mels=self.cfg.n_mels).to(self.device)
        self.frame_dim = self.cfg.embed_dim
        self.window = int(self.cfg.window_seconds * self.sample_rate)
        self.min_samples = min_samples(self.cfg)
        n = self.cfg.num_classes
        self._class_names = list(AUDIOSET_527) if n == len(AUDIOSET_527) else [f"LABEL_{i}" for i in range(n)]
        self.text_space = "tags" if n == len(AUDIOSET_527) else None  # other heads (FSD50K, OpenMIC): scores only

    def class_names(self) -> list[str]:
        """The head's label names, aligned with extras['tag_scores'] columns."""
        return list(self._class_names)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Queries as weights over the AudioSet labels [B, 527] (simsearch.encoders.tag_text)."""
        if self.text_space is None:
            return super().embed_text(texts)
        from simsearch.encoders.tag_text import tag_query_weights

        return np.stack([tag_query_weights(t, self._class_names) for t in texts]).astype(np.float32)

    def describe(self) -> dict:
        out = {**super().describe(), "num_heads": self.cfg.num_heads, "window_seconds": self.cfg.window_seconds,
               "tags": len(self._class_names)}
        if self._class_names:
            out["class_names"] = self.class_names()
        return out

    def pieces(self, x: np.ndarray) -> list[np.ndarray]:
        """The clip cut into model-length pieces; a piece shorter than one patch is zero-padded up to it."""
        out = [x[i:i + self.window] for i in range(0, max(len(x), 1), self.window)]
        return [p if len(p) >= self.min_samples else np.pad(p, (0, self.min_samples - len(p))) for p in out]

    def forward(self, wave) -> tuple[np.ndarray, np.ndarray | None]:
        """(pooled token states [b, D], AudioSet probabilities [b, C] or None) for same-length pieces [b, samples]."""
        import torch

        from simsearch.encoders.passt_model import pooled

        with torch.inference_mode():
            mel = self.mel(wave.to(self.device).float())
            ctx = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else contextlib.nullcontext()
            with ctx:
                states, logits = self.model(mel)
            vec = pooled(states).float().cpu().numpy()
            probs = torch.sigmoid(logits.float()).cpu().numpy() if logits is not None else None
        return vec, probs

    def embed_frames(self, batch: list[np.ndarray]) -> FrameOutput:
        import torch

        d, c = self.frame_dim, self.cfg.num_classes
        clips = []
        for i, x in enumerate(batch):
            x = np.asarray(x, dtype=np.float32)
            if x.ndim != 1:
                raise SimsearchError(f"PaSST expects mono 1-D waveforms; clip {i} has shape {x.shape}")
            clips.append(self.pieces(x))
        t = max((len(p) for p in clips), default=0)
        frames = np.zeros((len(clips), t, d), np.float32)
        mask = np.zeros((len(clips), t), bool)
        probs = np.zeros((len(clips), t, c), np.float32)
        groups: dict[int, list[tuple[int, int]]] = {}
        for i, parts in enumerate(clips):
            for j, p in enumerate(parts):
                groups.setdefault(len(p), []).append((i, j))
        for group in groups.values():
            for start in range(0, len(group), PIECES_PER_CALL):
                where = group[start:start + PIECES_PER_CALL]
                vec, prob = self.forward(torch.from_numpy(np.stack([clips[i][j] for i, j in where])))
                for k, (i, j) in enumerate(where):
                    frames[i, j], mask[i, j] = vec[k], True
                    if prob is not None:
                        probs[i, j] = prob[k]
        extras = {}
        if c:
            counts = np.maximum(mask.sum(axis=1, keepdims=True), 1)
            extras["tag_scores"] = (probs.sum(axis=1) / counts).astype(np.float32)
        return FrameOutput(frames, mask, extras)
