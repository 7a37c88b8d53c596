"""BEATs (Chen et al., 2022, "BEATs: Audio Pre-Training with Acoustic Tokenizers"), written for this project.

The network is laid out so that its ``state_dict()`` has exactly the key names and shapes of the official
checkpoints (``BEATs_iter3.pt``, ``BEATs_iter3_plus_AS2M.pt``, ...), which are plain dicts::

    {"cfg": {...hyper-parameters...}, "model": state_dict, "label_dict": {...}}   # label_dict: fine-tuned only

Layout of the model (official key prefixes in double backticks):

* front end: 16 kHz waveform * 2**15 -> Kaldi log-mel fbank (128 bins, 25 ms / 10 ms)
  -> (fbank - 15.41663) / (2 * 6.55582)
* ``patch_embedding``: Conv2d over the [time, mel] image with 16x16 patches, flattened time-major:
  sequence index = time_patch * 8 + mel_patch
* ``layer_norm`` (over embed_dim), optional ``post_extract_proj`` (embed_dim -> encoder_embed_dim)
* ``encoder``: padded positions zeroed, plus a grouped, weight-normed convolutional position embedding
  (``encoder.pos_conv.0.{weight_g,weight_v,bias}``), ``encoder.layer_norm`` (post-LN models apply it here),
  then ``encoder.layers.N``: post-LN ("deep norm") transformer layers whose self-attention carries a bucketed
  relative position bias (one ``nn.Embedding`` created on layer 0 and shared by every layer, so its key appears
  under every layer in the state dict, as in the official files) scaled per query by a learned gate
  (``grep_linear``, ``grep_a``)
* ``predictor``: linear AudioSet head on fine-tuned checkpoints; clip scores = sigmoid(mean over valid patches)

Inference only: dropout, layer drop and the layer-wise gradient decay of training are not implemented.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from simsearch.errors import ModelNotFoundError

SAMPLE_RATE = 16000
N_MELS = 128
FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0
WIN_SAMPLES = int(SAMPLE_RATE * FRAME_LENGTH_MS / 1000)  # 400
HOP_SAMPLES = int(SAMPLE_RATE * FRAME_SHIFT_MS / 1000)  # 160
FBANK_MEAN = 15.41663  # the reference's extract_features defaults (dataset statistics of the log-mel fbank)
FBANK_STD = 6.55582

CHECKPOINT_HELP = (
    "download BEATs_iter3_plus_AS2M.pt (AudioSet fine-tuned, gives tags too) or BEATs_iter3.pt from the official "
    "BEATs release page (https://github.com/microsoft/unilm/tree/master/beats) and pass "
    "--checkpoint /path/to/file.pt"
)


# --------------------------------------------------------------------------------------------------------------
# configuration


@dataclass
class BEATsConfig:
    """Hyper-parameters as stored under ``checkpoint["cfg"]``; defaults are the reference's defaults."""

    input_patch_size: int = -1
    embed_dim: int = 512
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_wise_gradient_decay_ratio: float = 1.0
    layer_norm_first: bool = False
    deep_norm: bool = False
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0
    dropout_input: float = 0.0
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = False
    num_buckets: int = 320
    max_distance: int = 1280
    gru_rel_pos: bool = False
    finetuned_model: bool = False
    predictor_dropout: float = 0.1
    predictor_class: int = 527
    extra: dict[str, Any] = field(default_factory=dict)  # cfg keys this implementation does not use, kept as-is

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> "BEATsConfig":
        known = {f.name for f in fields(cls)} - {"extra"}
        out = cls(**{k: v for k, v in cfg.items() if k in known})
        out.extra = {k: v for k, v in cfg.items() if k not in known}
        return out

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        d.update(self.extra)
        return d

    def problems(self) -> list[str]:
        """What makes this config unusable (empty when it is fine)."""
        out = []
        if not isinstance(self.input_patch_size, int) or not 0 < self.input_patch_size <= N_MELS:
            out.append(f"input_patch_size={self.input_patch_size!r} (must be 1..{N_MELS})")
        for name in ("embed_dim", "encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim",
                     "encoder_attention_heads", "conv_pos", "conv_pos_groups"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                out.append(f"{name}={v!r} (must be a positive integer)")
        if not out and self.encoder_embed_dim % self.encoder_attention_heads:
            out.append("encoder_embed_dim must be divisible by encoder_attention_heads")
        if not out and self.encoder_embed_dim % self.conv_pos_groups:
            out.append("encoder_embed_dim must be divisible by conv_pos_groups")
        if self.deep_norm and self.layer_norm_first:
            out.append("deep_norm and layer_norm_first cannot both be set")
        if self.activation_fn not in _ACTIVATIONS:
            out.append(f"activation_fn={self.activation_fn!r} (supported: {', '.join(sorted(_ACTIVATIONS))})")
        if self.relative_position_embedding and self.num_buckets < 4:
            out.append(f"num_buckets={self.num_buckets!r} (need at least 4)")
        return out


# --------------------------------------------------------------------------------------------------------------
# front end


def beats_fbank(waves: torch.Tensor, mean: float = FBANK_MEAN, std: float = FBANK_STD) -> torch.Tensor:
    """[B, N] float waveforms in [-1, 1] at 16 kHz -> normalised log-mel fbank [B, frames, 128].

    Runs on the waveforms' device in float32 (call it outside autocast: Kaldi's mel projection is a matmul that
    autocast would otherwise run in bf16).
    """
    import torchaudio.compliance.kaldi as kaldi

    if waves.dim() != 2:
        raise ValueError(f"expected waveforms [B, N], got shape {tuple(waves.shape)}")
    waves = waves.float()
    feats = [
        kaldi.fbank(w.unsqueeze(0) * 2**15, num_mel_bins=N_MELS, sample_frequency=SAMPLE_RATE,
                    frame_length=FRAME_LENGTH_MS, frame_shift=FRAME_SHIFT_MS)
        for w in waves
    ]
    return (torch.stack(feats, dim=0) - mean) / (2 * std)


def num_fbank_frames(n_samples: int) -> int:
    """Kaldi frames with snip_edges: only windows that fit entirely in the signal."""
    return 0 if n_samples < WIN_SAMPLES else 1 + (n_samples - WIN_SAMPLES) // HOP_SAMPLES


def min_samples(patch: int = 16) -> int:
    """Fewest samples that give one full time patch."""
    return WIN_SAMPLES + (patch - 1) * HOP_SAMPLES


# --------------------------------------------------------------------------------------------------------------
# network pieces


def _gelu_fp32(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x.float()).type_as(x)


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


_ACTIVATIONS = {
    "relu": F.relu,
    "gelu": _gelu_fp32,
    "gelu_accurate": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "tanh": torch.tanh,
    "linear": lambda x: x,
    "glu": lambda x: x,  # the gating lives inside fc1 (GatedLinear)
}


class GatedLinear(nn.Module):
    """fc1 of 'glu' models: one linear to 2*out, first half times swish(second half); key ``fc1.linear.*``."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.dim_out = dim_out
        self.linear = nn.Linear(dim_in, 2 * dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.linear(x).split(self.dim_out, dim=-1)
        return a * (b * torch.sigmoid(b))


class DropLastStep(nn.Module):
    """An even conv kernel with padding k//2 yields one step too many; drop the last so length is kept."""

    def __init__(self, kernel_size: int):
        super().__init__()
        self.drop = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, : x.shape[-1] - self.drop] if self.drop else x


