"""Any transformers audio classifier as a tagger: its pooled hidden state as the clip vector, its head's label scores
as the clip's tags, so text search and zero-shot labels work in that checkpoint's own label space.

`checkpoint` is a hub id or a `save_pretrained` folder of an `AutoModelForAudioClassification` model with its
feature extractor: AST fine-tuned on AudioSet (`MIT/ast-finetuned-audioset-10-10-0.4593`, 527 tags), SUPERB keyword
spotting (`superb/wav2vec2-base-superb-ks`, 12 words), scene or instrument classifiers, ...

* clip vector: the base model's `pooler_output` where it has one (AST: mean of the CLS and distillation tokens after
  the final layer norm, what its classifier reads), else the mean of `last_hidden_state` over the frames (the
  wav2vec2 / HuBERT / WavLM / Whisper families, whose classifiers mean-pool too). The base model's (Whisper: the
  encoder's) output is taken with a forward hook, so one forward pass gives both the vector and the label scores.
* extras["tag_scores"]: [B, num_labels] label probabilities: sigmoid per label for multi-label checkpoints, softmax
  over labels for single-label ones. `config.problem_type` decides; without one, a head of AudioSet's size (521 or
  527 labels) is multi-label and any other single-label, as those checkpoints were trained.
* the label names (`config.id2label`, in output order) are recorded in index.json (`class_names`), and text
  queries map onto them with the sentence encoder as YAMNet's AudioSet tags do (simsearch.encoders.tag_text).

Clips of different lengths are run in groups of one length, so padding never changes a clip's vector or scores
(AST pads or cuts every clip to its fixed input length itself, 10.24 s for the AudioSet checkpoints, so its batch
stays whole; index with windows no longer than that).
"""
from __future__ import annotations

import numpy as np

from simsearch.encoders.base import Encoder, FrameOutput
from simsearch.encoders.hub import autocast_context, load_config, load_feature_extractor, load_model, start_one_vector, to_numpy
from simsearch.errors import ModelNotFoundError, SimsearchError

ACTIVATIONS = ("sigmoid", "softmax")
AUDIOSET_SIZES = (521, 527)  # label counts of AudioSet heads: multi-label by construction
FIXED_LENGTH_TYPES = ("audio-spectrogram-transformer",)  # extractors that pad/cut every clip to one input size
MIN_SAMPLES = 400  # 25 ms at 16 kHz: the first conv kernel / one fbank window


def classifier_types() -> tuple[str, ...]:
    """config.model_type values transformers has an audio-classification head for."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES

    return tuple(sorted(MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES))


def label_names(config) -> list[str]:
    """The head's label names in output order (config.id2label), "LABEL_i" where a checkpoint left one out."""
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    return [id2label.get(i, f"LABEL_{i}") for i in range(int(config.num_labels))]


def default_activation(config) -> str:
    """sigmoid for multi-label heads, softmax for single-label ones (config.problem_type, else the head's size)."""
    kind = getattr(config, "problem_type", None)
    if kind == "multi_label_classification":
        return "sigmoid"
    if kind == "single_label_classification":
        return "softmax"
    return "sigmoid" if int(config.num_labels) in AUDIOSET_SIZES else "softmax"


