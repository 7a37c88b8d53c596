"""MERT (m-a-p/MERT-v1-95M, -330M): a HuBERT-style music encoder at 24 kHz, 75 frames/s, from its official checkpoint.

The official checkpoints ship their model as remote code (`MERTModel`, model_type "mert_model"); simsearch never
runs that code. It reads the same folder (config.json, the weights file, preprocessor_config.json) into its own
module built from transformers' HuBERT blocks, since MERT is HuBERT with a few extra options:

* conv front end, feature projection (layer norm + linear), convolutional positional embedding (weight norm, or
  batch norm with `conv_pos_batch_norm`), post-norm (`do_stable_layer_norm` false) or pre-norm transformer layers:
  HuBERT's own modules, under MERT's state-dict names (the weight-norm parts saved as `weight_g` / `weight_v` by
  older transformers are renamed on load);
* `deepnorm`: post-norm layers whose residual branch is scaled by (2 * layers) ** 0.25 (implemented here);
* `attention_relax`: subtracting the row maximum from the attention logits before the softmax, a numerical
  safeguard that leaves the softmax unchanged, so the standard attention is used (MERT's code applies it only
  with deepnorm; pre-norm checkpoints that set it ignore it there too);
* `feature_extractor_cqt` (CQT features concatenated to the conv features; false in the v1 checkpoints): not
  implemented, refused by name.

Input: each clip at the preprocessor's rate (24 kHz), scaled to zero mean and unit variance when `do_normalize`
says so, as MERT's Wav2Vec2FeatureExtractor does. The conv front end group-normalises over time, so clips run in
groups of equal length (each clip computed exactly as alone). Frames are the last hidden state, or with `layer=N`
hidden state N (0: the embeddings after the positional convolution, N: the output of transformer block N, as
MERT's reference returns them in `hidden_states`); the clip vector is their masked mean.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from simsearch.encoders.base import Encoder, FrameOutput
from simsearch.encoders.hub import (
    WEIGHT_FILES,
    autocast_context,
    check_layer,
    default_checkpoint,
    looks_like_path,
    not_found,
    resolve_checkpoint,
    to_numpy,
)
from simsearch.errors import ModelNotFoundError, SimsearchError

MODEL_TYPE = "mert_model"
MIN_SAMPLES = 400  # the conv front end's receptive field: one frame
# Options MERT's config may set that this implementation does not compute: name -> the value it handles.
UNSUPPORTED = {"feature_extractor_cqt": False, "add_adapter": False, "use_weighted_layer_sum": False}
# Parameters only used in pre-training (masking, the prediction heads), never needed to embed.
TRAINING_ONLY = ("masked_spec_embed", "label_embs_concat", "final_proj.")


def hubert_config(mert: dict):
    """A transformers HubertConfig holding MERT's architecture fields (eval: no dropout matters)."""
    from transformers import HubertConfig

    keep = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
            "layer_norm_eps", "feat_extract_norm", "feat_extract_activation", "conv_dim", "conv_stride",
            "conv_kernel", "conv_bias", "num_conv_pos_embeddings", "num_conv_pos_embedding_groups",
            "do_stable_layer_norm", "feat_proj_layer_norm", "conv_pos_batch_norm")
    fields = {k: mert[k] for k in keep if k in mert}
    cfg = HubertConfig(**fields, mask_time_prob=0.0, mask_feature_prob=0.0)
    cfg.conv_pos_batch_norm = bool(mert.get("conv_pos_batch_norm", False))
    cfg._attn_implementation = "sdpa"
    return cfg