def _official_weight_norm_keys(module, state_dict, prefix, local_metadata) -> None:
    """state_dict hook: write the parametrized conv weight as the official ``weight_g``/``weight_v`` pair.

    (Loading the official names works by itself: torch's weight_norm parametrization converts them on load.)
    """
    for src, dst in (("original0", "weight_g"), ("original1", "weight_v")):
        key = f"{prefix}parametrizations.weight.{src}"
        if key in state_dict:
            state_dict[prefix + dst] = state_dict.pop(key)


def _position_conv(dim: int, kernel: int, groups: int) -> nn.Sequential:
    conv = nn.Conv1d(dim, dim, kernel_size=kernel, padding=kernel // 2, groups=groups)
    nn.init.normal_(conv.weight, mean=0.0, std=math.sqrt(4.0 / (kernel * dim)))
    nn.init.zeros_(conv.bias)
    # g has shape [1, 1, kernel]: one norm per kernel tap, over (out, in) channels
    conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
    conv.register_state_dict_post_hook(_official_weight_norm_keys)
    return nn.Sequential(conv, DropLastStep(kernel), nn.GELU())


def relative_position_buckets(length: int, num_buckets: int, max_distance: int,
                              device: torch.device | None = None) -> torch.Tensor:
    """[L, L] bucket of (key - query) offsets: half the buckets per direction, exact up to a quarter of them,
    log-spaced beyond that up to max_distance, the last bucket catching everything further."""
    pos = torch.arange(length, dtype=torch.long, device=device)
    offset = pos[None, :] - pos[:, None]
    half = num_buckets // 2
    base = (offset > 0).long() * half
    dist = offset.abs()
    exact = half // 2
    # log of 0 is avoided by clamping; those entries take the exact branch anyway
    far = exact + (
        torch.log(dist.clamp(min=1).float() / exact) / math.log(max_distance / exact) * (half - exact)
    ).long()
    far = far.clamp(max=half - 1)
    return base + torch.where(dist < exact, dist, far)


class RelPosSelfAttention(nn.Module):
    """Multi-head self-attention with the gated, bucketed relative position bias.

    scores = q k^T / sqrt(d_head) + gate(q) * bias[h, i, j] (+ -inf on padded keys), computed with torch SDPA.
    The reference subtracts the row max before softmax and scales q by 1/32 around it; both are
    softmax-invariant, numerical-range tricks and are not needed here.
    """

    def __init__(self, dim: int, heads: int, relative_bias: bool, num_buckets: int, max_distance: int,
                 gated: bool, owns_bias_table: bool):
        super().__init__()
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.scaling = self.head_dim**-0.5
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.has_relative_bias, self.gated = relative_bias, gated
        # declaration order = official state-dict order
        if relative_bias and owns_bias_table:
            self.relative_attention_bias = nn.Embedding(num_buckets, heads)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        if gated:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))

    def position_bias(self, length: int) -> torch.Tensor:
        """[H, L, L] bias from the shared bucket table."""
        table = self.relative_attention_bias
        buckets = relative_position_buckets(length, self.num_buckets, self.max_distance, table.weight.device)
        return table(buckets).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None,
                pos_bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)  # [B, H, L, d]
        k = self.k_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)

        mask = None
        if self.has_relative_bias:
            if pos_bias is None:  # first layer: build once, later layers reuse it (ungated)
                pos_bias = self.position_bias(n)
            mask = pos_bias.unsqueeze(0)  # [1, H, L, L]
            if self.gated:
                # gate per (batch, head, query) from the un-scaled query: two sigmoid gates from sums of 4 outputs
                g = torch.sigmoid(self.grep_linear(q).unflatten(-1, (2, 4)).sum(-1))  # [B, H, L, 2]
                ga, gb = g[..., :1], g[..., 1:]
                mask = (ga * (gb * self.grep_a - 1.0) + 2.0) * mask  # [B, H, L, L]
        if key_padding_mask is not None:
            pad = torch.zeros(b, 1, 1, n, device=x.device, dtype=torch.float32)
            pad = pad.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
            mask = pad if mask is None else mask + pad
        if mask is not None:
            mask = mask.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, self.dim)), pos_bias


