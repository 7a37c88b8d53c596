"""A copy detector trained on the collection itself: a small convolutional network over log-mel frames whose
vectors of a recording and of changed copies of it (noise as loud as the sound, rooms, another recording mixed in,
pitch and tempo changes) lie close, and far from other recordings.

The frozen taggers describe what a sound is (a dog, a spoken "seven"), so two recordings of the same kind lie as
close as a recording and its noisy copy; the landmarks tell recordings apart, but most of them are gone when noise
as loud as the clip, a room or a second recording covers it. This network is trained for exactly that task, in the
way neural audio fingerprints are (contrastive learning on pairs of a segment and a changed copy of it, every other
segment of the batch a negative): a batch of one-second segments of the collection and, for each, a random changed
copy (simsearch.audio.augment), with an InfoNCE loss in both directions. No labels are read. `simsearch index`
trains it on the first run of an index whose encoder has a `copynet` part (simsearch.indexing.copynet_fit) and keeps
the weights in the index folder (COPYNET_FILE); `--checkpoint FILE` uses a network trained elsewhere instead.

Frames: the network's per-time vectors (one per 160 ms); the clip vector is their mean (the index normalises).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from simsearch.encoders.base import Encoder, FrameOutput, torch_setup
from simsearch.encoders.checkpoint_file import load_strict, read_checkpoint
from simsearch.errors import SimsearchError

log = logging.getLogger(__name__)
COPYNET_FILE = "copynet.pt"
FORMAT = "simsearch-copynet-1"
SR = 16000
N_MELS = 64
HOP = 160  # 10 ms frames
POOL = 16  # frames per output vector: four 2x2 max-pools
LOG_FLOOR = 1e-6
HELP = ("copynet is trained on a collection: index one with an encoder that has a copynet part (the first run "
        f"trains it and keeps it as {COPYNET_FILE} in the index folder), search an index made with it, or give "
        f"--checkpoint FILE (the {COPYNET_FILE} of such an index)")


@dataclass(frozen=True)
class TrainSettings:
    """How the network is trained: steps of `batch` segments of `crop_s` seconds, InfoNCE at `temperature`."""

    steps: int = 300
    batch: int = 96
    crop_s: float = 1.0
    jitter_s: float = 0.1  # the changed copy starts up to this far from its segment
    lr: float = 2e-3
    temperature: float = 0.07
    seed: int = 0


def build_network(channels: tuple[int, ...] = (16, 32, 64, 128), dim: int = 128):
    """Conv blocks (3x3, batch norm, ReLU, 2x2 max-pool) over [B, 1, mels, T], then a two-layer projection of each
    time step's flattened channels x bands: [B, T / 16, dim]."""
    import torch.nn as nn

    class CopyNet(nn.Module):
        def __init__(self):
            super().__init__()
            layers, width = [], 1
            for c in channels:
                layers += [nn.Conv2d(width, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
                width = c
            self.conv = nn.Sequential(*layers)
            bands = N_MELS // 2 ** len(channels)
            self.proj = nn.Sequential(nn.Linear(width * bands, 4 * dim), nn.ReLU(), nn.Linear(4 * dim, dim))

        def forward(self, logmel):
            h = self.conv(logmel)
            b, c, f, t = h.shape
            return self.proj(h.permute(0, 3, 1, 2).reshape(b, t, c * f))

    return CopyNet()


class CopyNetEncoder(Encoder):
    """The collection's copy detector (module docstring); weights from `checkpoint` (a COPYNET_FILE)."""

    sample_rate = SR
    min_seconds = POOL * HOP / SR  # one output vector

    def __init__(self, name: str = "copynet", checkpoint: str | None = None, device: str = "cpu",
                 pooling: str = "mean"):
        import torchaudio.transforms as T

        self.name, self.pooling, self.checkpoint = name, pooling, None
        self.device = torch_setup(name, pooling, device)
        self.mel = T.MelSpectrogram(SR, n_fft=400, hop_length=HOP, n_mels=N_MELS, f_min=60.0, f_max=7800.0)
        self.mel = self.mel.to(self.device)
        self.net, self.trained_on = None, {}
        self.frame_dim = 128
        if checkpoint:
            self.load(checkpoint)

    @property
    def precision(self) -> str:
        return "float32"

    def load(self, path: str, own: bool = False) -> None:
        """The network and what it was trained on from a COPYNET_FILE; a clear error for a missing or foreign file.
        `own`: the index's own file, which index.json does not name (the folder can move)."""
        saved = read_checkpoint("copynet", str(path), HELP)
        cfg = saved.get("config") if isinstance(saved, dict) and saved.get("format") == FORMAT else None
        if not isinstance(cfg, dict) or not isinstance(saved.get("state_dict"), dict) \
                or not isinstance(cfg.get("channels"), list) or not isinstance(cfg.get("dim"), int):
            raise SimsearchError(f"{path} is not a copynet checkpoint ({FORMAT}); {HELP}")
        net = build_network(tuple(int(c) for c in cfg["channels"]), cfg["dim"])
        self.net = load_strict("copynet", net, saved["state_dict"]).to(self.device)
        self.frame_dim, self.trained_on = int(cfg["dim"]), dict(saved.get("trained_on", {}))
        self.checkpoint = None if own else str(path)

    def logmels(self, batch: list[np.ndarray]):
        """[B, 1, mels, T] log-mel, each clip centred on its own mean (a level change shifts every log-mel),
        zero-padded to whole output steps; and each clip's frame count."""
        import torch

        feats = [torch.log(self.mel(torch.as_tensor(x, dtype=torch.float32, device=self.device)) + LOG_FLOOR)
                 for x in batch]
        feats = [f - f.mean() for f in feats]
        t = POOL * -(-max(f.shape[-1] for f in feats) // POOL)  # whole output steps: a clip's last frames count
        out = torch.zeros((len(feats), 1, N_MELS, t), device=self.device)
        for i, f in enumerate(feats):
            out[i, 0, :, : f.shape[-1]] = f
        return out, [f.shape[-1] for f in feats]

    def embed_frames(self, batch: list[np.ndarray]) -> FrameOutput:
        import torch

        if self.net is None:
            raise SimsearchError(f"copynet has no weights loaded. {HELP}")
        # Clips go through the network in groups of one padded length: padding's activations reach a clip's last
        # steps, so a clip batched with longer ones would get another vector than alone (a row vs its query).
        steps = -(-np.array([len(x) // HOP + 1 for x in batch]) // POOL)
        z = np.zeros((len(batch), int(steps.max()), self.frame_dim), np.float32)
        lengths = [0] * len(batch)
        with torch.no_grad():
            for n in np.unique(steps):
                group = np.flatnonzero(steps == n)
                x, frames = self.logmels([batch[i] for i in group])
                z[group, :n] = self.net(x).float().cpu().numpy()
                for i, f in zip(group, frames):
                    lengths[i] = f
        return FrameOutput(z, held_steps(lengths, z.shape[1]))

    def describe(self) -> dict:
        d = super().describe()
        d["trained_on"] = self.trained_on
        return d


def held_steps(lengths: list[int], steps: int) -> np.ndarray:
    """[B, steps] True where an output step covers a clip's own frames (at least its first)."""
    mask = np.zeros((len(lengths), steps), bool)
    for i, n in enumerate(lengths):
        mask[i, : max(1, -(-n // POOL))] = True
    return mask


def untrained(enc) -> list[CopyNetEncoder]:
    """The encoder's copynet parts that have no weights yet (none, or the encoder itself)."""
    return [p for p in getattr(enc, "parts", [enc]) if isinstance(p, CopyNetEncoder) and p.net is None]


def load_trained(enc, root) -> None:
    """Give the encoder's copynet parts without weights the network trained on the index at `root`."""
    from pathlib import Path

    for part in untrained(enc):
        part.load(str(Path(root) / COPYNET_FILE), own=True)


def train(clips: list[np.ndarray], rooms: list[np.ndarray], settings: TrainSettings = TrainSettings(),
          device: str = "auto", progress: bool = True) -> tuple[object, dict]:
    """Train a network on 16-kHz clips, conditioned as the part conditions its input (module docstring):
    returns (the network in eval mode, a summary)."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from simsearch.audio.augment import changed_copy
    from simsearch.encoders import resolve_device

    if len(clips) < 2:
        raise SimsearchError("copynet needs at least two clips to train on (every other clip is a negative)")
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    helper = CopyNetEncoder(device=resolve_device(device))
    net = build_network().to(helper.device)
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=1e-4)
    # one cycle: warm up over the first tenth (at least two steps), then anneal; a run too short for that keeps lr
    warm = min(0.5, max(0.1, 2.0 / settings.steps))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.lr, total_steps=settings.steps,
                                                pct_start=warm) if settings.steps >= 3 else None
    crop, jitter = int(settings.crop_s * SR), int(settings.jitter_s * SR)
    batch = min(settings.batch, len(clips))
    start, losses = time.time(), []
    net.train()
    for _ in tqdm(range(settings.steps), desc="training copynet", unit="step", disable=not progress):
        picked = rng.choice(len(clips), batch, replace=False)
        anchors, copies = [], []
        for i in picked:
            x = clips[i]
            s = int(rng.integers(max(1, len(x) - crop + 1)))
            s2 = int(np.clip(s + rng.integers(-jitter, jitter + 1), 0, max(0, len(x) - crop)))
            j = int(rng.integers(len(clips) - 1))
            other = clips[j + (j >= i)]
            o = int(rng.integers(max(1, len(other) - crop + 1)))
            anchors.append(x[s:s + crop])
            copies.append(changed_copy(x[s2:s2 + crop], SR, rng, rooms, other[o:o + crop]))
        za = F.normalize(_pooled(net, *helper.logmels(anchors)), dim=-1)
        zb = F.normalize(_pooled(net, *helper.logmels(copies)), dim=-1)
        logits = za @ zb.T / settings.temperature
        target = torch.arange(len(picked), device=logits.device)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(float(loss.detach()))
    summary = {"clips": len(clips), "steps": settings.steps, "batch": batch, "crop_s": settings.crop_s,
               "seed": settings.seed, "final_loss": round(float(np.mean(losses[-20:])), 4),
               "seconds": round(time.time() - start, 1), "device": str(helper.device)}
    log.info("copynet trained: %s", summary)
    return net.eval(), summary


def _pooled(net, logmel, lengths):
    """Mean of each clip's output vectors over the steps that hold audio: [B, dim]."""
    import torch

    z = net(logmel)
    mask = torch.as_tensor(held_steps(lengths, z.shape[1]), dtype=z.dtype, device=z.device)
    return (z * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)


def save(path, net, trained_on: dict, channels: tuple[int, ...] = (16, 32, 64, 128), dim: int = 128) -> None:
    """Write the weights atomically, with what they were trained on."""
    import torch

    from simsearch.files import atomic_write_bytes

    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    saved = {"format": FORMAT, "config": {"channels": list(channels), "dim": dim}, "state_dict": state,
             "trained_on": trained_on}
    atomic_write_bytes(path, lambda f: torch.save(saved, f))
