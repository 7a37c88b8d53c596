"""The indexing pipeline as a Ray Data job: decode on CPU tasks, embed in encoder actors, write shards here.

The driver keeps the local engine's ShardWriter, ErrorLog and "a file is written only once all its windows are
embedded" rule, so the Parquet shards (and then faiss.index) hold the same rows whichever engine made them.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from simsearch.encoders import Encoder, get_encoder
from simsearch.encoders.copynet import load_trained
from simsearch.errors import SimsearchError
from simsearch.indexing.assemble import FileAssembler
from simsearch.indexing.reader import ReadSettings, WindowStream
from simsearch.indexing.writer import ErrorLog, ShardWriter
from simsearch.store.folder import LANDMARKS

log = logging.getLogger(__name__)
DONE, WINDOW, ERROR = 0, 1, 2  # row kinds: end-of-file marker (carries the window count), a window, a bad file


def decode_file(row: dict, settings: ReadSettings) -> Iterator[dict]:
    """One file's windows as rows, then a DONE marker with their count (or one ERROR row); streams long files."""
    base = {"item": int(row["item"]), "offset_s": 0.0, "duration_s": 0.0, "source_rate": 0, "error": "",
            LANDMARKS: b""}
    n = 0
    for chunk in WindowStream([row["path"]], settings).read_file(0):
        if chunk.error:
            yield {**base, "kind": ERROR, "window": -1, "samples": np.zeros(1, np.float32), "error": chunk.error}
            return
        for w in chunk.windows:
            yield {**base, "kind": WINDOW, "window": n, "offset_s": float(w.offset_s), "duration_s": float(w.duration_s),
                   "source_rate": int(w.source_rate), "samples": np.ascontiguousarray(w.samples, np.float32),
                   LANDMARKS: w.landmarks or b""}
            n += 1
    yield {**base, "kind": DONE, "window": n, "samples": np.zeros(1, np.float32)}


class Embedder:
    """A Ray actor holding one encoder; marker and error rows pass through with zero vectors."""

    def __init__(self, name: str, checkpoint: str | None, device: str, options: dict, dims: dict[str, int],
                 root: str | None = None):
        import torch

        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        self.enc = get_encoder(name, checkpoint, device, **options)
        if root:
            load_trained(self.enc, root)  # a copynet part trained on the index's collection
        self.dims = dims

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        real = np.flatnonzero(batch["kind"] == WINDOW)
        out = {k: v for k, v in batch.items() if k != "samples"}
        for name, dim in self.dims.items():
            out[name] = np.zeros((len(batch["kind"]), dim), np.float32)
        if len(real):
            res = self.enc.embed_batch([np.asarray(batch["samples"][i], np.float32) for i in real])
            for name in self.dims:
                out[name][real] = res[name]
        return out


def connect(address: str | None, num_cpus: int | None) -> bool:
    """Join the cluster at `address`, or start a local Ray; True when this call started it (and should stop it)."""
    try:
        import ray
    except ImportError:
        raise SimsearchError('--engine ray needs Ray: pip install "simsearch[ray]" (or "ray[data]")') from None
    if ray.is_initialized():
        return False
    kw = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    if address:
        # Ship this package to the cluster's workers, which may not have it installed.
        ray.init(address=address, runtime_env={"py_modules": [str(Path(__file__).parent)]}, **kw)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **kw)
    return True


def embed_files_ray(d, enc: Encoder, todo: list, shas: dict, options, next_id: int, errors) -> int:
    """Same contract as the local engine: embed `todo`, write their rows through a ShardWriter, return files done."""
    if not todo:
        return 0
    import ray
    import ray.data

    started = connect(options.ray_address, options.num_workers + 1 if options.num_workers else None)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        probe = enc.embed_batch([np.zeros(enc.sample_rate, np.float32) + 1e-3])
        dims = {k: int(v.shape[-1]) for k, v in probe.items()}
        extras = {k: v for k, v in dims.items() if k != "embedding"}
        writer = ShardWriter(d, enc.dim, extras, options.shard_rows, next_id, bool(options.fingerprint))
        ds = ray.data.from_items([{"item": i, "path": t.path} for i, t in enumerate(todo)],
                                 override_num_blocks=min(len(todo), 200))
        ds = ds.flat_map(decode_file, fn_kwargs={"settings": ReadSettings.of(options, enc.sample_rate)})
        ds = ds.map_batches(Embedder, batch_size=options.batch_size, batch_format="numpy", **_actor_resources(options),
                            fn_constructor_kwargs={"name": enc.name if enc.name else options.encoder,
                                                   "checkpoint": options.checkpoint, "device": _actor_device(options),
                                                   "options": {**options.encoder_options(), **_fitted(enc)}, "dims": dims,
                                                   "root": str(d.root)})
        return _collect(ds, todo, shas, writer, errors, enc, options)
    finally:
        if started:
            ray.shutdown()


def _actor_resources(options) -> dict:
    """One actor per GPU when the cluster has GPUs (and the device allows them), else CPU actors on half the cores."""
    import ray
    import ray.data

    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    if gpus and options.device in ("auto", "cuda"):
        return {"num_gpus": 1, "compute": ray.data.ActorPoolStrategy(size=gpus)}
    return {"num_cpus": 1, "compute": ray.data.ActorPoolStrategy(size=max(1, int(res.get("CPU", 1)) // 2))}


def _actor_device(options) -> str:
    import ray

    return "cuda" if ray.cluster_resources().get("GPU", 0) and options.device in ("auto", "cuda") else "cpu"


def _collect(ds, todo: list, shas: dict, writer: ShardWriter, errors: ErrorLog, enc: Encoder, options) -> int:
    """Gather rows per file as they stream back; a file goes to the writer once its marker and all windows are in."""
    bar = tqdm(total=len(todo), desc=f"embedding ({enc.name}, ray)", unit="file", disable=not options.progress)
    files = FileAssembler(writer, todo, shas, errors, bar)
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for j in range(len(batch["kind"])):
            item, kind, index = int(batch["item"][j]), int(batch["kind"][j]), int(batch["window"][j])
            if kind == ERROR:
                files.fail(item, str(batch["error"][j]))
            elif kind == DONE:
                files.total(item, index)
            else:
                files.window(item, index, float(batch["offset_s"][j]), float(batch["duration_s"][j]),
                             int(batch["source_rate"][j]), bytes(batch[LANDMARKS][j]))
                files.output(item, index, {"embedding": batch["embedding"][j],
                                           **{k: batch[k][j] for k in writer.extras}})
    writer.flush()
    bar.close()
    return files.written


def _fitted(enc: Encoder) -> dict:
    """What the actors need beside the recorded options: the index's fitted whitening map, where it has one."""
    path = getattr(enc, "whitening_path", None)
    return {"whitening": path} if path else {}
