"""Fine-tune an encoder with a classification head on labelled files (the ladder's third rung), with transformers' Trainer.

Files are split into training and validation (stratified by label, seeded); every epoch trains on augmented random
crops of the training files (perturb.py's gain, noise, band limit and shift), scores the validation files, saves a
checkpoint (so a killed run resumes where it stopped) and keeps the best epoch (early stopping). The output folder is
a checkpoint the rest of the product takes: `simsearch index SRC --encoder ENC --checkpoint DIR` embeds with the
fine-tuned weights, and `classify --method finetuned` scores a clip with the head (`finetune.json` says what it is).
"""
from __future__ import annotations

import json
import logging
import resource
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from simsearch.classify.knn import LABEL_SEP, _ranked, split_labels
from simsearch.errors import AudioError, ModelNotFoundError, SimsearchError
from simsearch.files import atomic_write_text

if TYPE_CHECKING:
    from simsearch.search.index import Index

log = logging.getLogger(__name__)
META, HEAD, RUN, CHECKPOINTS = "finetune.json", "head.safetensors", "run.json", "checkpoints"
FORMAT = 1
HEAD_LR_FACTOR = 10.0  # the new head learns from scratch, the pretrained encoder only adjusts
MAX_TRAIN_S = 120.0  # training crops come from a file's first 2 minutes
CACHE_BYTES = 2 << 30  # decoded training audio kept in memory up to this; beyond it files are decoded per use


@dataclass
class FinetuneSettings:
    """How to fine-tune; everything but `progress` and `device` must match for a re-run to resume."""

    encoder: str
    checkpoint: str | None = None  # the base weights (None: the encoder's default)
    epochs: int = 15
    lr: float = 1e-4  # encoder learning rate; the head gets HEAD_LR_FACTOR times this
    batch_size: int = 16
    freeze: int = 0  # bottom blocks kept fixed (-1 or more than there are: all, only the head trains)
    augment: bool = True
    multi_label: bool = False
    sep: str = LABEL_SEP
    seed: int = 0
    crop_s: float = 5.0  # training crop length; validation and inference see up to window_s
    window_s: float = 10.0
    val_fraction: float = 0.15
    patience: int = 5  # epochs without a better validation score before stopping
    conditioning: dict | None = None  # None: the encoder's default (simsearch.encoders.default_conditioning)
    device: str = "auto"
    progress: bool = True

    def key(self) -> dict:
        """The settings a resumed run must share with the run it continues."""
        return {k: v for k, v in asdict(self).items() if k not in ("device", "progress")}


@dataclass
class Finetuned:
    """A fine-tuned checkpoint folder: its finetune.json and the head's arrays."""

    folder: Path
    meta: dict
    weight: np.ndarray
    bias: np.ndarray

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """Class (or per-label) probabilities [N, C] for normalised clip vectors [N, D] of this checkpoint's encoder."""
        from simsearch.classify.finetune_model import head_scores

        return head_scores(self.weight, self.bias, vectors, bool(self.meta["multi_label"]))

    def encoder(self, device: str = "auto"):
        """The fine-tuned encoder, built as `simsearch index --encoder ENC --checkpoint FOLDER` builds it."""
        from simsearch.encoders import get_encoder

        return get_encoder(self.meta["encoder"], str(self.folder), device, **self.meta["conditioning"])


def load_finetuned(folder: str | Path) -> Finetuned:
    """Read a folder written by finetune_files; a clear error names what is missing."""
    from safetensors.numpy import load_file

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ModelNotFoundError(f"fine-tuned checkpoint folder {folder} does not exist; make it with "
                                 f"`simsearch finetune INDEX --encoder ENC --out {folder}`")
    missing = [n for n in (META, HEAD) if not (folder / n).is_file()]
    if missing:
        raise ModelNotFoundError(f"{folder} is not a finished fine-tuned checkpoint: no {' or '.join(missing)} "
                                 f"(looked for {META} + {HEAD}); run or resume `simsearch finetune ... --out {folder}`")
    try:
        meta = json.loads((folder / META).read_text())
        head = load_file(str(folder / HEAD))
        weight, bias = head["weight"], head["bias"]
    except (ValueError, KeyError, OSError) as e:
        raise ModelNotFoundError(f"{folder}: unreadable fine-tuned checkpoint ({e}); fine-tune again") from None
    if meta.get("format") != FORMAT or weight.shape[0] != len(meta.get("classes", [])):
        raise ModelNotFoundError(f"{folder / META}: format {meta.get('format')} or head shape {weight.shape} does not "
                                 f"fit {len(meta.get('classes', []))} classes; fine-tune again")
    return Finetuned(folder, meta, weight, bias)


