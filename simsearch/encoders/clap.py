"""CLAP (LAION, via transformers): audio and text towers projected into one space, both L2-normalised.

`checkpoint` is a hub id (default laion/clap-htsat-unfused) or a folder written by `save_pretrained`
holding the model and its processor (feature extractor + RoBERTa tokenizer). Audio is 48 kHz.

Front end, and how we keep it deterministic
-------------------------------------------
We follow the checkpoint's saved feature-extractor config: 10-s inputs (`nb_max_samples`), log-mel
dB with 64 bands, n_fft 1024, hop 480, f_min/f_max from the config, short clips filled by its
`padding` mode ("repeatpad": tile the clip, then zero-pad). `ClapFeatureExtractor` draws random
numbers in two places, which would make an index depend on chance and on batch composition:

* unfused checkpoints (`truncation="rand_trunc"`) crop clips longer than 10 s at a random offset.
  We take the centre 10 s instead (indexing normally feeds windows of at most 10 s, so this is
  rarely used);
* fused checkpoints (`truncation="fusion"`) build, for clips longer than 10 s, a 4-channel input
  (the whole mel squeezed to 10 s + 3 crops drawn at random from the front, middle and back thirds);
  we take the centre crop of each third. And when no clip in a batch is longer than 10 s the
  extractor marks one clip *at random* as "longer", which switches the fusion branch on for that
  clip only. We instead pass `is_longer` = (clip is longer than 10 s), so a clip's embedding never
  depends on the other clips in its batch.

Short clips and centre-cropped clips go through `ClapFeatureExtractor` itself on CPU. On CUDA (or
with `torch_features=True`) the same log-mel is computed on the device with `torch.stft` and a
torchaudio mel filter bank built from the saved parameters (slaney scale + norm for "rand_trunc",
HTK without norm for "fusion", as the extractor does); the numpy extractor does about 24 ten-second
clips/s, far below what the audio tower runs on a GPU.

Audio frames: T=1, `get_audio_features(...).pooler_output` (projected) L2-normalised; `embed_text`
gives `get_text_features(...).pooler_output` L2-normalised, so cosine between them is meaningful.
On CUDA the towers run under bfloat16 autocast (the log-mel itself is computed in float32).
"""
from __future__ import annotations

import numpy as np

from simsearch.encoders.base import Encoder, FrameOutput
from simsearch.encoders.hub import (
    autocast_context,
    embed_texts,
    load_config,
    load_model,
    load_text_processor,
    start_one_vector,
    to_device,
    to_numpy,
)
from simsearch.errors import SimsearchError


