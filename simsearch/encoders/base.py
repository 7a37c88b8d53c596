"""The one small interface every encoder implements, plus the shared pooling over frames."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from simsearch.audio.condition import band_limit, normalize_loudness, trim_silence

POOLINGS = ("mean", "meanstd", "gem")
BASE_OPTIONS = ("loudness", "trim", "bandwidth", "noise_twin", "room_twin")  # applied here, for every encoder
TWIN_SEED = 0  # the same pink-noise sequence for every clip, so a clip's vector depends on the clip alone
TWIN_ROOM = 1000  # the one simulated room of the room twin (perturb.simulated_room), not one the harness draws


@dataclass
class FrameOutput:
    """Frame-level features for a batch: frames [B, T, D], mask [B, T] (True = holds audio)."""

    frames: np.ndarray
    mask: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # per-clip [B, K] side outputs


def pool_frames(frames: np.ndarray, mask: np.ndarray, pooling: str = "mean", p: float = 3.0) -> np.ndarray:
    """Pool [B, T, D] frames over the masked time axis so padding never leaks into the clip vector."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
    m = mask.astype(np.float32)[..., None]
    n = np.maximum(m.sum(axis=1), 1.0)
    mean = (frames * m).sum(axis=1) / n
    if pooling == "mean":
        return mean.astype(np.float32)
    if pooling == "meanstd":
        var = (((frames - mean[:, None, :]) ** 2) * m).sum(axis=1) / n
        return np.concatenate([mean, np.sqrt(var)], axis=1).astype(np.float32)
    # GeM needs non-negative inputs: shift each clip's own negative dims (never the batch's, so a clip's vector
    # does not depend on what it was batched with); post-ReLU features such as YAMNet's are left as they are.
    low = np.minimum(np.where(mask[..., None], frames, np.inf).min(axis=1, keepdims=True), 0.0)
    shifted = np.maximum(frames - low, 0.0) + 1e-6
    gem = ((shifted**p) * m).sum(axis=1) / n
    return (gem ** (1.0 / p)).astype(np.float32)


class Encoder:
    """Batch of mono float32 waveforms at `sample_rate` -> clip embeddings [B, dim]."""

    name: str = ""
    sample_rate: int = 16000
    frame_dim: int = 0  # dimension of one frame before pooling
    supports_text: bool = False
    # "clap": embed_text gives vectors in the audio space; "tags": text maps onto stored AudioSet tag scores. Recorded
    # in index.json; simsearch.search.text.text_space reads it for text search, zero-shot labels and the app.
    text_space: str | None = None
    checkpoint: str | None = None
    pooling: str = "mean"
    min_seconds: float = 0.1  # clicks shorter than this are zero-padded so every front end gets whole frames
    loudness: float | None = None  # gated level (dBFS) each clip is scaled to before the front end; None: as is
    trim: float | None = None  # cut lead-in / tail more than this many dB under the gated level; None: keep
    bandwidth: float | None = None  # low-pass (Hz) every clip to, so band-limited copies match; None: full band
    noise_twin: float | None = None  # SNR (dB) of a pink-noise copy embedded beside each clip; None: no twin
    room_twin: float | None = None  # reverb time (s) of a simulated-room copy embedded beside each clip; None: none
    backend: str | None = None  # runtime of a model that has several (simsearch.encoders.backends); None: one runtime

    @property
    def precision(self) -> str:
        """Arithmetic of the forward pass, recorded in index.json: bfloat16 autocast on CUDA, else float32."""
        return "bfloat16" if str(getattr(self, "device", "cpu")).startswith("cuda") else "float32"

    @property
    def dim(self) -> int:
        """Clip embedding size after pooling."""
        return self.frame_dim * (2 if self.pooling == "meanstd" else 1)

    def embed_frames(self, batch: list[np.ndarray]) -> FrameOutput:
        """Frame-level features; encoders with only a clip vector return T=1."""
        raise NotImplementedError

    def embed_batch(self, batch: list[np.ndarray], query: bool = False) -> dict[str, np.ndarray]:
        """Pooled embedding plus any side outputs (e.g. tag scores), one row per clip; a query leaves out the
        views only index rows carry (the room twin)."""
        batch = [self.condition(x) for x in batch]
        n = int(self.min_seconds * self.sample_rate)
        batch = [x if len(x) >= n else np.pad(x, (0, n - len(x))) for x in batch]
        out = self.embed_frames(batch)
        emb = pool_frames(out.frames, out.mask, self.pooling)
        twins = self.twin_views(batch, query)
        if twins:
            from simsearch.vectors import normalize

            emb = normalize(emb)
            for views in twins:
                out_twin = self.embed_frames(views)
                emb = emb + normalize(pool_frames(out_twin.frames, out_twin.mask, self.pooling))
        return {"embedding": emb, **out.extras}

    def twin_views(self, batch: list[np.ndarray], query: bool = False) -> list[list[np.ndarray]]:
        """Fixed changed copies of the clips embedded beside them: pink noise at `noise_twin` dB SNR (rows and
        queries), the clip played in one simulated room of `room_twin` s reverb time (rows only: a plain query then
        finds both a row's dry and its room view, about as well as a twinned query, at no cost to queries). A clip and a
        changed copy of it then share part of their vector, so the change moves a query less far from its
        original."""
        from simsearch.audio.perturb import add_noise, room_recording

        views = []
        if self.noise_twin is not None:
            views.append([add_noise(x, self.noise_twin, np.random.default_rng(TWIN_SEED), "pink") for x in batch])
        if self.room_twin is not None and not query:
            views.append([room_recording(x, self.sample_rate, None, self.room_twin, room=TWIN_ROOM) for x in batch])
        return views

    @property
    def row_views(self) -> bool:
        """Whether its index rows carry a view its queries leave out (the room twin, see twin_views)."""
        return self.room_twin is not None

    def condition(self, x: np.ndarray) -> np.ndarray:
        """The same extent, band and level for every copy of a sound: trim silence, band-limit, normalise loudness."""
        if self.trim is not None:
            x = trim_silence(x, self.sample_rate, self.trim)
        if self.bandwidth is not None:
            x = band_limit(x, self.sample_rate, self.bandwidth)
        if self.loudness is not None:
            x = normalize_loudness(x, self.sample_rate, self.loudness)
        return x

    def embed_audio(self, batch: list[np.ndarray], query: bool = False) -> np.ndarray:
        """Clip embeddings [B, dim] float32 (not normalised; the index normalises)."""
        return self.embed_batch(batch, query)["embedding"]

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Text embeddings in the audio space, for audio-text models only."""
        raise NotImplementedError(f"encoder {self.name!r} has no text tower")

    def describe(self) -> dict:
        """What index.json records about this encoder."""
        return {
            "name": self.name,
            "checkpoint": self.checkpoint,
            "sample_rate": self.sample_rate,
            "dim": self.dim,
            "pooling": self.pooling,
            "loudness": self.loudness,
            "trim": self.trim,
            "bandwidth": self.bandwidth,
            "noise_twin": self.noise_twin,
            "room_twin": self.room_twin,
            "text_space": self.text_space,
            "backend": self.backend,
            "precision": self.precision,
        }


def torch_setup(name: str, pooling: str, device: str):
    """The checks every own torch encoder makes first: a known pooling, and a CUDA device only where torch sees one;
    returns the torch.device."""
    import torch

    from simsearch.errors import SimsearchError

    if pooling not in POOLINGS:
        raise SimsearchError(f"{name}: unknown pooling {pooling!r}; choose one of {POOLINGS}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SimsearchError("device 'cuda' asked for, but torch sees no CUDA GPU; use --device cpu")
    return dev
