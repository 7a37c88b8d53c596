"""What the fine-tuning Trainer trains and scores: the encoders as torch modules, a cosine head, batches, metrics.

A backbone turns a batch of waveforms into the clip vectors the encoder's inference path gives (masked mean over
its frames), but differentiably: `collate` (CPU, in the data loader) makes the padded input tensors, `forward` (on
the device) the pooled [B, D] vectors. The head scores L2-normalised clip vectors, s * cos(v, w_c) + b_c, so it
reads the very vectors an index stores and pulls same-label clips together in cosine space, which is what search
ranks by. `save` writes the encoder weights in the form the encoder's own loader reads from `--checkpoint DIR`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from simsearch.encoders.base import Encoder
from simsearch.errors import SimsearchError

HEAD_SCALE = 16.0  # cosine-softmax temperature: logits span +-16, enough for confident classes without saturating
LABEL_SMOOTHING = 0.1  # small labelled sets: keeps the head from driving a few clips to certainty
YAMNET_WEIGHTS = "yamnet_torch.safetensors"  # what simsearch.encoders.yamnet_torch.load_yamnet_net reads in a folder
BEATS_WEIGHTS = "beats.pt"  # official BEATs layout; a folder holding one .pt is a BEATs checkpoint


class Backbone(nn.Module):
    """Waveforms -> pooled clip vectors [B, dim], as the encoder's inference path computes them."""

    sample_rate: int = 16000
    dim: int = 0

    def collate(self, waves: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """{"inputs", "lengths"} for a batch of mono float32 waveforms at sample_rate (runs on CPU)."""
        raise NotImplementedError

    def blocks(self) -> list[list[nn.Parameter]]:
        """Parameter groups from the input upwards, the units --freeze N counts."""
        raise NotImplementedError

    def save(self, folder: Path) -> None:
        """Write the encoder weights where the encoder's loader finds them with checkpoint=folder."""
        raise NotImplementedError

    def freeze(self, n: int) -> int:
        """Keep the first n blocks fixed (all of them when n >= their count); returns how many were frozen."""
        groups = self.blocks()
        n = len(groups) if n < 0 else min(int(n), len(groups))
        for group in groups[:n]:
            for p in group:
                p.requires_grad_(False)
        return n


def _masked_mean(frames: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Mean of each row's first counts[i] frames of [B, T, D] (the base Encoder's mean pooling, in torch)."""
    mask = (torch.arange(frames.shape[1], device=frames.device)[None, :] < counts[:, None]).to(frames.dtype)
    return (frames * mask[..., None]).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp_min(1.0)


class YamnetBackbone(Backbone):
    """YAMNet (yamnet_torch) with float activations within the graph's ranges (quantize=False): patches of each
    clip through the MobileNet, their 1024-d embeddings averaged per clip. The AudioSet classifier stays fixed."""

    def __init__(self, enc: Encoder):
        super().__init__()
        from simsearch.encoders.yamnet import PATCH_FRAMES, PATCH_HOP_FRAMES

        self.net = enc.model
        self.net.quantize = False  # rounding onto 8-bit grids has no gradient
        self.net.classifier.requires_grad_(False)
        self.mel, self.side_pad = enc.frontend.mel, enc.frontend.side_pad
        self.patch, self.patch_hop = PATCH_FRAMES, PATCH_HOP_FRAMES
        self.sample_rate, self.dim = enc.sample_rate, enc.frame_dim

    def collate(self, waves: list[np.ndarray]) -> dict[str, torch.Tensor]:
        from simsearch.encoders.yamnet_torch import padded_length

        width = max(padded_length(len(x)) for x in waves)
        batch = np.zeros((len(waves), width), np.float32)
        for i, x in enumerate(waves):
            batch[i, :len(x)] = x  # YAMNet pads with zeros too: a clip's patches never see its neighbours
        return {"inputs": torch.from_numpy(batch), "lengths": torch.tensor([len(x) for x in waves])}

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        from simsearch.encoders.yamnet import LOG_OFFSET, PATCH_HOP_SAMPLES, PATCH_SAMPLES

        with torch.autocast(inputs.device.type, enabled=False):  # the log-mel front end stays float32
            spec = torch.log(self.mel(F.pad(inputs.float(), (self.side_pad, self.side_pad))) + LOG_OFFSET)
        windows = spec.transpose(1, 2).unfold(1, self.patch, self.patch_hop).transpose(2, 3)  # [B, P, 96, 64]
        extra = torch.div(lengths - PATCH_SAMPLES + PATCH_HOP_SAMPLES - 1, PATCH_HOP_SAMPLES, rounding_mode="floor")
        counts = 1 + extra.clamp_min(0)  # yamnet.num_patches
        valid = torch.arange(windows.shape[1], device=inputs.device)[None, :] < counts[:, None]
        emb, _ = self.net(windows[valid])
        owner = torch.arange(len(inputs), device=inputs.device)[:, None].expand_as(valid)[valid]
        total = torch.zeros(len(inputs), emb.shape[1], device=emb.device, dtype=emb.dtype).index_add(0, owner, emb)
        return total / counts[:, None].to(emb.dtype)

    def blocks(self) -> list[list[nn.Parameter]]:
        convs = list(self.net.convs)  # stem, then (depthwise, pointwise) x 13
        return [list(convs[0].parameters())] + [[*convs[i].parameters(), *convs[i + 1].parameters()]
                                                for i in range(1, len(convs), 2)]

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        state = {k: v.detach().float().cpu().contiguous() if v.is_floating_point() else v.cpu().contiguous()
                 for k, v in self.net.state_dict().items()}
        save_file(state, str(folder / YAMNET_WEIGHTS), metadata={"format": "pt", "quantize": "false"})


class BeatsBackbone(Backbone):
    """BEATs (beats_model) on its fbank patches: time steps (the mel patches of a step averaged) pooled by a masked mean
    over the steps that hold audio, as BeatsEncoder pools them. A fine-tuned checkpoint's AudioSet predictor stays."""

    def __init__(self, enc: Encoder):
        super().__init__()
        if enc.layer is not None:
            raise SimsearchError("fine-tuning pools the last layer; leave --layer out")
        self.model, self.cfg, self.label_dict = enc.model, enc.cfg, enc.label_dict
        self.min_samples, self.sample_rate, self.dim = enc.min_samples, enc.sample_rate, enc.frame_dim
        self.model.patch_embedding.requires_grad_(False)  # the patch embedding is the front end, as in BEATs' recipe
        if self.model.predictor is not None:
            self.model.predictor.requires_grad_(False)

    def collate(self, waves: list[np.ndarray]) -> dict[str, torch.Tensor]:
        lengths = [max(len(x), self.min_samples) for x in waves]  # a clip under one patch counts as one patch
        batch = np.zeros((len(waves), max(lengths)), np.float32)
        for i, x in enumerate(waves):
            batch[i, :len(x)] = x
        return {"inputs": torch.from_numpy(batch), "lengths": torch.tensor(lengths)}

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        from simsearch.encoders.beats_model import beats_fbank

        with torch.autocast(inputs.device.type, enabled=False):  # the fbank front end stays float32
            fbank = beats_fbank(inputs.float())
        pad = self.model.patch_padding_mask(lengths, inputs.shape[1], device=inputs.device)
        out = self.model(fbank, padding_mask=pad if bool(pad.any()) else None)
        t, f = out.grid
        steps = out.hidden.reshape(len(inputs), t, f, -1).mean(dim=2)
        return _masked_mean(steps, (~pad.view(len(inputs), t, f)[:, :, 0]).sum(dim=1))

    def blocks(self) -> list[list[nn.Parameter]]:
        groups = [list(b.parameters()) for b in self.model.encoder.layers]
        rest = [p for p in self.model.parameters() if all(p is not q for g in groups for q in g)]
        return groups + [rest]

    def save(self, folder: Path) -> None:
        state = {k: v.detach().float().cpu() for k, v in self.model.state_dict().items()}
        ckpt = {"cfg": self.cfg.to_dict(), "model": state}
        if self.label_dict:
            ckpt["label_dict"] = self.label_dict
        torch.save(ckpt, folder / BEATS_WEIGHTS)  # the one .pt in the folder, which BeatsEncoder's loader reads


# transformers modules kept fixed as the front end: the conv feature encoder (wav2vec2 recipe), Whisper's conv
# stem and positions, AST's patch embedding; --freeze N then counts transformer blocks.
FRONT_ENDS = ("feature_extractor", "conv1", "conv2", "embed_positions", "embeddings")


class HFBackbone(Backbone):
    """A transformers audio encoder (hf.HFAudioEncoder, Whisper tiny.en included) with its input path and pooling."""

    def __init__(self, enc: Encoder):
        super().__init__()
        if getattr(enc, "layer", None) is not None:
            raise SimsearchError("fine-tuning pools the last layer; leave --layer out")
        self.enc_name, self.kind, self.source = enc.name, enc.arch.kind, enc.checkpoint
        self.model, self.fe = enc.model, enc.feature_extractor
        self.context, self.uses_mask = getattr(enc, "context", "30s"), enc.uses_attention_mask
        self.sample_rate, self.dim = enc.sample_rate, enc.frame_dim
        if self.kind == "ssl":
            self.model.config.apply_spec_augment = False  # waveform augmentation instead; short clips break it
        for name in FRONT_ENDS:
            if hasattr(self.model, name):
                getattr(self.model, name).requires_grad_(False)

    def collate(self, waves: list[np.ndarray]) -> dict[str, torch.Tensor]:
        from simsearch.encoders.hf import MIN_SAMPLES
        from simsearch.encoders.whisper_ct2 import whisper_context_samples

        lengths = torch.tensor([len(x) for x in waves])
        if self.kind == "whisper":
            size = max(whisper_context_samples(len(x), self.context) for x in waves)
            feats = self.fe([x[:size] for x in waves], sampling_rate=self.sample_rate, padding="max_length",
                            max_length=size, truncation=True, return_tensors="pt")
            return {"inputs": feats["input_features"], "lengths": lengths}
        if self.kind == "ast":
            return {"inputs": self.fe(waves, sampling_rate=self.sample_rate, return_tensors="pt")["input_values"],
                    "lengths": lengths}
        waves = [x if len(x) >= MIN_SAMPLES else np.pad(x, (0, MIN_SAMPLES - len(x))) for x in waves]
        feats = self.fe(waves, sampling_rate=self.sample_rate, padding=True, return_attention_mask=True,
                        return_tensors="pt")
        return {"inputs": feats["input_values"], "lengths": torch.tensor([len(x) for x in waves])}

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.kind == "ast":
            return self.model(inputs).pooler_output
        if self.kind == "whisper":
            from simsearch.encoders.whisper_export import encoder_states

            states = encoder_states(self.model, inputs, training=self.training)
            counts = torch.div(lengths + 319, 320, rounding_mode="floor").clamp(1, states.shape[1])  # 20-ms states
            return _masked_mean(states, counts)
        mask = None
        if self.uses_mask:
            mask = (torch.arange(inputs.shape[1], device=inputs.device)[None, :] < lengths[:, None]).long()
        hidden = self.model(inputs, attention_mask=mask).last_hidden_state
        counts = self.model._get_feat_extract_output_lengths(lengths).clamp(1, hidden.shape[1])
        return _masked_mean(hidden, counts)

    def blocks(self) -> list[list[nn.Parameter]]:
        for path in ("encoder.layers", "encoder.layer", "layers"):
            mod = self.model
            for part in path.split("."):
                mod = getattr(mod, part, None)
            if isinstance(mod, nn.ModuleList):
                groups = [list(b.parameters()) for b in mod]
                rest = [p for p in self.model.parameters() if all(p is not q for g in groups for q in g)]
                return groups + [rest]  # freezing every block freezes the whole encoder: only the head trains
        raise SimsearchError(f"{self.enc_name}: cannot find the transformer blocks to freeze")

    def save(self, folder: Path) -> None:
        if self.kind == "whisper":
            self._full_whisper().save_pretrained(folder)  # WhisperModel: what `--encoder whisper*` loads
        else:
            self.model.save_pretrained(folder)
        self.fe.save_pretrained(folder)

    def _full_whisper(self) -> nn.Module:
        """The base WhisperModel (decoder as it was) holding the fine-tuned encoder."""
        from simsearch.encoders.hub import load_config, load_model, resolve_checkpoint

        source, local = resolve_checkpoint("whisper", self.source)
        full = load_model("whisper", source, local, load_config("whisper", source, local, ("whisper",)))
        full.get_encoder().load_state_dict({k: v.detach().cpu() for k, v in self.model.state_dict().items()})
        return full


def backbone_for(enc: Encoder) -> Backbone:
    """The trainable form of a built encoder, or a clear error for encoders that cannot be fine-tuned."""
    from simsearch.encoders.beats import BeatsEncoder
    from simsearch.encoders.hf import HFAudioEncoder
    from simsearch.encoders.yamnet_torch import YamnetTorchEncoder

    if isinstance(enc, YamnetTorchEncoder):
        return YamnetBackbone(enc)
    if isinstance(enc, BeatsEncoder):
        return BeatsBackbone(enc)
    if isinstance(enc, HFAudioEncoder):
        return HFBackbone(enc)
    raise SimsearchError(f"encoder {enc.name!r} cannot be fine-tuned; use yamnet-torch, whisper-tiny-torch, beats or a "
                         "transformers encoder (wav2vec2, hubert, wavlm, data2vec-audio, ast, whisper)")


class CosineHead(nn.Module):
    """logits = HEAD_SCALE * cos(v, w_c) + b_c over L2-normalised clip vectors."""

    def __init__(self, dim: int, n_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, dim) / math.sqrt(dim))
        self.bias = nn.Parameter(torch.zeros(n_classes))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return HEAD_SCALE * F.normalize(v.float(), dim=-1) @ F.normalize(self.weight, dim=-1).T + self.bias


