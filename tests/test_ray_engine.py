"""`--engine ray` on a local two-CPU Ray: the same rows (path, offset, embedding) as the local engine."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import noise, tone, write

from simsearch.indexing.job import run_index
from simsearch.indexing.options import IndexOptions
from simsearch.search.index import Index
from simsearch.store.folder import IndexDir

pytest.importorskip("ray.data", reason='needs Ray: pip install "simsearch[ray]"')


def rows(out):
    t = IndexDir(out).live_rows(["path", "offset_s", "duration_s", "label", "embedding", "landmarks"]).to_pandas()
    return t.sort_values(["path", "offset_s"]).reset_index(drop=True)


@pytest.mark.ray
# the second and third: actors get the map, and the network trained on the collection
@pytest.mark.parametrize("encoder", ["spectral", "whiten(spectral)+onset-envelope", "spectral+copynet"])
def test_ray_engine_writes_the_same_rows_as_the_local_engine(class_folder, tmp_path, encoder):
    import ray

    write(class_folder / "long" / "rec.wav", np.concatenate([tone(440, 9.0), noise(8.0, seed=5)]))  # 5 windows
    (class_folder / "bad.wav").write_bytes(b"not audio")
    local = run_index(class_folder, tmp_path / "local",
                      IndexOptions(encoder=encoder, num_workers=0, progress=False, window_s=4.0, copynet_steps=3))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # the two workers; embed_files_ray joins it
    try:
        dist = run_index(class_folder, tmp_path / "ray",
                         IndexOptions(encoder=encoder, engine="ray", progress=False, window_s=4.0, shard_rows=4,
                                      copynet_steps=3))
    finally:
        ray.shutdown()
    assert (dist.indexed, dist.errors, dist.rows) == (local.indexed, local.errors, local.rows) == (13, 1, 17)
    assert [e["path"] for e in dist.error_list] == [e["path"] for e in local.error_list]
    a, b = rows(tmp_path / "local"), rows(tmp_path / "ray")
    assert a[["path", "offset_s", "duration_s", "label"]].equals(b[["path", "offset_s", "duration_s", "label"]])
    np.testing.assert_allclose(np.stack(a["embedding"]), np.stack(b["embedding"]), atol=1e-4)
    assert a["landmarks"].tolist() == b["landmarks"].tolist() and all(len(x) for x in b["landmarks"])
    assert len(IndexDir(tmp_path / "ray").shard_paths()) > 1  # written through the same sharded writer
    hit = Index.open(tmp_path / "ray").search(audio=str(class_folder / "high" / "high1.flac"), k=1)[0]
    assert hit["path"].endswith("high1.flac") and hit["score"] > 0.999
