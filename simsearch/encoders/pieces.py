"""Encoders whose model reads a fixed length (10 s for PaSST, HTS-AT, SSAST, Audio-MAE): each clip is cut into
pieces of up to `window` samples, every piece becomes one frame, and the pieces are pooled. Pieces run in groups of
one length and are never padded beyond one patch, so a clip's vector does not depend on what it was batched with.
A model with an AudioSet head also gives label probabilities, averaged over the pieces, as tags."""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from simsearch.encoders.base import Encoder, FrameOutput, torch_setup
from simsearch.errors import SimsearchError

PIECES_PER_CALL = 8  # pieces per forward pass, so memory stays bounded on long batches


class PieceEncoder(Encoder):
    """Subclasses set window, min_samples, frame_dim, device and define features() and run(); set_labels() for a
    tagging head."""

    window: int  # longest piece, in samples
    min_samples: int  # a shorter piece is zero-padded up to this (one patch or one STFT window)
    _class_names: list[str] = []

    def open_checkpoint(self, name: str, pooling: str, device: str, checkpoint: str | None, load):
        """The start every checkpoint-file encoder here shares: name, pooling and device set, `load(checkpoint)`
        run (its result returned) and the checkpoint's resolved path recorded."""
        self.name, self.pooling = name, pooling
        self.device = torch_setup(name, pooling, device)
        loaded = load(checkpoint)
        self.checkpoint = str(Path(checkpoint).expanduser().resolve())
        return loaded

    def features(self, wave):
        """The front end (log-mel, fbank) of same-length pieces [b, samples] on self.device, in fp32."""
        raise NotImplementedError

    def run(self, feats):
        """(vectors [b, D], label logits [b, C] or None) from the front end's output."""
        raise NotImplementedError

    def forward(self, wave) -> tuple[np.ndarray, np.ndarray | None]:
        """(vectors [b, D], label probabilities [b, C] or None) of same-length pieces [b, samples]: the front end in
        fp32, the network under bf16 autocast on CUDA."""
        import torch

        with torch.inference_mode():
            feats = self.features(wave.to(self.device).float())
            cuda = self.device.type == "cuda"
            with torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext():
                vec, logits = self.run(feats)
            probs = torch.sigmoid(logits.float()).cpu().numpy() if logits is not None else None
            return vec.float().cpu().numpy(), probs

    def pieces(self, x: np.ndarray) -> list[np.ndarray]:
        """The clip cut into model-length pieces; one shorter than min_samples is zero-padded up to it."""
        out = [x[i:i + self.window] for i in range(0, max(len(x), 1), self.window)]
        return [p if len(p) >= self.min_samples else np.pad(p, (0, self.min_samples - len(p))) for p in out]

    def embed_frames(self, batch: list[np.ndarray]) -> FrameOutput:
        import torch

        clips = []
        for i, x in enumerate(batch):
            x = np.asarray(x, dtype=np.float32)
            if x.ndim != 1:
                raise SimsearchError(f"{self.name} expects mono 1-D waveforms; clip {i} has shape {x.shape}")
            clips.append(self.pieces(x))
        t, c = max((len(p) for p in clips), default=0), len(self._class_names)
        frames = np.zeros((len(clips), t, self.frame_dim), np.float32)
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
                    if prob is not None and c:
                        probs[i, j] = prob[k]
        extras = {}
        if c:
            extras["tag_scores"] = (probs.sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1)).astype(np.float32)
        return FrameOutput(frames, mask, extras)

    # -- a tagging head's labels

    def set_labels(self, n: int) -> None:
        """An n-label head: AudioSet's 527 names (text search through them), else numbered labels (scores only)."""
        from simsearch.encoders.audioset_labels import AUDIOSET_527

        self._class_names = list(AUDIOSET_527) if n == len(AUDIOSET_527) else [f"LABEL_{i}" for i in range(n)]
        self.text_space = "tags" if n == len(AUDIOSET_527) else None

    def class_names(self) -> list[str]:
        """The head's label names, aligned with extras['tag_scores'] columns."""
        return list(self._class_names)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Queries as weights over the AudioSet labels [B, 527] (simsearch.encoders.tag_text)."""
        if getattr(self, "text_space", None) != "tags":
            return super().embed_text(texts)
        from simsearch.encoders.tag_text import tag_query_weights

        return np.stack([tag_query_weights(t, self._class_names) for t in texts]).astype(np.float32)

    def describe(self) -> dict:
        out = {**super().describe(), "tags": len(self._class_names)}
        if self._class_names:
            out["class_names"] = self.class_names()
        return out
