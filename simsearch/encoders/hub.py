"""Loading transformers checkpoints from a hub id or a local folder, with clear errors when the weights are absent."""
from __future__ import annotations

import contextlib
import os
import socket
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from simsearch.errors import ModelNotFoundError, SimsearchError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")

PREPROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
# Parameters a checkpoint may legitimately lack (only used in training), never worth an error.
HARMLESS_MISSING = ("masked_spec_embed",)
# model_type -> transformers class holding the bare encoder (Whisper: the encoder-decoder, we keep .encoder)
MODEL_CLASSES = {
    "wav2vec2": "Wav2Vec2Model",
    "wav2vec2-conformer": "Wav2Vec2ConformerModel",
    "hubert": "HubertModel",
    "wavlm": "WavLMModel",
    "data2vec-audio": "Data2VecAudioModel",
    "audio-spectrogram-transformer": "ASTModel",
    "whisper": "WhisperModel",
    "clap": "ClapModel",
}


def download_hint(checkpoint: str) -> str:
    return (f"no network access to the hub: download it elsewhere with `huggingface-cli download {checkpoint} "
            f"--local-dir DIR` and pass `--checkpoint DIR`")


def looks_like_path(checkpoint: str) -> bool:
    """A hub id is `name` or `org/name`; anything that exists or is spelled like a path is a local folder."""
    if os.path.exists(os.path.expanduser(checkpoint)):
        return True
    if checkpoint.startswith(("/", "./", "../", "~", ".\\", "..\\")) or "\\" in checkpoint:
        return True
    return checkpoint.count("/") > 1 or (len(checkpoint) > 1 and checkpoint[1] == ":")