class TransformerLayer(nn.Module):
    """One encoder layer; post-LN with residual scaled by deep-norm alpha, or pre-LN when layer_norm_first."""

    def __init__(self, cfg: BEATsConfig, owns_bias_table: bool):
        super().__init__()
        d = cfg.encoder_embed_dim
        self.layer_norm_first = cfg.layer_norm_first
        self.alpha = math.pow(2 * cfg.encoder_layers, 0.25) if cfg.deep_norm else 1.0
        self.self_attn = RelPosSelfAttention(
            d, cfg.encoder_attention_heads, cfg.relative_position_embedding, cfg.num_buckets, cfg.max_distance,
            cfg.gru_rel_pos, owns_bias_table)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.activation = _ACTIVATIONS[cfg.activation_fn]
        if cfg.activation_fn == "glu":
            self.fc1 = GatedLinear(d, cfg.encoder_ffn_embed_dim)
        else:
            self.fc1 = nn.Linear(d, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(x)))

    def forward(self, x, key_padding_mask, pos_bias):
        if self.layer_norm_first:
            h, pos_bias = self.self_attn(self.self_attn_layer_norm(x), key_padding_mask, pos_bias)
            x = x + h
            return x + self._ffn(self.final_layer_norm(x)), pos_bias
        h, pos_bias = self.self_attn(x, key_padding_mask, pos_bias)
        x = self.self_attn_layer_norm(x * self.alpha + h)
        return self.final_layer_norm(x * self.alpha + self._ffn(x)), pos_bias