def build_model(mert: dict):
    """MERT's network (no weights yet) for a config.json dict; refuses options it does not compute."""
    from torch import nn
    from transformers.models.hubert.modeling_hubert import (
        HubertEncoderLayer,
        HubertEncoderLayerStableLayerNorm,
        HubertFeatureEncoder,
        HubertFeatureProjection,
        HubertPositionalConvEmbedding,
    )

    for key, handled in UNSUPPORTED.items():
        if bool(mert.get(key, handled)) != handled:
            raise SimsearchError(f"mert: the checkpoint's config sets {key}={mert[key]!r}, which this MERT "
                                 f"implementation does not compute (it handles {key}={handled})")
    cfg = hubert_config(mert)
    deepnorm = bool(mert.get("deepnorm", False))
    if deepnorm and cfg.do_stable_layer_norm:
        raise SimsearchError("mert: the config sets both deepnorm and do_stable_layer_norm; MERT allows deepnorm "
                             "only with post-norm layers")

    class DeepNormLayer(HubertEncoderLayer):
        """Post-norm layer whose residual is scaled up: x * alpha + f(x), alpha = (2 * layers) ** 0.25."""

        alpha = math.pow(2.0 * cfg.num_hidden_layers, 0.25)

        def forward(self, hidden_states, attention_mask=None, **kwargs):
            attended, _ = self.attention(hidden_states, attention_mask=attention_mask)
            hidden_states = self.layer_norm(hidden_states * self.alpha + self.dropout(attended))
            hidden_states = hidden_states * self.alpha + self.feed_forward(hidden_states)
            return self.final_layer_norm(hidden_states)

    class Encoder(nn.Module):
        """Positional convolution, layer norm (before the layers when post-norm, after them when pre-norm), layers."""

        def __init__(self):
            super().__init__()
            self.pos_conv_embed = HubertPositionalConvEmbedding(cfg)
            self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
            layer = (HubertEncoderLayerStableLayerNorm if cfg.do_stable_layer_norm
                     else DeepNormLayer if deepnorm else HubertEncoderLayer)
            self.layers = nn.ModuleList([layer(cfg) for _ in range(cfg.num_hidden_layers)])

        def forward(self, x, keep: int | None):
            """Hidden state `keep` (None: the last) as MERT's reference numbers them."""
            x = x + self.pos_conv_embed(x)
            if not cfg.do_stable_layer_norm:
                x = self.layer_norm(x)
            for i, layer in enumerate(self.layers):
                if keep == i:
                    return x
                x = layer(x)
            return self.layer_norm(x) if cfg.do_stable_layer_norm else x

    class MertNet(nn.Module):
        """Waveform [B, samples] -> frames [B, T, hidden] of one hidden state."""

        def __init__(self):
            super().__init__()
            self.config = cfg
            self.feature_extractor = HubertFeatureEncoder(cfg)
            self.feature_projection = HubertFeatureProjection(cfg)
            self.encoder = Encoder()

        def forward(self, values, layer: int | None = None):
            feats = self.feature_extractor(values).transpose(1, 2)
            return self.encoder(self.feature_projection(feats), layer)

    return MertNet()