def _env_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "on", "yes", "true")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@lru_cache(maxsize=4)
def hub_reachable(endpoint: str | None = None, timeout: float = 3.0) -> bool:
    """One quick TCP connection to the hub, so a machine without network fails in seconds, not after retries."""
    url = urlparse(endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_checkpoint(name: str, checkpoint: str) -> tuple[str, bool]:
    """(what to pass to from_pretrained, local_files_only); raises ModelNotFoundError for unusable folders."""
    if looks_like_path(checkpoint):
        path = Path(os.path.expanduser(checkpoint))
        if not path.exists():
            raise ModelNotFoundError(f"{name}: checkpoint folder {path} does not exist; pass a folder written by "
                                     f"`save_pretrained` (config.json + model weights) or a hub id")
        if not path.is_dir():
            raise ModelNotFoundError(f"{name}: checkpoint {path} is a file; {name} expects a folder written by "
                                     f"`save_pretrained` (config.json + model weights + preprocessor config)")
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{name}: no config.json in {path}; it is not a transformers checkpoint folder")
        if not any((path / f).is_file() for f in WEIGHT_FILES):
            raise ModelNotFoundError(
                f"{name}: {path} has a config.json but no model weights (looked for {', '.join(WEIGHT_FILES)}); "
                f"refusing to run with randomly initialised weights. Download the full checkpoint, e.g. "
                f"`huggingface-cli download ID --local-dir {path}`")
        return str(path), True
    if _env_offline() or not hub_reachable():
        return checkpoint, True  # use the local hub cache if it holds the model; else fail fast below
    return checkpoint, False


def start_one_vector(enc, name: str, checkpoint: str | None, device: str, pooling: str, layer: int | None,
                     why: str) -> tuple[str, bool]:
    """The start of a hub encoder that gives one clip vector: no layer option (`why` says so), name, pooling,
    checkpoint (the model's default when none is given) and device set; returns (source, local_only) as
    resolve_checkpoint does."""
    import torch

    if layer is not None:
        raise SimsearchError(f"{name}: the layer option is not supported ({why})")
    enc.name, enc.pooling = name, pooling
    enc.checkpoint = checkpoint or default_checkpoint(name)
    enc.device = torch.device(device)
    return resolve_checkpoint(name, enc.checkpoint)


def not_found(name: str, checkpoint: str, local_only: bool, err: Exception, what: str) -> ModelNotFoundError:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if looks_like_path(checkpoint):
        return ModelNotFoundError(f"{name}: could not load the {what} from {checkpoint}: {reason}; pass "
                                  f"`--checkpoint DIR` with a complete folder (`huggingface-cli download ID "
                                  f"--local-dir DIR`, or `save_pretrained` of model + feature extractor)")
    if local_only:
        return ModelNotFoundError(f"{name}: checkpoint {checkpoint!r} is neither a local folder nor in the local hub "
                                  f"cache, and the hub cannot be reached; {download_hint(checkpoint)}")
    return ModelNotFoundError(f"{name}: could not load the {what} for {checkpoint!r} from the hub ({reason}); "
                              f"{download_hint(checkpoint)}")


def load_config(name: str, checkpoint: str, local_only: bool, expected: tuple[str, ...]):
    """AutoConfig, checked against the architectures this encoder name accepts."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(checkpoint, local_files_only=local_only)
    except (OSError, ValueError, KeyError) as e:
        raise not_found(name, checkpoint, local_only, e, "config") from e
    found = getattr(config, "model_type", None)
    if found not in expected:
        archs = ", ".join(getattr(config, "architectures", None) or []) or "unknown class"
        raise ModelNotFoundError(
            f"{name}: checkpoint {checkpoint} holds a {found!r} model ({archs}), but the {name!r} encoder expects "
            f"model_type {' or '.join(repr(t) for t in expected)}; pick the encoder that matches the checkpoint")
    return config


def load_model(name: str, checkpoint: str, local_only: bool, config, attn: str = "sdpa", model_class: str | None = None):
    """The bare model class for config.model_type (or the named transformers class: "AutoModelForAudioClassification"),
    float32, eval mode; sdpa attention where the arch has it.

    Errors (missing/unreadable weights, weights of another architecture) become ModelNotFoundError: any
    parameter the weights file lacks would otherwise be silently initialised at random.
    """
    import torch
    import transformers

    cls = getattr(transformers, model_class or MODEL_CLASSES[config.model_type])
    kwargs = dict(config=config, local_files_only=local_only, dtype=torch.float32, output_loading_info=True)
    try:
        with quiet_loading():
            try:
                model, info = cls.from_pretrained(checkpoint, attn_implementation=attn, **kwargs)
            except ValueError as e:
                if attn == "eager" or ("scaled_dot_product_attention" not in str(e) and "sdpa" not in str(e)):
                    raise
                model, info = cls.from_pretrained(checkpoint, attn_implementation="eager", **kwargs)
    except _weight_errors() as e:
        raise not_found(name, checkpoint, local_only, e, "model weights") from e
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.endswith(HARMLESS_MISSING))
    if missing:
        n = sum(1 for _ in model.state_dict())
        raise ModelNotFoundError(
            f"{name}: the weights in {checkpoint} do not fit the {config.model_type} model: {len(missing)} of {n} "
            f"parameters are missing (e.g. {', '.join(missing[:3])}); refusing to run them randomly initialised")
    return model.eval()


def _weight_errors() -> tuple[type[BaseException], ...]:
    """What from_pretrained raises for absent, truncated or corrupt weight files."""
    import pickle

    errors: list[type[BaseException]] = [OSError, ValueError, EOFError, pickle.UnpicklingError]
    try:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    except ImportError:
        pass
    return tuple(errors)


@contextlib.contextmanager
def quiet_loading():
    """No per-tensor "Loading weights" progress bar from transformers while we load (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_feature_extractor(name: str, checkpoint: str, local_only: bool):
    from transformers import AutoFeatureExtractor

    if looks_like_path(checkpoint) and not any((Path(checkpoint) / f).is_file() for f in PREPROCESSOR_FILES):
        raise ModelNotFoundError(f"{name}: no preprocessor_config.json in {checkpoint}; save the feature extractor "
                                 f"with the model (`feature_extractor.save_pretrained(DIR)`) or download the full repo")
    try:
        return AutoFeatureExtractor.from_pretrained(checkpoint, local_files_only=local_only)
    except (OSError, ValueError, KeyError) as e:
        raise not_found(name, checkpoint, local_only, e, "feature extractor") from e


def default_checkpoint(name: str) -> str:
    from simsearch.encoders import SPECS

    spec = SPECS.get(name)
    if spec is None or not spec.default_checkpoint:
        raise SimsearchError(f"encoder {name!r} needs --checkpoint")
    return spec.default_checkpoint


def autocast_context(device):
    """bfloat16 autocast on CUDA, nothing elsewhere."""
    import contextlib

    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_numpy(t) -> np.ndarray:
    return t.detach().float().cpu().numpy().astype(np.float32, copy=False)


def to_device(t, device):
    """A tensor on the encoder's device (pinned first for an asynchronous copy to a GPU)."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def load_text_processor(name: str, checkpoint: str, local_only: bool, processor_class: str):
    """An audio-text model's processor (tokenizer + feature extractor) of class `processor_class`; a local folder
    that lacks either part says which, and how to save it with the model."""
    import transformers

    if looks_like_path(checkpoint):
        tokenizer_files = ("tokenizer.json", "vocab.json", "tokenizer_config.json")
        missing = [] if any((Path(checkpoint) / f).is_file() for f in tokenizer_files) else ["a tokenizer"]
        if not any((Path(checkpoint) / f).is_file() for f in PREPROCESSOR_FILES):
            missing.append("preprocessor_config.json")
        if missing:
            raise ModelNotFoundError(f"{name}: {checkpoint} lacks {', '.join(missing)}; save the {processor_class} "
                                     f"with the model (`processor.save_pretrained(DIR)`) or download the full repo")
    try:
        return getattr(transformers, processor_class).from_pretrained(checkpoint, local_files_only=local_only)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise not_found(name, checkpoint, local_only, e, "processor") from e


def check_layer(name: str, checkpoint: str, layer, num_layers: int) -> int | None:
    """A hidden-layer choice as an index 0..num_layers (0 = embeddings; negative counts from the end), or a clear
    error naming the range; None keeps the last layer."""
    if layer is None:
        return None
    try:
        n = int(layer)
        if isinstance(layer, float) and n != layer:
            raise ValueError
    except (TypeError, ValueError):
        raise SimsearchError(f"{name}: layer must be an integer, got {layer!r}") from None
    if not -(num_layers + 1) <= n <= num_layers:
        raise SimsearchError(
            f"{name}: layer {n} out of range for {checkpoint}: it has {num_layers} transformer "
            f"layers, so use 0..{num_layers} (0 = embeddings, {num_layers} = last) or -1..-{num_layers + 1}")
    return n % (num_layers + 1)


def embed_texts(encoder, texts, tower) -> np.ndarray:
    """[len(texts), frame_dim] float32 unit vectors from an audio-text model's text side: tokenised with
    encoder.tokenizer, `tower(input_ids, attention_mask)` -> [N, D] tensor, run without gradients (bf16 on CUDA)."""
    import torch

    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        return np.zeros((0, encoder.frame_dim), np.float32)
    tok = encoder.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        with autocast_context(encoder.device):
            emb = tower(to_device(tok["input_ids"], encoder.device), to_device(tok["attention_mask"], encoder.device))
        return to_numpy(torch.nn.functional.normalize(emb.float(), dim=-1))
