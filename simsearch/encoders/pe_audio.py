"""PE-Audio (Meta's Perception Encoder audio-text model, via transformers): audio and text towers projected into
one space, both L2-normalised, so it answers text queries and zero-shot labels the way CLAP does.

`checkpoint` is a hub id (default facebook/pe-av-large, the checkpoint transformers documents for PeAudioModel: its
audio and text towers are read out of the audio-video model) or a folder written by `save_pretrained` holding a
PeAudioModel and its processor (PeAudioFeatureExtractor + the text tower's tokenizer). Audio is 48 kHz mono.

Audio tower: a DAC codec encoder (25 frames/s) -> transformer with a class token; the clip vector is
`audio_head(pooler_output)`, what `PeAudioModel.get_audio_embeds` returns. The extractor reflect-pads each clip to a
whole number of codec frames; clips of one padded length run as one batch, so a clip's vector never depends on what
it was batched with. Text tower: ModernBERT; the text vector is `text_audio_head` of the first token of its last
hidden state, as `PeAudioModel.forward` computes it.

On CUDA the towers run under bfloat16 autocast; on CPU in float32.
"""
from __future__ import annotations

import numpy as np

from simsearch.encoders.base import Encoder, FrameOutput
from simsearch.encoders.hub import (
    autocast_context,
    embed_texts,
    load_config,
    load_model,
    load_text_processor,
    not_found,
    start_one_vector,
    to_device,
    to_numpy,
)

MODEL_TYPES = ("pe_audio", "pe_audio_video")  # an audio-video checkpoint holds the audio model's config and weights


class PeAudioEncoder(Encoder):
    """PE-Audio audio + text towers in one space (text_space "clap": a text tower in the audio space)."""

    sample_rate = 48000
    supports_text = True
    text_space = "clap"

    def __init__(self, name: str = "pe-audio", checkpoint: str | None = None, device: str = "cpu",
                 pooling: str = "mean", layer: int | None = None):
        source, local_only = start_one_vector(self, name, checkpoint, device, pooling, layer,
                                              "PE-Audio gives one projected clip vector")
        self.config = load_config(name, source, local_only, MODEL_TYPES)
        if self.config.model_type != "pe_audio":
            self.config = _audio_config(name, source, local_only)
        self.processor = load_text_processor(name, source, local_only, "PeAudioProcessor")
        self.feature_extractor, self.tokenizer = self.processor.feature_extractor, self.processor.tokenizer
        self.model = load_model(name, source, local_only, self.config, model_class="PeAudioModel")
        self.model = self.model.to(self.device).eval()
        self.sample_rate = int(self.feature_extractor.sampling_rate)
        self.hop = int(self.feature_extractor.hop_length)
        self.frame_dim = int(self.config.text_config.hidden_size)  # both heads project to the text width

    def _to_device(self, t):
        return to_device(t, self.device)

    def embed_frames(self, batch: list[np.ndarray]) -> FrameOutput:
        import torch

        batch = [np.asarray(x, dtype=np.float32).reshape(-1) for x in batch]
        batch = [x if len(x) >= 2 else np.pad(x, (0, 2 - len(x))) for x in batch]  # reflect padding needs 2 samples
        out = np.zeros((len(batch), self.frame_dim), np.float32)
        groups: dict[int, list[int]] = {}
        for i, x in enumerate(batch):
            groups.setdefault(-(-len(x) // self.hop), []).append(i)
        with torch.inference_mode():
            for idx in groups.values():
                feats = self.feature_extractor([batch[i] for i in idx], sampling_rate=self.sample_rate,
                                               return_tensors="pt")
                with autocast_context(self.device):
                    emb = self.model.get_audio_embeds(self._to_device(feats["input_values"]),
                                                      padding_mask=self._to_device(feats["padding_mask"]))
                out[idx] = to_numpy(torch.nn.functional.normalize(emb.float(), dim=-1))
        return FrameOutput(out[:, None, :], np.ones((len(batch), 1), dtype=bool))

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """[len(texts), dim] float32, unit norm, in the same space as the audio embeddings: the text head on
        ModernBERT's first token."""
        def tower(ids, mask):
            out = self.model.text_model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            return self.model.text_audio_head(out.hidden_states[-1][:, 0])

        return embed_texts(self, texts, tower)


def _audio_config(name: str, checkpoint: str, local_only: bool):
    """The PeAudioConfig inside an audio-video checkpoint's config (transformers picks its audio part)."""
    from transformers import PeAudioConfig

    try:
        return PeAudioConfig.from_pretrained(checkpoint, local_files_only=local_only)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise not_found(name, checkpoint, local_only, e, "config") from e