def _share_bias_table_on_load(module, state_dict, prefix, *args) -> None:
    """All layers hold one table: load layer 0's copy everywhere (fills it in if a file keeps only layer 0's)."""
    if not module.relative_position_embedding:
        return
    first = f"{prefix}layers.0.self_attn.relative_attention_bias.weight"
    if first not in state_dict:
        return
    for i in range(1, len(module.layers)):
        state_dict[f"{prefix}layers.{i}.self_attn.relative_attention_bias.weight"] = state_dict[first]


class TransformerEncoder(nn.Module):
    def __init__(self, cfg: BEATsConfig):
        super().__init__()
        d = cfg.encoder_embed_dim
        self.layer_norm_first = cfg.layer_norm_first
        self.pos_conv = _position_conv(d, cfg.conv_pos, cfg.conv_pos_groups)
        self.layers = nn.ModuleList([TransformerLayer(cfg, owns_bias_table=(i == 0))
                                     for i in range(cfg.encoder_layers)])
        if cfg.relative_position_embedding:
            shared = self.layers[0].self_attn.relative_attention_bias
            for layer in self.layers[1:]:
                layer.self_attn.relative_attention_bias = shared
        self.layer_norm = nn.LayerNorm(d)
        self.relative_position_embedding = cfg.relative_position_embedding
        self.register_load_state_dict_pre_hook(_share_bias_table_on_load)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None, layer: int | None = None,
                need_final: bool = True) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """x [B, L, D], padding_mask [B, L] (True = padding).

        Returns (final, chosen): final is the model output (after encoder.layer_norm for pre-LN models);
        chosen is hidden state ``layer`` (0 = input to the first layer, k = output of layer k), or None.
        With need_final=False the layers after ``layer`` are skipped and final is None.
        """
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        chosen = x if layer == 0 else None
        pos_bias = None
        for i, blk in enumerate(self.layers, start=1):
            if chosen is not None and not need_final:
                return None, chosen
            x, pos_bias = blk(x, padding_mask, pos_bias)
            if layer == i:
                chosen = x
        if chosen is not None and not need_final:
            return None, chosen
        if self.layer_norm_first:
            x = self.layer_norm(x)
        return x, chosen


@dataclass
class BEATsOutput:
    hidden: torch.Tensor  # [B, L, D]: the requested layer, or the model output
    padding_mask: torch.Tensor | None  # [B, L] True = padding
    probs: torch.Tensor | None  # [B, classes] sigmoid scores, fine-tuned models only
    grid: tuple[int, int]  # (time patches, mel patches); L = product, index = t * mel_patches + f