def rename_state_dict(state: dict) -> dict:
    """MERT's saved key names -> this module's: no `mert_model.` prefix, weight norm as torch parametrizations."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("mert_model.")
        key = key.replace("pos_conv_embed.conv.weight_g", "pos_conv_embed.conv.parametrizations.weight.original0")
        key = key.replace("pos_conv_embed.conv.weight_v", "pos_conv_embed.conv.parametrizations.weight.original1")
        out[key] = value
    return out


def load_weights(model, state: dict, where: str) -> None:
    """Copy MERT weights into the module; any parameter they lack is an error, never a random weight."""
    state = rename_state_dict(state)
    result = model.load_state_dict({k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY)}, strict=False)
    if result.missing_keys:
        n = len(model.state_dict())
        raise ModelNotFoundError(
            f"mert: the weights in {where} do not fit MERT's layout: {len(result.missing_keys)} of {n} parameters "
            f"are missing (e.g. {', '.join(result.missing_keys[:3])}); refusing to run them randomly initialised")


def read_state_dict(path: Path) -> dict:
    """A safetensors / PyTorch weights file, or a sharded one through its index.json."""
    import torch

    if path.name.endswith(".index.json"):
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        state: dict = {}
        for shard in shards:
            state.update(read_state_dict(path.parent / shard))
        return state
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


class MertEncoder(Encoder):
    """Masked mean of one hidden layer of MERT, loaded from its official checkpoint layout; see the module docstring."""

    def __init__(self, name: str = "mert", checkpoint: str | None = None, device: str = "cpu", pooling: str = "mean",
                 layer: int | None = None):
        import torch

        self.name, self.pooling = name, pooling
        self.checkpoint = checkpoint or default_checkpoint(name)
        self.device = torch.device(device)
        files = self._files()
        config = json.loads(files["config.json"].read_text())
        if config.get("model_type") != MODEL_TYPE:
            archs = ", ".join(config.get("architectures") or []) or "unknown class"
            raise ModelNotFoundError(f"mert: checkpoint {self.checkpoint} holds a {config.get('model_type')!r} model "
                                     f"({archs}), not MERT (model_type {MODEL_TYPE!r})")
        prep = json.loads(files["preprocessor_config.json"].read_text())
        self.sample_rate = int(prep.get("sampling_rate", config.get("sample_rate", 24000)))
        self.do_normalize = bool(prep.get("do_normalize", True))
        self.num_layers = int(config["num_hidden_layers"])
        self.layer = self._check_layer(layer)
        self.frame_dim = int(config["hidden_size"])
        model = build_model(config)
        try:
            state = read_state_dict(files["weights"])
        except Exception as e:  # truncated or corrupt file: name it, never run random weights
            raise ModelNotFoundError(f"mert: could not read the weights {files['weights']}: {e}; download the "
                                     f"complete checkpoint again") from e
        load_weights(model, state, str(files["weights"]))
        self.model = model.to(self.device).eval()

    def _files(self) -> dict[str, Path]:
        """config.json, preprocessor_config.json and the weights file, from a folder or the hub (cache)."""
        hint = f"`huggingface-cli download {default_checkpoint(self.name)} --local-dir DIR`"
        if looks_like_path(self.checkpoint) and not Path(self.checkpoint).expanduser().exists():
            raise ModelNotFoundError(f"mert: checkpoint folder {self.checkpoint} does not exist; pass a MERT folder "
                                     f"(config.json, pytorch_model.bin or model.safetensors, preprocessor_config.json"
                                     f"), e.g. from {hint}, or a hub id")
        source, local_only = resolve_checkpoint(self.name, self.checkpoint)
        if looks_like_path(self.checkpoint):
            folder = Path(source)
            if not (folder / "preprocessor_config.json").is_file():
                raise ModelNotFoundError(f"mert: no preprocessor_config.json in {folder}; download the full repo "
                                         f"({hint})")
            weights = next(folder / f for f in WEIGHT_FILES if (folder / f).is_file())
            return {"config.json": folder / "config.json", "preprocessor_config.json":
                    folder / "preprocessor_config.json", "weights": weights}
        from huggingface_hub import hf_hub_download

        def fetch(filename: str) -> Path:
            return Path(hf_hub_download(source, filename, local_files_only=local_only))

        try:
            files = {"config.json": fetch("config.json"), "preprocessor_config.json": fetch("preprocessor_config.json")}
        except Exception as e:
            raise not_found(self.name, self.checkpoint, local_only, e, "config") from e
        errors = []
        for f in WEIGHT_FILES:
            try:
                files["weights"] = fetch(f)
                if f.endswith(".index.json"):
                    for shard in set(json.loads(files["weights"].read_text())["weight_map"].values()):
                        fetch(shard)
                return files
            except Exception as e:
                errors.append(e)
        raise not_found(self.name, self.checkpoint, local_only, errors[-1], "model weights")

    def _check_layer(self, layer) -> int | None:
        return check_layer(self.name, self.checkpoint, layer, self.num_layers)

    def describe(self) -> dict:
        return {**super().describe(), "layer": self.layer}

    def normalize_input(self, x: np.ndarray) -> np.ndarray:
        """Zero mean, unit variance per clip, as MERT's Wav2Vec2FeatureExtractor with do_normalize."""
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        if len(x) < MIN_SAMPLES:
            x = np.pad(x, (0, MIN_SAMPLES - len(x)))
        if not self.do_normalize:
            return x
        return ((x - x.mean()) / np.sqrt(x.var() + 1e-7)).astype(np.float32)

    def embed_frames(self, batch: list[np.ndarray]) -> FrameOutput:
        import torch

        clips = [self.normalize_input(x) for x in batch]
        if not clips:
            return FrameOutput(np.zeros((0, 1, self.frame_dim), np.float32), np.zeros((0, 1), bool))
        groups: dict[int, list[int]] = {}
        for i, x in enumerate(clips):
            groups.setdefault(len(x), []).append(i)
        seqs: list[np.ndarray | None] = [None] * len(clips)
        with torch.inference_mode(), autocast_context(self.device):
            for idx in groups.values():
                values = torch.from_numpy(np.stack([clips[i] for i in idx])).to(self.device)
                hidden = to_numpy(self.model(values, self.layer))
                for j, i in enumerate(idx):
                    seqs[i] = hidden[j]
        t = max(len(s) for s in seqs)
        frames = np.zeros((len(seqs), t, self.frame_dim), np.float32)
        mask = np.zeros((len(seqs), t), bool)
        for i, s in enumerate(seqs):
            frames[i, : len(s)], mask[i, : len(s)] = s, True
        return FrameOutput(frames, mask)
