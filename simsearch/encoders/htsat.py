"""HTS-AT encoder: our own HTS-AT network (htsat_model.py) on an official checkpoint (--checkpoint FILE).

* clip vector: the latent HTS-AT (and CLAP) use as the audio embedding, the mean of the final-norm token states
  (768-d for the AudioSet model), for each window of up to 10 s (the model's input length); a longer clip is cut
  into 10-s pieces, one frame each, pooled over the pieces. A shorter piece is repeated and stretched to the input
  length as the reference's inference mode does. Pieces are run in groups of one length and never padded, so a
  clip's vector does not depend on what it was batched with.
* extras["tag_scores"]: [B, 527] AudioSet label probabilities, the sigmoid of the token-semantic head's clip
  output (averaged over pieces); the label names are recorded in index.json (`class_names`) and text queries map
  onto them as for the other AudioSet taggers (simsearch.encoders.tag_text).
"""
from __future__ import annotations

from simsearch.encoders.pieces import PieceEncoder

WINDOW_SECONDS = 10.0
MIN_SAMPLES = 1024  # one STFT window; shorter pieces are zero-padded up to it


class HtsatEncoder(PieceEncoder):
    """Options: pooling (over the 10-s pieces of a longer clip)."""

    sample_rate = 32000

    def __init__(self, name: str = "htsat", checkpoint: str | None = None, device: str = "cpu",
                 pooling: str = "mean"):
        from simsearch.encoders.htsat_model import LogMel, load_checkpoint

        model = self.open_checkpoint(name, pooling, device, checkpoint, load_checkpoint)
        self.cfg = model.cfg
        self.model = model.to(self.device)
        self.mel = LogMel(n_mels=self.cfg.n_mels).to(self.device)
        self.frame_dim = self.cfg.num_features
        self.window = int(WINDOW_SECONDS * self.sample_rate)
        self.min_samples = MIN_SAMPLES
        self.set_labels(self.cfg.num_classes)  # other heads (ESC-50, ...): scores only

    def describe(self) -> dict:
        return {**super().describe(), "num_heads": list(self.cfg.num_heads), "window_seconds": WINDOW_SECONDS}

    def features(self, wave):
        return self.mel(wave)

    def run(self, mel):
        """(pooled latent [b, D], clip-wise logits or None)."""
        return self.model(mel)