def is_finetuned(folder: str | Path | None) -> bool:
    """Whether a checkpoint is a finished fine-tuned folder."""
    return folder is not None and (Path(folder).expanduser() / META).is_file()


def index_files(index: "Index", multi_label: bool = False, sep: str = LABEL_SEP) -> tuple[list[str], list]:
    """(paths, labels) of an index's labelled files (one per file); labels are lists when multi_label."""
    rows = index.rows.drop_duplicates("path")
    pairs = [(p, split_labels(v, sep)) for p, v in zip(rows["path"], rows["label"])]
    pairs = [(p, parts if multi_label else str(v)) for (p, parts), v in zip(pairs, rows["label"]) if parts]
    if not pairs:
        raise SimsearchError(f"{index.dir.root} has no labelled files to fine-tune on; index with labels "
                             "(sub-folders, --label-regex, or a manifest 'label' column)")
    return readable(pairs)


def readable(pairs: list[tuple[str, Any]]) -> tuple[list[str], list]:
    """The (path, label) pairs whose file can still be read: one that went or broke since it was indexed is
    logged and left out before training starts, instead of stopping the run in the middle of an epoch."""
    from simsearch.audio.decode import check_readable

    kept = []
    for path, label in pairs:
        try:
            check_readable(path)
        except AudioError as e:
            log.warning("fine-tuning without %s: %s", path, e)
            continue
        kept.append((path, label))
    if not kept:
        raise SimsearchError("none of the index's labelled files can be read any more; re-index the source")
    return [p for p, _ in kept], [v for _, v in kept]


def augment(x: np.ndarray, sr: int, rng: np.random.Generator, crop: int) -> np.ndarray:
    """A random training view of a clip: crop or delay (shift), gain, white or pink noise, 4 kHz band limit."""
    from simsearch.audio import perturb

    if len(x) > crop:
        start = int(rng.integers(0, len(x) - crop + 1))
        x = x[start:start + crop]
    elif rng.random() < 0.3:
        x = perturb.delay(x, sr, float(rng.uniform(0.0, 0.25)))
    x = perturb.gain(x, float(rng.uniform(-10.0, 6.0)))
    if rng.random() < 0.5:
        x = perturb.add_noise(x, float(rng.uniform(10.0, 30.0)), rng, "pink" if rng.random() < 0.5 else "white")
    if rng.random() < 0.2:
        x = perturb.lowpass_resample(x, sr)
    return x


