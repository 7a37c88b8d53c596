"""Transformers audio encoders (wav2vec2 family, HuBERT, WavLM, data2vec-audio, AST, Whisper) behind one adapter.

The registry name picks the architecture; `checkpoint` is a hub id or a local folder written by
`save_pretrained` (config.json + model weights + preprocessor config). Frames are the hidden states
of one layer (`layer=None`: the model's last hidden state; `layer=N`: `hidden_states[N]` from
`output_hidden_states`, 0 = the input embeddings after the positional convolution / embedding,
N = the output of transformer block N; negative N counts from the end), and the mask marks frames
that hold audio, so the base class's pooling never averages padding in.

How each family is batched and masked
-------------------------------------
* wav2vec2 / HuBERT / WavLM / data2vec-audio: the feature extractor is always asked for the
  attention mask, because its per-clip zero-mean/unit-variance normalisation only ignores padding when
  it has one. Frame counts come from the model's `_get_feat_extract_output_lengths(n_samples)`, so
  the mean covers exactly the frames computed from real samples.
  Checkpoints whose conv front end uses group norm (`feat_extract_norm == "group"`, e.g.
  wav2vec2-base, hubert-base) normalise every conv channel over the whole time axis, padding
  included, and were trained without an attention mask (their extractor says
  `return_attention_mask=False`). For them no mask can make a padded batch equal to the clip alone,
  so by default (`group_by_length=None` -> on for these) each batch is split into sub-batches of
  clips with the same sample count: each clip is then computed exactly as it would be alone, and
  fixed-length indexing windows still run as one batch. With `group_by_length=False` clips are
  zero-padded and, as the model authors recommend for these checkpoints, no attention mask is passed
  to the model (fast, but a short clip's frames then depend slightly on its batch); the frame mask
  still comes from the raw sample counts, so padded frames never enter the mean.
  wav2vec2 / HuBERT / WavLM checkpoints with a layer-norm front end and `return_attention_mask=True`
  (the large ones) get one padded batch with the attention mask passed; the model zeroes padded frames
  before its single positional convolution and masks them in attention, so results match the clip
  alone to float precision. data2vec-audio (a stack of positional convolutions) and
  wav2vec2-conformer (a depthwise conv in every block) let padded frames leak into the last real
  frames even with the mask, so they are grouped by length by default too.
* Whisper: with `context="30s"` (the model's reference input) the extractor pads (or cuts) every clip to
  30 s, so batching cannot change a clip's features. With `context="clip"` each clip is padded only to
  whole seconds and the encoder runs on that shorter input (as CTranslate2 and whisper-tiny-offline do:
  the leading positional embeddings), clips grouped by padded length: up to 30x less work on short clips,
  and the same vectors as whisper-tiny-offline. Encoder frames are 20 ms (320 samples); the mask keeps the
  first ceil(n_samples / 320) frames (at most 1500): audio beyond 30 s is not seen, so index with windows of
  <= 30 s.
* AST: the extractor pads/cuts every clip to its fixed `max_length` fbank frames (1024 = 10.24 s for
  the AudioSet checkpoints) and the model has no padding mask, as trained. With `layer=None` the one
  frame is `pooler_output` (mean of the CLS and distillation tokens after the final layer norm);
  with `layer=N` the frames are the patch tokens of `hidden_states[N]` (CLS/distillation dropped).

On `device="cuda"` inputs move with `non_blocking=True` and the model runs under
`torch.autocast("cuda", dtype=torch.bfloat16)` (weights stay float32); on CPU everything is float32.

Loading (shared with clap.py): never a silent fallback
------------------------------------------------------
* local folder: must hold config.json, a weights file (model.safetensors / pytorch_model.bin or their
  sharded index) and the preprocessor config; loaded with `local_files_only=True`;
* hub id: if HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set or one quick TCP probe of the hub fails, only
  the local hub cache is tried (so a machine without network fails in seconds instead of after
  huggingface_hub's retries); otherwise from_pretrained downloads as usual;
* config.model_type must be one this encoder name accepts (a BERT folder given to wav2vec2 is named
  as such), and the model is loaded with `output_loading_info=True`: if the weights file lacks any
  parameter (other than the training-only `masked_spec_embed`) we refuse instead of running random
  weights. Every failure is a `ModelNotFoundError` that says what was looked for and how to supply it.
* attention: `attn_implementation="sdpa"`, retried with "eager" for architectures that refuse it
  (WavLM, CLAP in transformers 5.x).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from simsearch.encoders.base import Encoder, FrameOutput
from simsearch.encoders.hub import (
    autocast_context,
    check_layer,
    default_checkpoint,
    load_config,
    load_feature_extractor,
    load_model,
    resolve_checkpoint,
    to_device,
    to_numpy,
)
from simsearch.encoders.whisper_ct2 import WHISPER_CONTEXTS, whisper_context_samples
from simsearch.encoders.whisper_export import whisper_encoder_states
from simsearch.errors import SimsearchError

# Layer-norm front ends of these types give a padded, masked clip exactly the frames it has alone.
MASK_EXACT_TYPES = ("wav2vec2", "hubert", "wavlm")

MIN_SAMPLES = 400  # 25 ms at 16 kHz: the first conv kernel / one fbank window



@dataclass(frozen=True)
class Arch:
    model_types: tuple[str, ...]  # config.model_type values this registry name accepts
    kind: str  # "ssl" (wav2vec2-like), "whisper" or "ast"



ARCHS: dict[str, Arch] = {
    "wav2vec2": Arch(("wav2vec2", "wav2vec2-conformer"), "ssl"),
    "hubert": Arch(("hubert",), "ssl"),
    "wavlm": Arch(("wavlm",), "ssl"),
    "data2vec-audio": Arch(("data2vec-audio",), "ssl"),
    "ast": Arch(("audio-spectrogram-transformer",), "ast"),
    "whisper": Arch(("whisper",), "whisper"),
}



class HFAudioEncoder(Encoder):
    """Masked frames of one hidden layer of a transformers audio encoder; see the module docstring."""

    def __init__(self, name: str = "wav2vec2", checkpoint: str | None = None, device: str = "cpu",
                 pooling: str = "mean", layer: int | None = None, group_by_length: bool | None = None,
                 context: str = "30s"):
        import torch

        if name not in ARCHS:
            raise SimsearchError(f"HFAudioEncoder does not handle {name!r}; known: {', '.join(ARCHS)}")
        self.name, self.pooling, self.arch = name, pooling, ARCHS[name]
        if context not in WHISPER_CONTEXTS:
            raise SimsearchError(f"context must be one of {', '.join(WHISPER_CONTEXTS)}, not {context!r}")
        self.context = context
        self.checkpoint = checkpoint or default_checkpoint(name)
        self.device = torch.device(device)
        source, local_only = resolve_checkpoint(name, self.checkpoint)
        self.config = cfg = load_config(name, source, local_only, self.arch.model_types)
        self.frame_dim = int(cfg.d_model if self.arch.kind == "whisper" else cfg.hidden_size)
        self.num_layers = int(cfg.encoder_layers if self.arch.kind == "whisper" else cfg.num_hidden_layers)
        self.layer = self._check_layer(layer)  # before the (slow) weights load
        self.feature_extractor = load_feature_extractor(name, source, local_only)
        model = load_model(name, source, local_only, cfg)
        if self.arch.kind == "whisper":
            model = model.get_encoder()  # the decoder is dropped with the WhisperModel wrapper
        self.model = model.to(self.device).eval()
        self.sample_rate = int(getattr(self.feature_extractor, "sampling_rate", 16000))
        self.uses_attention_mask = bool(getattr(self.feature_extractor, "return_attention_mask", False))
        self.group_by_length = self._padding_leaks() if group_by_length is None else bool(group_by_length)

    def _padding_leaks(self) -> bool:
        """Whether padding a clip in a batch changes its real frames even with the attention mask passed."""
        if self.arch.kind != "ssl":
            return False  # Whisper and AST pad every clip to a fixed length themselves
        if getattr(self.config, "feat_extract_norm", "layer") == "group" or not self.uses_attention_mask:
            return True  # group norm over time (wav2vec2-base, hubert-base, wavlm-base): trained without a mask
        # data2vec-audio's positional embedding is a stack of convolutions and wav2vec2-conformer has a conv
        # module in every block: padded frames turn non-zero after the first conv and leak into the tail.
        return self.config.model_type not in MASK_EXACT_TYPES

    def _check_layer(self, layer) -> int | None:
        return check_layer(self.name, self.checkpoint, layer, self.num_layers)

    def describe(self) -> dict:
        extra = {"context": self.context} if self.arch.kind == "whisper" else {}
        return {**super().describe(), "layer": self.layer, **extra}

    # -- running the model

    def _hidden(self, out):
        return out.last_hidden_state if self.layer is None else out.hidden_states[self.layer]

    def _to_device(self, t):
        return to_device(t, self.device)

    def embed_frames(self, batch: list[np.ndarray]) -> FrameOutput:
        import torch

        batch = [np.asarray(x, dtype=np.float32).reshape(-1) for x in batch]
        if not batch:
            return FrameOutput(np.zeros((0, 1, self.frame_dim), np.float32), np.zeros((0, 1), bool))
        if self.arch.kind != "whisper":  # conv / fbank front ends need one 25-ms window at least
            batch = [x if len(x) >= MIN_SAMPLES else np.pad(x, (0, MIN_SAMPLES - len(x))) for x in batch]
        with torch.inference_mode(), warnings.catch_warnings():
            # WavLM's own attention passes masks of two dtypes to torch; harmless, but it warns on every call.
            warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask")
            if self.arch.kind == "whisper":
                return self._whisper(batch)
            if self.arch.kind == "ast":
                return self._ast(batch)
            return self._ssl(batch)

    def _ssl(self, batch: list[np.ndarray]) -> FrameOutput:
        import torch

        if self.group_by_length:
            groups: dict[int, list[int]] = {}
            for i, x in enumerate(batch):
                groups.setdefault(len(x), []).append(i)
            parts = list(groups.values())
        else:
            parts = [list(range(len(batch)))]
        results: dict[int, np.ndarray] = {}
        for idx in parts:
            clips = [batch[i] for i in idx]
            feats = self.feature_extractor(clips, sampling_rate=self.sample_rate, padding=True,
                                           return_attention_mask=True, return_tensors="pt")
            values = self._to_device(feats["input_values"])
            mask = self._to_device(feats["attention_mask"]) if self.uses_attention_mask else None
            with autocast_context(self.device):
                out = self.model(values, attention_mask=mask, output_hidden_states=self.layer is not None)
            hidden = to_numpy(self._hidden(out))
            n_frames = self.model._get_feat_extract_output_lengths(torch.tensor([len(c) for c in clips]))
            for j, i in enumerate(idx):
                results[i] = hidden[j, : int(n_frames[j])]
        return _stack([results[i] for i in range(len(batch))], self.frame_dim)

    def _whisper(self, batch: list[np.ndarray]) -> FrameOutput:
        fe = self.feature_extractor
        samples_per_frame = fe.hop_length * 2  # mel hop, then the stride-2 conv: 320 samples = 20 ms
        if self.context == "30s":
            feats = fe(batch, sampling_rate=self.sample_rate, return_tensors="pt",
                       device="cuda" if self.device.type == "cuda" else "cpu")
            with autocast_context(self.device):
                out = self.model(self._to_device(feats["input_features"]), output_hidden_states=self.layer is not None)
            seqs = list(to_numpy(self._hidden(out)))
        else:
            seqs = self._whisper_clip(batch)
        n = [max(1, min(math.ceil(len(x) / samples_per_frame), len(f))) for x, f in zip(batch, seqs)]
        return _stack([f[:k] for f, k in zip(seqs, n)], self.frame_dim)

    def _whisper_clip(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        """Each clip padded to whole seconds, clips of one padded length in one forward pass."""
        groups: dict[int, list[int]] = {}
        for i, x in enumerate(batch):
            groups.setdefault(whisper_context_samples(len(x)), []).append(i)
        out: list[np.ndarray | None] = [None] * len(batch)
        for size, idx in groups.items():
            feats = self.feature_extractor([batch[i][:size] for i in idx], sampling_rate=self.sample_rate,
                                           padding="max_length", max_length=size, truncation=True, return_tensors="pt")
            with autocast_context(self.device):
                states = whisper_encoder_states(self.model, self._to_device(feats["input_features"]), self.layer)
            for j, i in enumerate(idx):
                out[i] = to_numpy(states[j])
        return out

    def _ast(self, batch: list[np.ndarray]) -> FrameOutput:
        feats = self.feature_extractor(batch, sampling_rate=self.sample_rate, return_tensors="pt")
        with autocast_context(self.device):
            out = self.model(self._to_device(feats["input_values"]), output_hidden_states=self.layer is not None)
        if self.layer is None:
            frames = to_numpy(out.pooler_output)[:, None, :]
        else:
            frames = to_numpy(out.hidden_states[self.layer][:, 2:, :])  # patch tokens, CLS/distill dropped
        return FrameOutput(np.ascontiguousarray(frames), np.ones(frames.shape[:2], dtype=bool))



def _stack(seqs: list[np.ndarray], dim: int) -> FrameOutput:
    t = max(max(len(s) for s in seqs), 1)
    frames = np.zeros((len(seqs), t, dim), dtype=np.float32)
    mask = np.zeros((len(seqs), t), dtype=bool)
    for i, s in enumerate(seqs):
        frames[i, : len(s)], mask[i, : len(s)] = s, True
    return FrameOutput(frames, mask)

