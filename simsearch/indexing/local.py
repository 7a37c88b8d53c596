"""The local engine: reader workers decode, the encoder embeds in length-sorted batches, the writer stores."""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from simsearch.encoders import Encoder
from simsearch.indexing.options import IndexOptions
from simsearch.indexing.reader import Chunk, stream_chunks
from simsearch.indexing.sources import Item
from simsearch.indexing.writer import ErrorLog, ShardWriter
from simsearch.store.folder import LANDMARKS, IndexDir

BUCKET_BATCHES = 4  # windows gathered before sorting by length: enough to cut padding, few enough to bound memory


def _embed_pending(enc: Encoder, pending: list, batch_size: int, flush_all: bool) -> list:
    """Embed (item, window_index, samples) in batches of similar length; returns (item, window_index, output).

    Sorting a few batches' worth by length before cutting batches means short clips are not padded to
    the longest one in the queue; the leftover (< one batch) waits for the next round or the final flush.
    """
    if not flush_all and len(pending) < batch_size * BUCKET_BATCHES:
        return []
    pending.sort(key=lambda p: len(p[2]))
    take = len(pending) if flush_all else len(pending) // batch_size * batch_size
    ready, pending[:] = pending[:take], pending[take:]
    done = []
    for s in range(0, len(ready), batch_size):
        batch = ready[s:s + batch_size]
        out = enc.embed_batch([b[2] for b in batch])
        for j, (item, wi, _) in enumerate(batch):
            done.append((item, wi, {k: v[j] for k, v in out.items()}))
    return done


def _embed_files(d: IndexDir, enc: Encoder, todo: list[Item], shas: dict, options: IndexOptions, next_id: int,
                 errors: ErrorLog) -> int:
    """Stream windows through the encoder; a file's rows are written only once all its windows are embedded."""
    if not todo:
        return 0
    extras = {k: v.shape[-1] for k, v in enc.embed_batch([np.zeros(enc.sample_rate, np.float32) + 1e-3]).items()
              if k != "embedding"}
    writer = ShardWriter(d, enc.dim, extras, options.shard_rows, next_id, bool(options.fingerprint))
    pending: list = []  # (item index, window index, samples)
    state: dict[int, dict] = {}  # item index -> {"windows": [(offset, dur)], "out": {wi: output}, "last": bool}
    indexed = 0
    bar = tqdm(total=len(todo), desc=f"embedding ({enc.name})", unit="file", disable=not options.progress)

    def finish_ready() -> None:
        nonlocal indexed
        for i in [i for i, s in state.items() if s["last"] and len(s["out"]) == len(s["windows"])]:
            s = state.pop(i)
            outs = [{**s["out"][k], LANDMARKS: s["landmarks"][k]} for k in range(len(s["windows"]))]
            writer.add_file(todo[i], shas[todo[i].path], s.get("sr", enc.sample_rate), s["windows"], outs)
            indexed += 1
            bar.update(1)

    def absorb(results: list) -> None:
        for i, wi, out in results:
            if i in state:
                state[i]["out"][wi] = out

    chunks = stream_chunks([t.path for t in todo], enc.sample_rate, options.window_s, options.hop_s, options.num_workers,
                           options.max_duration_s, bool(options.fingerprint))
    for chunk in chunks:
        chunk: Chunk
        s = state.setdefault(chunk.item, {"windows": [], "out": {}, "landmarks": [], "last": False})
        if chunk.error:
            state.pop(chunk.item)
            pending[:] = [p for p in pending if p[0] != chunk.item]
            errors.add(todo[chunk.item].path, chunk.error)
            bar.update(1)
            continue
        for w in chunk.windows:
            pending.append((chunk.item, len(s["windows"]), w.samples))
            s["windows"].append((w.offset_s, w.duration_s))
            s["landmarks"].append(w.landmarks)
            s["sr"] = w.source_rate
        s["last"] = chunk.last
        absorb(_embed_pending(enc, pending, options.batch_size, flush_all=False))
        finish_ready()
    absorb(_embed_pending(enc, pending, options.batch_size, flush_all=True))
    finish_ready()
    writer.flush()
    bar.close()
    return indexed

