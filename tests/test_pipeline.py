"""The indexing pipeline's batching: length buckets, batch-size choice, background shard writes."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import tone

from simsearch.encoders import get_encoder
from simsearch.indexing.autobatch import CPU_BATCH, find_batch_size
from simsearch.indexing.local import BUCKET_BATCHES, _embed_pending
from simsearch.indexing.sources import Item
from simsearch.indexing.writer import ShardWriter
from simsearch.store.folder import IndexDir


class RecordingEncoder:
    """The real spectral encoder, noting the clip lengths of every batch it is given."""

    def __init__(self):
        self.enc = get_encoder("spectral", device="cpu")
        self.batches: list[list[int]] = []

    def embed_batch(self, batch):
        self.batches.append([len(x) for x in batch])
        return self.enc.embed_batch(batch)


def test_length_buckets_cut_padding_and_keep_results():
    rec = RecordingEncoder()
    lengths = [1600 * (1 + (i * 7) % 10) for i in range(4 * BUCKET_BATCHES + 3)]  # 0.1..1.0 s, shuffled
    pending = [(i, 0, tone(300 + i, n / 16000, seed=i)) for i, n in enumerate(lengths)]
    clips = {i: x for i, _, x in pending}
    done = _embed_pending(rec, pending, batch_size=4, flush_all=False)
    assert len(done) == 4 * BUCKET_BATCHES and len(pending) == 3  # leftover waits for more or the final flush
    for b in rec.batches:
        assert b == sorted(b) and max(b) / min(b) <= 2.0, rec.batches
    done += _embed_pending(rec, pending, batch_size=4, flush_all=True)
    assert sorted(i for i, _, _ in done) == list(range(len(lengths))) and not pending
    for i, _, out in done[:5]:  # batching with others changes nothing for a clip
        alone = rec.enc.embed_batch([clips[i]])["embedding"][0]
        np.testing.assert_allclose(out["embedding"], alone, rtol=1e-4, atol=1e-5)


def test_fewer_than_a_bucket_waits():
    rec = RecordingEncoder()
    pending = [(i, 0, tone(300, 0.5, seed=i)) for i in range(5)]
    assert _embed_pending(rec, pending, batch_size=4, flush_all=False) == [] and len(pending) == 5


def test_batch_size_on_cpu_is_the_fixed_default():
    assert find_batch_size(get_encoder("spectral", device="cpu"), "cpu", 10.0) == CPU_BATCH


@pytest.mark.gpu
def test_batch_size_on_gpu_is_found():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    b = find_batch_size(get_encoder("spectral", device="cuda"), "cuda", 10.0)
    assert b >= 8 and (b & (b - 1)) == 0


def test_background_writes_are_all_on_disk_after_flush(tmp_path):
    d = IndexDir(tmp_path / "ix")
    w = ShardWriter(d, dim=4, extras={}, shard_rows=3, next_id=0)
    for i in range(10):
        w.add_file(Item(f"/x/{i}.wav", "a"), "sha", 16000, [(0.0, 1.0)], [{"embedding": np.full(4, i, np.float32)}])
    w.flush()
    t = d.live_rows().to_pandas()
    assert len(d.shard_paths()) == 4 and sorted(t["id"]) == list(range(10))