def head_scores(weight: np.ndarray, bias: np.ndarray, vectors: np.ndarray, multi_label: bool) -> np.ndarray:
    """The head on stored (normalised) clip vectors [N, D] -> class or label probabilities [N, C], in numpy."""
    from scipy.special import expit, softmax

    v = np.atleast_2d(np.asarray(vectors, np.float32))
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    w = weight / np.maximum(np.linalg.norm(weight, axis=1, keepdims=True), 1e-12)
    z = HEAD_SCALE * v @ w.T + bias
    return expit(z) if multi_label else softmax(z, axis=1)


class FinetuneModel(nn.Module):
    """Backbone + cosine head; forward(inputs, lengths, labels) -> {"loss", "logits"} as transformers' Trainer wants."""

    def __init__(self, backbone: Backbone, n_classes: int, multi_label: bool = False):
        super().__init__()
        self.backbone, self.multi_label = backbone, multi_label
        self.head = CosineHead(backbone.dim, n_classes)

    def state_dict(self, *args, **kwargs):
        """Tensors that share memory (BEATs' one relative-position table on every layer) as copies: the Trainer writes
        resume checkpoints with safetensors, which refuses shared memory; loading sets each copy to the same value."""
        state = super().state_dict(*args, **kwargs)
        if kwargs.get("keep_vars"):
            return state
        seen: set[int] = set()
        for key, value in state.items():
            ptr = value.untyped_storage().data_ptr()
            if ptr and ptr in seen:
                state[key] = value.clone()
            seen.add(ptr)
        return state

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor,
                labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.head(self.backbone(inputs, lengths))
        if labels is None:
            return {"logits": logits}
        if self.multi_label:
            loss = F.binary_cross_entropy_with_logits(logits, labels.float())
        else:
            loss = F.cross_entropy(logits, labels.long(), label_smoothing=LABEL_SMOOTHING)
        return {"loss": loss, "logits": logits}


