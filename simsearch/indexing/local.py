"""The local engine: reader workers decode, the encoder embeds in length-sorted batches, the writer stores."""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from simsearch.encoders import Encoder
from simsearch.indexing.assemble import FileAssembler
from simsearch.indexing.options import IndexOptions
from simsearch.indexing.reader import Chunk, ReadSettings, stream_chunks
from simsearch.indexing.sources import Item
from simsearch.indexing.writer import ErrorLog, ShardWriter
from simsearch.store.folder import IndexDir

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
    bar = tqdm(total=len(todo), desc=f"embedding ({enc.name})", unit="file", disable=not options.progress)
    files = FileAssembler(writer, todo, shas, errors, bar)
    pending: list = []  # (item index, window index, samples) waiting for a batch
    seen: dict[int, int] = {}  # item index -> windows read so far

    def absorb(results: list) -> None:
        for item, index, out in results:
            files.output(item, index, out)

    chunk: Chunk
    for chunk in stream_chunks([t.path for t in todo], ReadSettings.of(options, enc.sample_rate), options.num_workers):
        if chunk.error:
            pending[:] = [p for p in pending if p[0] != chunk.item]
            files.fail(chunk.item, chunk.error)
            continue
        for w in chunk.windows:
            n = seen.get(chunk.item, 0)
            seen[chunk.item] = n + 1
            files.window(chunk.item, n, w.offset_s, w.duration_s, w.source_rate, w.landmarks)
            pending.append((chunk.item, n, w.samples))
        if chunk.last:
            files.total(chunk.item, seen.pop(chunk.item, 0))
        absorb(_embed_pending(enc, pending, options.batch_size, flush_all=False))
    absorb(_embed_pending(enc, pending, options.batch_size, flush_all=True))
    writer.flush()
    bar.close()
    return files.written
