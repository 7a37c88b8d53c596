"""Kill -9 mid-job, two writers, readers during an update: nothing lost, nothing duplicated, never a mix."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import noise, tone, write

from simsearch.cli.core import main
from simsearch.search.index import Index
from simsearch.store.folder import IndexDir

N_FILES = 48


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash") / "src"
    for i in range(N_FILES):
        x = tone(200 + 37 * i, 0.6, seed=i) if i % 2 else noise(0.6, seed=i)
        write(root / f"c{i % 3}" / f"clip{i:03d}.wav", x)
    return root


def index_cmd(src, out) -> list[str]:
    return [sys.executable, "-m", "simsearch", "index", str(src), "--out", str(out), "--encoder", "spectral",
            "-q", "--workers", "0", "--batch-size", "2", "--shard-rows", "3"]


def snapshot(out) -> dict:
    t = IndexDir(out).live_rows().to_pandas()
    return {(p, o): np.asarray(e) for p, o, e in zip(t["path"], t["offset_s"], t["embedding"])}


@pytest.fixture(scope="module")
def clean(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "ix"
    subprocess.run(index_cmd(corpus, out), check=True, capture_output=True, timeout=300)
    return snapshot(out)


def test_sigkill_at_any_moment_then_rerun_equals_clean_run(corpus, clean, tmp_path):
    out = tmp_path / "ix"
    kills = 0
    for extra in (0.0, 0.03, 0.0, 0.07):  # kill right after a shard lands, or a little later (mid-batch)
        before = len(IndexDir(out).shard_paths())
        proc = subprocess.Popen(index_cmd(corpus, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and len(IndexDir(out).shard_paths()) <= before:
            time.sleep(0.005)
        time.sleep(extra)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 2, "the job finished before it could be killed; the test proves nothing"
    assert len(IndexDir(out).live_rows()) > 0  # killed runs left finished shards behind
    r = subprocess.run(index_cmd(corpus, out), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    got = snapshot(out)
    assert len(IndexDir(out).live_rows()) == len(got) == len(clean) == N_FILES  # no duplicate rows
    assert got.keys() == clean.keys()
    for key in clean:
        np.testing.assert_allclose(got[key], clean[key], rtol=1e-5, atol=1e-6)
    assert not list(out.rglob(".*.tmp"))
    assert Index.open(out).faiss.ntotal == N_FILES


def test_second_writer_is_refused(corpus, tmp_path, capsys):
    out = tmp_path / "ix"
    with IndexDir(out).lock():
        assert main(["index", str(corpus), "--out", str(out), "--encoder", "spectral", "-q"]) == 2
    assert "another job is writing" in capsys.readouterr().err
    assert main(["index", str(corpus), "--out", str(out), "--encoder", "spectral", "-q", "--workers", "0"]) == 0


def test_readers_see_old_or_new_state_never_a_mix(corpus, tmp_path):
    out = tmp_path / "ix"
    corpus = Path(shutil.copytree(corpus, tmp_path / "src"))  # this test changes its source; others share theirs
    assert main(["index", str(corpus), "--out", str(out), "--encoder", "spectral", "-q", "--workers", "0",
                 "--shard-rows", "4"]) == 0
    seen, failures, stop = set(), [], threading.Event()

    def read_loop():
        while not stop.is_set():
            try:
                ix = Index.open(out)  # raises if faiss.index and the shards disagree
                seen.add(len(ix))
            except Exception as e:  # noqa: BLE001 - any failure is what this test looks for
                failures.append(repr(e))

    t = threading.Thread(target=read_loop)
    t.start()
    try:
        for step in range(3):  # grow, change and shrink the source while readers open the index
            write(corpus / "extra" / f"new{step}.wav", tone(5000 + 100 * step, 0.5, seed=100 + step))
            if step == 1:
                write(corpus / "c0" / "clip000.wav", tone(99, 0.6, seed=7))
            if step == 2:
                (corpus / "c1" / "clip001.wav").unlink()
            assert main(["index", str(corpus), "--out", str(out), "--encoder", "spectral", "-q", "--workers", "0",
                         "--shard-rows", "4"]) == 0
    finally:
        stop.set()
        t.join()
    assert not failures, failures[:3]
    assert seen <= {N_FILES, N_FILES + 1, N_FILES + 2}, seen
    assert len(seen) >= 2


def test_corrupt_index_files_give_clear_errors_and_rebuild_restores(corpus, tmp_path, capsys):
    out = tmp_path / "ix"
    main(["index", str(corpus), "--out", str(out), "--encoder", "spectral", "-q", "--workers", "0",
          "--shard-rows", "16"])
    capsys.readouterr()
    faiss_file = IndexDir(out).faiss_file(IndexDir(out).read_info())
    faiss_file.write_bytes(faiss_file.read_bytes()[:100])
    assert main(["search", str(out), "--audio", str(corpus / "c0" / "clip000.wav")]) == 2
    assert "corrupt FAISS index" in capsys.readouterr().err
    shard = IndexDir(out).shard_paths()[0]
    lost = IndexDir(out).read_shard(shard).num_rows
    shard.write_bytes(shard.read_bytes()[:-30])  # bad footer
    assert main(["search", str(out), "--audio", str(corpus / "c0" / "clip000.wav")]) == 2
    assert main(["rebuild", str(out)]) == 0
    err = capsys.readouterr().err
    assert "set aside shard" in err and "quarantine" in err
    n = len(Index.open(out))
    assert n == N_FILES - lost and lost > 0
    assert main(["index", str(corpus), "--out", str(out), "--encoder", "spectral", "-q", "--workers", "0"]) == 0
    assert len(Index.open(out)) == N_FILES
    info = json.loads((out / "index.json").read_text())
    (out / "index.json").write_text(json.dumps({**info, "dim": 1024}))
    assert main(["search", str(out), "--audio", str(corpus / "c0" / "clip000.wav")]) == 2
    assert "1024" in capsys.readouterr().err
    (out / "index.json").write_text('{"encoder": {"name": "yamnet"}, "dim": 1024, "metric": "cosine"}')
    assert main(["search", str(out), "--audio", str(corpus / "c0" / "clip000.wav")]) == 2
    assert "faiss.index" in capsys.readouterr().err
    os.unlink(out / "index.json")
    assert main(["info", str(out)]) == 2