def targets_of(labels: Sequence, multi_label: bool) -> tuple[list[str], np.ndarray, list[str]]:
    """(classes, targets: class ids or multi-hot rows, a stratification key per file)."""
    if multi_label:
        classes = sorted({v for parts in labels for v in parts})
        y = np.zeros((len(labels), len(classes)), np.float32)
        for i, parts in enumerate(labels):
            y[i, [classes.index(v) for v in parts]] = 1.0
        return classes, y, [sorted(parts)[0] for parts in labels]
    classes = sorted({str(v) for v in labels})
    if len(classes) < 2:
        raise SimsearchError(f"fine-tuning needs at least 2 different labels; found {len(classes)} "
                             f"({', '.join(classes) or 'none'}); label more clips")
    return classes, np.array([classes.index(str(v)) for v in labels], np.int64), [str(v) for v in labels]


def holdout(keys: Sequence[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices: each class with 4 or more files gives about `fraction` of them (at least one)."""
    rng = np.random.default_rng(seed)
    keys = np.asarray([str(k) for k in keys])
    val = []
    for key in sorted(set(keys)):
        idx = rng.permutation(np.flatnonzero(keys == key))
        if fraction > 0 and len(idx) >= 4:
            val.extend(idx[:max(1, int(round(fraction * len(idx))))])
    val = np.sort(np.asarray(val, dtype=np.int64))
    if len(val) < 2:  # too few to pick an epoch by: train the fixed number of epochs on everything
        val = np.zeros(0, np.int64)
    return np.setdiff1d(np.arange(len(keys)), val), val


class Collate:
    """Items -> the backbone's input tensors + labels."""

    def __init__(self, backbone):
        self.backbone = backbone

    def __call__(self, items: list[dict]) -> dict:
        import torch

        batch = self.backbone.collate([it["wave"] for it in items])
        batch["labels"] = torch.from_numpy(np.stack([it["label"] for it in items]))
        return batch


def val_metrics(multi_label: bool):
    """compute_metrics for the Trainer: accuracy and macro-F1 (or mAP); `select` breaks ties by the loss."""
    from scipy.special import log_softmax
    from sklearn.metrics import average_precision_score, f1_score

    def compute(pred) -> dict:
        z, y = np.asarray(pred.predictions, np.float64), np.asarray(pred.label_ids)
        if multi_label:
            has = (y.sum(axis=0) > 0) & (y.sum(axis=0) < len(y))
            score = float(average_precision_score(y[:, has], z[:, has], average="macro")) if has.any() else 0.0
            loss = float(np.mean(np.logaddexp(0, z) - y * z))
            return {"map": score, "select": score - 1e-3 * loss}
        y = y.astype(int)
        acc = float((z.argmax(axis=1) == y).mean())
        loss = float(-log_softmax(z, axis=1)[np.arange(len(y)), y].mean())
        return {"accuracy": acc, "macro_f1": float(f1_score(y, z.argmax(axis=1), average="macro")),
                "select": acc - 1e-3 * loss}
    return compute