class ClipSet:
    """Labelled files as a torch map-style dataset of {"wave", "label"}: conditioned as the encoder conditions input,
    augmented from a seed, the epoch and the item (so a resumed run sees the very crops an uninterrupted one would)."""

    def __init__(self, paths: Sequence[str], targets: np.ndarray, enc, crop_s: float, augmented: bool, seed: int):
        self.paths, self.targets, self.enc = list(paths), targets, enc
        self.crop, self.augmented, self.seed = int(crop_s * enc.sample_rate), augmented, seed
        self.epoch, self._cache, self._bytes = 0, {}, 0

    def set_epoch(self, epoch: int) -> None:
        """Called by accelerate's data loader at every epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.paths)

    def audio(self, i: int) -> np.ndarray:
        from simsearch.audio.decode import decode

        if i in self._cache:
            return self._cache[i]
        x = decode(self.paths[i], self.enc.sample_rate, max_seconds=MAX_TRAIN_S)
        if self._bytes + x.nbytes <= CACHE_BYTES:
            self._cache[i], self._bytes = x, self._bytes + x.nbytes
        return x

    def __getitem__(self, i: int) -> dict:
        x = self.audio(i)
        if self.augmented:
            x = augment(x, self.enc.sample_rate, np.random.default_rng([self.seed, self.epoch, i]), self.crop)
        else:
            x = x[:self.crop]
        x = self.enc.condition(np.asarray(x, np.float32))
        n = int(self.enc.min_seconds * self.enc.sample_rate)
        return {"wave": x if len(x) >= n else np.pad(x, (0, n - len(x))), "label": self.targets[i]}


def _start(out: Path, settings: FinetuneSettings, paths: Sequence[str], labels: Sequence) -> dict | None:
    """The finished result if `out` already holds this very run; refuses a folder that holds another one."""
    key = {"settings": settings.key(), "files": [[str(p), v] for p, v in zip(paths, labels)]}
    run = out / RUN
    if run.is_file():
        if json.loads(run.read_text()) != key:
            raise SimsearchError(f"{out} holds a fine-tuning run with other settings or files; use another --out "
                                 "or delete the folder")
        if (out / META).is_file():
            return json.loads((out / META).read_text())
    elif out.exists() and any(out.iterdir()):
        raise SimsearchError(f"{out} exists and is not a fine-tuning folder; use another --out")
    atomic_write_text(run, json.dumps(key, indent=2))
    return None


def finetune_files(paths: Sequence[str], labels: Sequence, out: str | Path, settings: FinetuneSettings,
                   callbacks: Sequence = ()) -> dict:
    """Fine-tune settings.encoder + a head on these files and write the checkpoint folder `out`; returns its
    finetune.json. Re-running the same call resumes a killed run from its last epoch, or returns the finished one."""
    import torch
    from transformers import EarlyStoppingCallback, Trainer, TrainingArguments, set_seed
    from transformers.trainer_utils import get_last_checkpoint

    from simsearch.classify.finetune_model import Collate, FinetuneModel, backbone_for, holdout, targets_of, val_metrics
    from simsearch.encoders import default_conditioning, get_encoder, resolve_device

    out = Path(out)
    if settings.conditioning is None:
        settings.conditioning = default_conditioning(settings.encoder)
    for twin in ("noise_twin", "room_twin"):
        if settings.conditioning.get(twin) is not None:
            flag = "--" + twin.replace("_", "-")
            raise SimsearchError(f"fine-tuning does not train the {twin.replace('_', ' ')}; use {flag} off")
    done = _start(out, settings, paths, labels)
    if done is not None:
        return done
    t0, device = time.perf_counter(), resolve_device(settings.device)
    set_seed(settings.seed)
    classes, targets, keys = targets_of(labels, settings.multi_label)
    train, val = holdout(keys, settings.val_fraction, settings.seed)
    enc = get_encoder(settings.encoder, settings.checkpoint, "cpu", **settings.conditioning)
    backbone = backbone_for(enc)
    frozen = backbone.freeze(settings.freeze)
    model = FinetuneModel(backbone, len(classes), settings.multi_label).to(device)
    sets = [ClipSet([paths[i] for i in idx], targets[idx], enc, crop, aug, settings.seed)
            for idx, crop, aug in ((train, settings.crop_s, settings.augment), (val, settings.window_s, False))]
    resume = get_last_checkpoint(str(out / CHECKPOINTS)) if (out / CHECKPOINTS).is_dir() else None
    if resume is None:
        _init_head(model, sets[0], Collate(backbone), settings, device)
    else:
        log.warning("resuming %s from %s", out, resume)
    head = [p for p in model.head.parameters()]
    body = [p for p in model.backbone.parameters() if p.requires_grad]
    groups = [{"params": head, "lr": settings.lr * HEAD_LR_FACTOR, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(([{"params": body, "lr": settings.lr, "weight_decay": 0.01}] if body else []) + groups)
    has_val = len(val) > 0
    args = TrainingArguments(
        output_dir=str(out / CHECKPOINTS), num_train_epochs=settings.epochs, learning_rate=settings.lr,
        per_device_train_batch_size=settings.batch_size, per_device_eval_batch_size=settings.batch_size,
        eval_strategy="epoch" if has_val else "no", save_strategy="epoch", save_total_limit=2,
        load_best_model_at_end=has_val, metric_for_best_model="select" if has_val else None,
        greater_is_better=True, logging_strategy="epoch", report_to="none", disable_tqdm=not settings.progress,
        seed=settings.seed, data_seed=settings.seed, use_cpu=device == "cpu", bf16=device == "cuda",
        dataloader_pin_memory=device == "cuda", remove_unused_columns=False, warmup_steps=0.1,
        lr_scheduler_type="cosine")
    extra = [EarlyStoppingCallback(settings.patience)] if has_val else []
    trainer = Trainer(model=model, args=args, train_dataset=sets[0], eval_dataset=sets[1] if has_val else None,
                      data_collator=Collate(backbone), compute_metrics=val_metrics(settings.multi_label),
                      optimizers=(opt, None), callbacks=[*extra, *callbacks])
    if not settings.progress:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # the per-epoch log lines print even without a progress bar
    trainer.train(resume_from_checkpoint=resume)
    run = {"classes": classes, "base_checkpoint": settings.checkpoint or enc.checkpoint, "frozen_blocks": frozen,
           "n_train": len(train), "n_val": len(val), "resumed": resume is not None, "device": device, "t0": t0}
    return _save(trainer, model, out, settings, run)


def _init_head(model, data: ClipSet, collate, settings: FinetuneSettings, device: str) -> None:
    """Start each class weight at its training clips' mean direction (the frozen encoder's nearest-centroid
    classifier), so the first steps refine a sensible head instead of pushing random gradients into the encoder."""
    import torch

    was, data.augmented = data.augmented, False
    sums = torch.zeros_like(model.head.weight)
    model.eval()
    with torch.no_grad():
        for s in range(0, len(data), settings.batch_size):
            batch = collate([data[i] for i in range(s, min(s + settings.batch_size, len(data)))])
            v = torch.nn.functional.normalize(model.backbone(batch["inputs"].to(device), batch["lengths"].to(device))
                                              .float(), dim=-1)
            y = batch["labels"].to(device)
            onehot = y.float() if settings.multi_label else torch.nn.functional.one_hot(y, sums.shape[0]).float()
            sums += onehot.T @ v
    model.head.weight.data = torch.nn.functional.normalize(sums, dim=-1) + 1e-3 * model.head.weight.data
    data.augmented = was
    model.train()


def _save(trainer, model, out: Path, settings: FinetuneSettings, run: dict) -> dict:
    """Write the encoder weights, head.safetensors and finetune.json; drop the resume checkpoints."""
    import torch
    import transformers
    from safetensors.numpy import save_file

    from simsearch.encoders.hub import quiet_loading

    with quiet_loading():  # no "Writing model shards" bar
        model.backbone.save(out)
    save_file({"weight": model.head.weight.detach().float().cpu().numpy(),
               "bias": model.head.bias.detach().float().cpu().numpy()}, str(out / HEAD))
    hist = trainer.state.log_history
    metric = "map" if settings.multi_label else "accuracy"
    evals = [h for h in hist if f"eval_{metric}" in h]
    best = max(evals, key=lambda h: h["eval_select"], default=None)
    device = run.pop("device")
    meta = {"format": FORMAT, "encoder": settings.encoder, "base_checkpoint": run.pop("base_checkpoint"),
            "classes": run.pop("classes"), "multi_label": settings.multi_label,
            "label_sep": settings.sep if settings.multi_label else None, "conditioning": settings.conditioning,
            "epochs": settings.epochs, "epochs_run": int(round(trainer.state.epoch or 0)), "lr": settings.lr,
            "head_lr": settings.lr * HEAD_LR_FACTOR, "batch_size": settings.batch_size, "freeze": settings.freeze,
            "augment": settings.augment, "crop_s": settings.crop_s, "seed": settings.seed, "device": device,
            "precision": "bf16 autocast" if device == "cuda" else "fp32",
            "val_metric": metric if best else None, "val_score": best[f"eval_{metric}"] if best else None,
            "best_epoch": best["epoch"] if best else None,
            "val_history": [round(h[f"eval_{metric}"], 6) for h in evals],
            "train_loss": [round(h["loss"], 6) for h in hist if "loss" in h],
            "wall_s": round(time.perf_counter() - run.pop("t0"), 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device == "cuda" else None,
            **run, "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    atomic_write_text(out / META, json.dumps(meta, indent=2))
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    return meta


def finetune_index(index_dir: str | Path, out: str | Path, settings: FinetuneSettings) -> dict:
    """Fine-tune on an index's labelled files (read through Index: paths and labels, not its vectors)."""
    from simsearch.search.index import Index

    paths, labels = index_files(Index.open(index_dir, device="cpu"), settings.multi_label, settings.sep)
    return finetune_files(paths, labels, out, settings)


def classify_finetuned(index: "Index", audio: Any) -> list[dict]:
    """Label scores from the head of the fine-tuned checkpoint the index was built with."""
    ckpt = index.info["encoder"].get("checkpoint")
    if not is_finetuned(ckpt):
        raise SimsearchError(f"{index.dir.root} was built with checkpoint {ckpt!r}, not a fine-tuned folder (looked "
                             f"for {META} in it); index with `simsearch index SRC --encoder ENC --checkpoint DIR` "
                             "where DIR was written by `simsearch finetune`")
    ck = load_finetuned(ckpt)
    if ck.meta["encoder"] != index.info["encoder"]["name"]:
        raise SimsearchError(f"{ckpt} fine-tuned {ck.meta['encoder']}, but {index.dir.root} uses "
                             f"{index.info['encoder']['name']}")
    vector, _ = index.embed_clip(audio)
    return _ranked(ck.classes, ck.scores(vector)[0])