class HFTaggerEncoder(Encoder):
    """A transformers audio classifier: pooled hidden state per clip + its label scores as tags."""

    supports_text = True
    text_space = "tags"

    def __init__(self, name: str = "hf-tagger", checkpoint: str | None = None, device: str = "cpu",
                 pooling: str = "mean", activation: str | None = None, layer: int | None = None):
        source, local_only = start_one_vector(self, name, checkpoint, device, pooling, layer,
                                              "the clip vector is what the head reads")
        self.config = cfg = load_config(name, source, local_only, classifier_types())
        if not getattr(cfg, "architectures", None) or not any("Classification" in a for a in cfg.architectures):
            raise ModelNotFoundError(
                f"{name}: {self.checkpoint} holds a {cfg.model_type!r} model without an audio-classification head "
                f"(architectures: {', '.join(cfg.architectures or []) or 'none'}); pass a fine-tuned classifier "
                f"checkpoint such as MIT/ast-finetuned-audioset-10-10-0.4593, or use --encoder "
                f"{'ast' if cfg.model_type == 'audio-spectrogram-transformer' else 'wav2vec2'} for its hidden states")
        self.activation = activation or default_activation(cfg)
        if self.activation not in ACTIVATIONS:
            raise SimsearchError(f"{name}: activation must be one of {', '.join(ACTIVATIONS)}, not {activation!r}")
        self._class_names = label_names(cfg)
        self.feature_extractor = load_feature_extractor(name, source, local_only)
        model = load_model(name, source, local_only, cfg, model_class="AutoModelForAudioClassification")
        self.model = model.to(self.device).eval()
        self.frame_dim = int(getattr(cfg, "d_model", None) or cfg.hidden_size)
        self.sample_rate = int(getattr(self.feature_extractor, "sampling_rate", 16000))
        self.fixed_length = cfg.model_type in FIXED_LENGTH_TYPES
        self._base_out = None
        base = self.model.base_model
        if base is self.model:  # Whisper's classifier holds its encoder directly
            base = self.model.get_encoder()
        base.register_forward_hook(self._keep_base_output)

    def _keep_base_output(self, module, inputs, output):
        self._base_out = output

    def class_names(self) -> list[str]:
        """The head's label names, aligned with extras['tag_scores'] columns."""
        return list(self._class_names)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Queries as weights over the checkpoint's labels [B, num_labels] (simsearch.encoders.tag_text)."""
        from simsearch.encoders.tag_text import tag_query_weights

        return np.stack([tag_query_weights(t, self._class_names) for t in texts]).astype(np.float32)

    def describe(self) -> dict:
        return {**super().describe(), "tags": len(self._class_names), "activation": self.activation,
                "class_names": self.class_names()}

    def embed_frames(self, batch: list[np.ndarray]) -> FrameOutput:
        import torch

        batch = [np.asarray(x, dtype=np.float32).reshape(-1) for x in batch]
        batch = [x if len(x) >= MIN_SAMPLES else np.pad(x, (0, MIN_SAMPLES - len(x))) for x in batch]
        n = len(self._class_names)
        if not batch:
            return FrameOutput(np.zeros((0, 1, self.frame_dim), np.float32), np.zeros((0, 1), bool),
                               {"tag_scores": np.zeros((0, n), np.float32)})
        groups: dict[int, list[int]] = {}
        for i, x in enumerate(batch):
            groups.setdefault(0 if self.fixed_length else len(x), []).append(i)
        vecs = np.zeros((len(batch), self.frame_dim), np.float32)
        tags = np.zeros((len(batch), n), np.float32)
        with torch.inference_mode():
            for idx in groups.values():
                vecs[idx], tags[idx] = self._run([batch[i] for i in idx])
        return FrameOutput(vecs[:, None, :], np.ones((len(batch), 1), bool), {"tag_scores": tags})

    def _run(self, clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(clip vectors [b, D], label probabilities [b, L]) for clips the model sees unpadded (or fixed-size)."""
        import torch

        feats = self.feature_extractor(clips, sampling_rate=self.sample_rate, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in feats.items() if k in ("input_values", "input_features")}
        with autocast_context(self.device):
            logits = self.model(**inputs).logits.float()
        base, self._base_out = self._base_out, None
        pooled = getattr(base, "pooler_output", None)
        if pooled is None:
            pooled = base.last_hidden_state.float().mean(dim=1)
        probs = torch.sigmoid(logits) if self.activation == "sigmoid" else torch.softmax(logits, dim=-1)
        return to_numpy(pooled), to_numpy(probs)
