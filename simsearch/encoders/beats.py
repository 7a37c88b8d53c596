"""BEATs encoder: our own BEATs network (beats_model.py) on an official .pt checkpoint.

Frames are one vector per time patch (16 fbank frames = 160 ms): the model's 8 mel-patch outputs of that time
step averaged. Padding in a batch is masked inside the transformer and in the frame mask, so a clip's embedding
does not depend on what it was batched with. Fine-tuned checkpoints (e.g. BEATs_iter3_plus_AS2M.pt) also give
AudioSet scores as ``extras["beats_tags"]`` [B, 527].
"""
from __future__ import annotations

import contextlib

import numpy as np

from simsearch.encoders.base import Encoder, FrameOutput, torch_setup
from simsearch.errors import SimsearchError


class BeatsEncoder(Encoder):
    """Options: pooling (mean | meanstd | gem), layer (None = model output; 0 = transformer input,
    k = output of layer k, negative from the end)."""

    sample_rate = 16000

    def __init__(self, name: str = "beats", checkpoint: str | None = None, device: str = "cpu",
                 pooling: str = "mean", layer: int | None = None):

        from simsearch.encoders.beats_model import load_beats_checkpoint, min_samples, resolve_checkpoint_path

        self.name, self.pooling = name, pooling
        self.device = torch_setup(name, pooling, device)
        path = resolve_checkpoint_path(checkpoint).resolve()
        model, cfg, label_dict = load_beats_checkpoint(path)
        self.checkpoint = str(path)  # absolute, so an index reopened from elsewhere finds it
        self.cfg, self.label_dict = cfg, label_dict
        n = cfg.encoder_layers
        if layer is not None:
            layer = int(layer)
            if not -(n + 1) <= layer <= n:
                raise SimsearchError(f"BEATs layer {layer} out of range: this checkpoint has {n} layers "
                                     f"(0 = input to the first layer, {n} = last; negatives count from the end)")
            layer %= n + 1
        self.layer = layer
        self.model = model.to(self.device).eval()
        self.frame_dim = cfg.encoder_embed_dim
        self.finetuned = self.model.predictor is not None
        self.min_samples = min_samples(cfg.input_patch_size)

    @property
    def tag_labels(self) -> list[str] | None:
        """Names of the predictor's classes in index order (the checkpoint's label_dict), when it has them."""
        if not self.label_dict:
            return None
        return [str(self.label_dict.get(i, self.label_dict.get(str(i), i)))
                for i in range(self.cfg.predictor_class)]

    def describe(self) -> dict:
        return {**super().describe(), "layer": self.layer, "finetuned": self.finetuned,
                "tags": self.cfg.predictor_class if self.finetuned else 0}

    def _autocast(self):
        import torch

        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def embed_frames(self, batch: list[np.ndarray]) -> FrameOutput:
        import torch

        from simsearch.encoders.beats_model import beats_fbank

        d = self.frame_dim
        if len(batch) == 0:
            extras = {"beats_tags": np.zeros((0, self.cfg.predictor_class), np.float32)} if self.finetuned else {}
            return FrameOutput(np.zeros((0, 0, d), np.float32), np.zeros((0, 0), bool), extras)
        clips = []
        for i, x in enumerate(batch):
            x = np.asarray(x, dtype=np.float32)
            if x.ndim != 1:
                raise SimsearchError(f"BEATs expects mono 1-D waveforms; clip {i} has shape {x.shape}")
            clips.append(x)
        # a clip shorter than one patch (0.175 s) is zero-padded up to it and that patch counts as audio
        lengths = [max(len(x), self.min_samples) for x in clips]
        n = max(lengths)
        wave = np.zeros((len(clips), n), dtype=np.float32)
        for i, x in enumerate(clips):
            wave[i, : len(x)] = x

        model = self.model
        with torch.no_grad():
            w = torch.from_numpy(wave).to(self.device)
            fbank = beats_fbank(w)  # float32, outside autocast
            pad = model.patch_padding_mask(lengths, n, device=self.device)
            with self._autocast():
                out = model(fbank, padding_mask=pad if bool(pad.any()) else None, layer=self.layer)
            t, f = out.grid
            frames = out.hidden.float().reshape(len(clips), t, f, d).mean(dim=2)  # [B, T, D]
            mask = ~pad.view(len(clips), t, f)[:, :, 0]  # [B, T] True = holds audio
            extras = {}
            if out.probs is not None:
                extras["beats_tags"] = out.probs.float().cpu().numpy().astype(np.float32)
            frames = frames.masked_fill(~mask.unsqueeze(-1), 0.0)
            return FrameOutput(frames.cpu().numpy().astype(np.float32), mask.cpu().numpy(), extras)