class ClapEncoder(Encoder):
    """LAION CLAP audio + text towers; see the module docstring for the deterministic front end."""

    sample_rate = 48000
    supports_text = True
    text_space = "clap"

    def __init__(self, name: str = "clap", checkpoint: str | None = None, device: str = "cpu",
                 pooling: str = "mean", torch_features: bool | None = None, layer: int | None = None):
        source, local_only = start_one_vector(self, name, checkpoint, device, pooling, layer,
                                              "CLAP gives one projected clip vector")
        self.config = load_config(name, source, local_only, ("clap",))
        self.processor = load_text_processor(name, source, local_only, "ClapProcessor")
        self.feature_extractor, self.tokenizer = self.processor.feature_extractor, self.processor.tokenizer
        self.model = load_model(name, source, local_only, self.config).to(self.device).eval()

        fe = self.feature_extractor
        self.sample_rate = int(fe.sampling_rate)
        self.frame_dim = int(self.config.projection_dim)
        self.max_samples = int(fe.nb_max_samples)
        self.truncation = fe.truncation
        self.padding = fe.padding
        if self.truncation not in ("fusion", "rand_trunc"):
            raise SimsearchError(f"{name}: unsupported truncation {self.truncation!r} in {self.checkpoint}")
        self.fusion = self.truncation == "fusion"
        self.torch_features = self.device.type == "cuda" if torch_features is None else bool(torch_features)
        self._mel_fb = None

    def describe(self) -> dict:
        return {**super().describe(), "truncation": self.truncation, "crop": "center"}

    # -- waveform preparation (shared by both front ends)

    def _fill(self, x: np.ndarray) -> np.ndarray:
        """Bring a clip of at most max_samples to exactly max_samples with the checkpoint's padding mode."""
        n, m = len(x), self.max_samples
        if n >= m:
            return x[:m]
        if self.padding == "repeat":
            x = np.tile(x, m // n + 1)[:m]
        elif self.padding == "repeatpad":
            x = np.tile(x, m // n)
        return np.pad(x, (0, m - len(x)))

    def _center_crop(self, x: np.ndarray) -> np.ndarray:
        start = (len(x) - self.max_samples) // 2
        return x[start: start + self.max_samples]

    def _fusion_stack(self, mel):
        """Deterministic ClapFeatureExtractor._random_mel_fusion: [frames, n_mels] -> ([4, chunk, n_mels], longer).

        The random crop offsets in each third of the clip become the centre offset of that third.
        """
        import torch

        chunk = self.max_samples // self.feature_extractor.hop_length + 1
        total = mel.shape[0]
        if total <= chunk:  # only a few samples over 10 s: the extractor stacks the mel 4 times, "not longer"
            return mel[:chunk].expand(4, -1, -1), False
        starts = [int(np.median(r)) if len(r) else 0 for r in np.array_split(np.arange(total - chunk + 1), 3)]
        crops = [mel[s: s + chunk] for s in starts]
        shrink = torch.nn.functional.interpolate(mel[None, None], size=[chunk, mel.shape[1]], mode="bilinear",
                                                 align_corners=False)[0, 0]
        return torch.stack([shrink, *crops]), True

    # -- log-mel on the torch device

    def mel_filters(self):
        """[n_freqs, n_mels] torchaudio filter bank with the saved extractor's parameters, on the device."""
        if self._mel_fb is None:
            import torchaudio.functional as AF

            fe = self.feature_extractor
            scale = "htk" if self.fusion else "slaney"
            fb = AF.melscale_fbanks(int(fe.nb_frequency_bins), float(fe.frequency_min), float(fe.frequency_max),
                                    int(fe.feature_size), int(fe.sampling_rate),
                                    norm=None if self.fusion else "slaney", mel_scale=scale)
            self._mel_fb = fb.to(self.device)
        return self._mel_fb

    def torch_logmel(self, waves):
        """[B, N] float32 tensor on the device -> [B, frames, n_mels] log-mel dB, as ClapFeatureExtractor does."""
        import torch

        fe = self.feature_extractor
        n_fft = int(fe.fft_window_size)
        window = torch.hann_window(n_fft, periodic=True, device=waves.device, dtype=torch.float32)
        with torch.autocast(waves.device.type, enabled=False):
            spec = torch.stft(waves.float(), n_fft=n_fft, hop_length=int(fe.hop_length), win_length=n_fft,
                              window=window, center=True, pad_mode="reflect", return_complex=True)
            power = spec.real.square() + spec.imag.square()  # [B, n_freqs, frames]
            mel = torch.einsum("bft,fm->btm", power, self.mel_filters())
            return 10.0 * torch.log10(mel.clamp_min(1e-10))

    # -- features

    def features(self, batch: list[np.ndarray]):
        """(input_features [B, C, frames, n_mels] float32, is_longer [B, 1] bool), both on the device.

        C is 4 for fusion checkpoints, else 1. `is_longer` is True only for clips whose mel is longer
        than the 10-s window (fusion checkpoints use it to switch their fusion branch on).
        """
        import torch

        batch = [np.asarray(x, dtype=np.float32).reshape(-1) for x in batch]
        batch = [x if len(x) else np.zeros(1, np.float32) for x in batch]  # repeat-padding needs a sample
        # Clips the extractor would treat with random numbers (fusion of long clips) we prepare ourselves.
        fused = [self.fusion and len(x) > self.max_samples for x in batch]
        if self.torch_features:
            feats, longer = self._torch_features(batch, fused)
        else:
            feats, longer = self._numpy_features(batch, fused)
        is_longer = torch.tensor([[flag] for flag in longer], dtype=torch.bool)
        return feats, self._to_device(is_longer)

    def _crop(self, x: np.ndarray) -> np.ndarray:
        return self._center_crop(x) if len(x) > self.max_samples else x

    def _numpy_features(self, batch, fused):
        import torch

        fe = self.feature_extractor
        out: list = [None] * len(batch)
        longer = [False] * len(batch)
        easy = [i for i in range(len(batch)) if not fused[i]]
        if easy:
            state = np.random.get_state()  # the extractor draws a random "longer" clip; keep global RNG untouched
            try:
                feats = fe([self._crop(batch[i]) for i in easy], sampling_rate=self.sample_rate,
                           return_tensors="np")["input_features"]
            finally:
                np.random.set_state(state)
            for j, i in enumerate(easy):
                out[i] = torch.from_numpy(np.asarray(feats[j], dtype=np.float32))
        for i in range(len(batch)):
            if fused[i]:
                mel = fe._np_extract_fbank_features(batch[i].astype(np.float64), fe.mel_filters)
                out[i], longer[i] = self._fusion_stack(torch.from_numpy(np.asarray(mel, dtype=np.float32)))
        return self._to_device(torch.stack(out)), longer

    def _torch_features(self, batch, fused):
        import torch

        out: list = [None] * len(batch)
        longer = [False] * len(batch)
        easy = [i for i in range(len(batch)) if not fused[i]]
        if easy:
            waves = np.stack([self._fill(self._crop(batch[i])) for i in easy])
            mel = self.torch_logmel(self._to_device(torch.from_numpy(waves)))  # [b, frames, n_mels]
            mel = mel[:, None].expand(-1, 4 if self.fusion else 1, -1, -1)
            for j, i in enumerate(easy):
                out[i] = mel[j]
        for i in range(len(batch)):
            if fused[i]:
                mel = self.torch_logmel(self._to_device(torch.from_numpy(batch[i]))[None])[0]
                out[i], longer[i] = self._fusion_stack(mel)
        return torch.stack(out).contiguous(), longer

    def _to_device(self, t):
        return to_device(t, self.device)

    # -- towers

    def embed_frames(self, batch: list[np.ndarray]) -> FrameOutput:
        import torch

        if len(batch) == 0:
            return FrameOutput(np.zeros((0, 1, self.frame_dim), np.float32), np.zeros((0, 1), bool))
        with torch.inference_mode():
            feats, is_longer = self.features(batch)
            with autocast_context(self.device):
                out = self.model.get_audio_features(input_features=feats, is_longer=is_longer)
            emb = torch.nn.functional.normalize(out.pooler_output.float(), dim=-1)
        frames = to_numpy(emb)[:, None, :]
        return FrameOutput(np.ascontiguousarray(frames), np.ones(frames.shape[:2], dtype=bool))

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """[len(texts), projection_dim] float32, unit norm, in the same space as the audio embeddings."""
        return embed_texts(self, texts, lambda ids, mask: self.model.get_text_features(
            input_ids=ids, attention_mask=mask).pooler_output)
