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

from simsearch.encoders.pieces import PieceEncoder


class PasstEncoder(PieceEncoder):
    """Options: pooling (over the 10-s pieces of a longer clip)."""

    sample_rate = 32000

    def __init__(self, name: str = "passt", checkpoint: str | None = None, device: str = "cpu",
                 pooling: str = "mean"):
        from simsearch.encoders.passt_model import MelFrontEnd, load_checkpoint, min_samples

        model = self.open_checkpoint(name, pooling, device, checkpoint, load_checkpoint)
        self.cfg = model.cfg
        self.model = model.to(self.device)
        self.mel = MelFrontEnd(n_mels=self.cfg.n_mels).to(self.device)
        self.frame_dim = self.cfg.embed_dim
        self.window = int(self.cfg.window_seconds * self.sample_rate)
        self.min_samples = min_samples(self.cfg)
        self.set_labels(self.cfg.num_classes)  # other heads (FSD50K, OpenMIC): scores only

    def describe(self) -> dict:
        return {**super().describe(), "num_heads": self.cfg.num_heads, "window_seconds": self.cfg.window_seconds}

    def features(self, wave):
        return self.mel(wave)

    def run(self, mel):
        """(mean of the CLS and distillation states [b, D], AudioSet logits or None)."""
        from simsearch.encoders.passt_model import pooled

        states, logits = self.model(mel)
        return pooled(states), logits