class BEATs(nn.Module):
    """The BEATs network: fbank -> patches -> transformer (-> AudioSet scores on fine-tuned checkpoints)."""

    def __init__(self, cfg: BEATsConfig):
        super().__init__()
        bad = cfg.problems()
        if bad:
            raise ValueError("invalid BEATs config: " + "; ".join(bad))
        self.cfg = cfg
        p = cfg.input_patch_size
        # declaration order = official state-dict order
        self.post_extract_proj = (nn.Linear(cfg.embed_dim, cfg.encoder_embed_dim)
                                  if cfg.embed_dim != cfg.encoder_embed_dim else None)
        self.patch_embedding = nn.Conv2d(1, cfg.embed_dim, kernel_size=p, stride=p, bias=cfg.conv_bias)
        self.encoder = TransformerEncoder(cfg)
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.predictor = nn.Linear(cfg.encoder_embed_dim, cfg.predictor_class) if cfg.finetuned_model else None

    @property
    def mel_patches(self) -> int:
        return N_MELS // self.cfg.input_patch_size

    def time_patches(self, n_samples: int) -> int:
        return num_fbank_frames(n_samples) // self.cfg.input_patch_size

    def patch_padding_mask(self, lengths: list[int] | torch.Tensor, n_samples: int,
                           device: torch.device | str | None = None) -> torch.Tensor:
        """[B, L] True where a patch is padding, for clips of `lengths` samples zero-padded to `n_samples`.

        A time patch counts as audio only when all of its fbank frames lie inside the clip, i.e. exactly the
        patches the clip alone would have; everything after is masked, so a clip's output does not depend on
        what it was batched with. (The reference maps a sample-level mask to patches by proportional reshapes,
        which agrees with this except around the last, partly filled time patch.)
        """
        t_all, f = self.time_patches(n_samples), self.mel_patches
        valid = torch.tensor([self.time_patches(int(n)) for n in lengths], dtype=torch.long, device=device)
        t_idx = torch.arange(t_all, device=device)
        pad_t = t_idx[None, :] >= valid[:, None]  # [B, T]
        return pad_t.repeat_interleave(f, dim=1)  # time-major sequence: f mel patches per time patch

    def forward(self, fbank: torch.Tensor, padding_mask: torch.Tensor | None = None,
                layer: int | None = None) -> BEATsOutput:
        """fbank [B, frames, 128] from `beats_fbank`; padding_mask [B, L] over patches (True = padding).

        layer: None = model output; 0 = input to the first transformer layer; k = output of layer k
        (negative counts from the end: -1 = last layer's raw output).
        """
        n_layers = len(self.encoder.layers)
        if layer is not None:
            if not -(n_layers + 1) <= layer <= n_layers:
                raise ValueError(f"layer {layer} out of range for {n_layers} layers (use 0..{n_layers})")
            layer %= n_layers + 1
        x = self.patch_embedding(fbank.unsqueeze(1))  # [B, C, T, F]
        grid = (x.shape[2], x.shape[3])
        x = self.layer_norm(x.flatten(2).transpose(1, 2))  # [B, T*F, C]
        if padding_mask is not None:
            if padding_mask.shape != x.shape[:2]:
                raise ValueError(f"padding_mask {tuple(padding_mask.shape)} does not match patches "
                                 f"{tuple(x.shape[:2])}")
            if not padding_mask.any():
                padding_mask = None
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        final, chosen = self.encoder(x, padding_mask, layer,
                                     need_final=layer is None or self.predictor is not None)
        probs = None
        if self.predictor is not None:
            logits = self.predictor(final).float()
            if padding_mask is None:
                logits = logits.mean(dim=1)
            else:
                keep = (~padding_mask).unsqueeze(-1).to(logits.dtype)
                logits = (logits * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)
            probs = torch.sigmoid(logits)
        return BEATsOutput(final if layer is None else chosen, padding_mask, probs, grid)


# --------------------------------------------------------------------------------------------------------------
# loading


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_REQUIRED = ("cfg", "model")


def _looks_like_hub_id(s: str) -> bool:
    if s.startswith(("hf://", "hf:", "http://", "https://", "hub:")):
        return True
    return bool(_HUB_ID.match(s)) and not s.lower().endswith((".pt", ".pth", ".ckpt", ".bin"))


def resolve_checkpoint_path(checkpoint: str | os.PathLike | None) -> Path:
    """The .pt file a --checkpoint value names (a folder holding exactly one .pt also works), or a
    ModelNotFoundError that says how to get one."""
    if checkpoint is None or str(checkpoint).strip() == "":
        raise ModelNotFoundError(f"BEATs needs a local checkpoint file: {CHECKPOINT_HELP}")
    s = str(checkpoint)
    p = Path(s).expanduser()
    if p.is_dir():
        pts = sorted(p.glob("*.pt"))
        if len(pts) == 1:
            return pts[0]
        found = ", ".join(x.name for x in pts) if pts else "no .pt file"
        raise ModelNotFoundError(f"BEATs checkpoint {s!r} is a folder ({found}); pass the .pt file itself: "
                                 f"{CHECKPOINT_HELP}")
    if p.is_file():
        return p
    if _looks_like_hub_id(s):
        raise ModelNotFoundError(
            f"BEATs checkpoint {s!r} looks like a model-hub id or URL, and there is no local file by that name. "
            f"BEATs is not loaded from a hub here; {CHECKPOINT_HELP}")
    raise ModelNotFoundError(f"BEATs checkpoint not found: {s!r} does not exist; {CHECKPOINT_HELP}")


