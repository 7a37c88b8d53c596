"""aiSFX sound-effects embedding (512-d) with its real weights from the aisfx pip package.

The aiSFX embedding (ISMIR 2022, "X-Sequential-CE") ships its checkpoint in the `aisfx` package, whose own
code needs librosa/essentia and old pins, so the network (a 4-block VGG-like CNN from the DCASE cross-task
baseline) and its front end are re-implemented here in torch/torchaudio and only the checkpoint file is read.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from simsearch.encoders.base import Encoder, FrameOutput
from simsearch.errors import ModelNotFoundError

AISFX_SR = 44100
AISFX_N_FFT = 2048
AISFX_HOP = 1024  # 23 ms
AISFX_F_MIN, AISFX_F_MAX = 0.0, 22050.0  # mel range of the paper's front end
AISFX_N_MELS = 96
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