def _names(keys, limit: int = 8) -> str:
    keys = sorted(keys)
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_beats_checkpoint(path: str | os.PathLike | None) -> tuple[BEATs, BEATsConfig, dict | None]:
    """Official BEATs .pt file -> (model in eval mode on CPU, config, label_dict or None).

    Raises ModelNotFoundError when the file is missing, is not a PyTorch checkpoint, or is not a BEATs
    checkpoint (saying which keys are missing or unexpected).
    """
    p = resolve_checkpoint_path(path)
    try:
        ckpt = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, not a torch file, or a pickle that weights_only refuses
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelNotFoundError(f"{p}: could not be read as a PyTorch checkpoint ({first}); "
                                 f"{CHECKPOINT_HELP}") from e
    if not isinstance(ckpt, dict):
        raise ModelNotFoundError(f"{p}: is not a BEATs checkpoint (holds a {type(ckpt).__name__}, expected a dict "
                                 f"with 'cfg' and 'model'); {CHECKPOINT_HELP}")
    missing = [k for k in _REQUIRED if k not in ckpt]
    if missing:
        hint = ""
        if any(isinstance(k, str) and k.startswith(("encoder.", "patch_embedding")) for k in ckpt):
            hint = " (it looks like a bare state dict; official BEATs files keep their config under 'cfg')"
        raise ModelNotFoundError(
            f"{p}: is not a BEATs checkpoint: missing top-level key(s) {', '.join(map(repr, missing))} "
            f"(found: {_names(map(str, ckpt.keys()))}){hint}; {CHECKPOINT_HELP}")
    if not isinstance(ckpt["cfg"], dict) or not isinstance(ckpt["model"], dict):
        raise ModelNotFoundError(f"{p}: is not a BEATs checkpoint: 'cfg' and 'model' must both be dicts; "
                                 f"{CHECKPOINT_HELP}")
    cfg = BEATsConfig.from_dict(ckpt["cfg"])
    bad = cfg.problems()
    if bad:
        raise ModelNotFoundError(f"{p}: is not a usable BEATs checkpoint: its cfg has {'; '.join(bad)}")

    model = BEATs(cfg)
    state = ckpt["model"]
    expected = set(model.state_dict().keys())  # official names (weight_g/weight_v, bias table on every layer)
    given = set(state.keys())
    if cfg.relative_position_embedding and "encoder.layers.0.self_attn.relative_attention_bias.weight" in given:
        given |= {f"encoder.layers.{i}.self_attn.relative_attention_bias.weight"
                  for i in range(cfg.encoder_layers)}  # files that keep the shared table on layer 0 only
    lacking, surplus = expected - given, given - expected
    if lacking or surplus:
        parts = []
        if lacking:
            parts.append(f"missing keys {_names(lacking)}")
        if surplus:
            parts.append(f"unexpected keys {_names(surplus)}")
        raise ModelNotFoundError(
            f"{p}: is not a BEATs model checkpoint matching its own cfg (a BEATs tokenizer or another model?): "
            f"{'; '.join(parts)}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelNotFoundError(f"{p}: BEATs weights do not fit the network its cfg describes: "
                                 f"{str(e).strip()[:600]}") from e
    model.eval()
    label_dict = ckpt.get("label_dict")
    return model, cfg, (dict(label_dict) if isinstance(label_dict, dict) else None)


__all__ = ["BEATs", "BEATsConfig", "BEATsOutput", "beats_fbank", "load_beats_checkpoint", "resolve_checkpoint_path",
           "num_fbank_frames", "min_samples", "relative_position_buckets", "CHECKPOINT_HELP", "FBANK_MEAN", "FBANK_STD"]
