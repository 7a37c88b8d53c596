"""What the running app serves: only rows of its indexes, never a file beside them; and its clean-up on SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf

pytest.importorskip("gradio")
httpx = pytest.importorskip("httpx")

from conftest import noise, tone, write  # noqa: E402
from gradio_client import Client  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from simsearch.app.service import Limits
from simsearch.app.ui import build_app, launch
from simsearch.indexing.job import run_index
from simsearch.indexing.options import IndexOptions

REPO = Path(__file__).resolve().parents[1]
SECRET = b"-----BEGIN OPENSSH PRIVATE KEY----- not a real key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plant_secrets(folder: Path) -> list[Path]:
    """Files that sit beside indexed audio but are not rows of the index."""
    (folder / ".ssh").mkdir(parents=True, exist_ok=True)
    (folder / ".ssh" / "id_rsa").write_bytes(SECRET)
    (folder / "notes.txt").write_text("private notes\n")
    return [folder / ".ssh" / "id_rsa", folder / "notes.txt"]


def index(src: Path, out: Path) -> Path:
    run_index(src, out, IndexOptions(encoder="spectral", progress=False, num_workers=1))
    return out


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """A folder index and a manifest index (built inside the manifest's folder), each with files planted beside."""
    root = tmp_path_factory.mktemp("security")
    corpus = root / "corpus"
    for i in range(3):
        write(corpus / "low" / f"low{i}.wav", tone(220 + 5 * i, 1.0, seed=i))
        write(corpus / "noise" / f"noise{i}.wav", noise(1.0, seed=20 + i))
    write(corpus / "long" / "long.wav", tone(440, 25.0, seed=6))  # 10 s windows: rows at 0, 10, 20 s
    m = root / "m"
    for i in range(2):
        write(m / "audio" / f"a{i}.wav", tone(300 + 50 * i, 1.0, seed=30 + i))
    pd.DataFrame({"path": ["audio/a0.wav", "audio/a1.wav"], "label": ["a", "b"]}).to_csv(m / "sounds.csv", index=False)
    ix_folder, ix_manifest = index(corpus, root / "ix_folder"), index(m / "sounds.csv", m / "ix_manifest")
    # planted after indexing: a key, notes, and audio beside the indexed audio that is not in the index
    beside = [*plant_secrets(corpus), *plant_secrets(m), write(corpus / "low" / "late.wav", tone(250, 1.0)),
              write(m / "audio" / "late.wav", tone(350, 1.0)), m / "sounds.csv", m / "ix_manifest" / "index.json",
              ix_folder / "index.json", *sorted((m / "ix_manifest").rglob("*.parquet"))[:1]]
    demo = build_app([ix_folder, ix_manifest], Limits(max_upload_mb=1.0, max_duration_s=30.0), warm=False)
    _, url, _ = launch(demo, host="127.0.0.1", port=free_port(), block=False, quiet=True)
    yield demo, url.rstrip("/"), corpus, m, beside
    demo.close()


def test_files_beside_indexed_audio_are_refused_by_the_file_route(app):
    _, url, corpus, m, beside = app
    assert any(p.name == "id_rsa" for p in beside) and all(p.is_file() for p in beside)
    for target in [*beside, corpus / "low" / "low0.wav", m / "audio" / "a0.wav"]:  # sources: copies play instead
        r = httpx.get(f"{url}/gradio_api/file={target.resolve()}")
        assert r.status_code in (403, 404), (target, r.status_code)
        assert SECRET not in r.content and b"private notes" not in r.content


def test_result_audio_serves_index_rows_only(app):
    demo, url, corpus, m, _ = app
    c = Client(url, verbose=False, analytics_enabled=False)
    for name in ("ix_folder", "ix_manifest"):
        rows = demo.simsearch_pool.get(name).index.rows
        for bad in [int(rows["id"].max()) + 1, -1]:
            with pytest.raises(AppError, match="has no row"):
                c.predict(name, bad, api_name="/result_audio")
        row = rows.iloc[0]
        clip = c.predict(name, int(row["id"]), api_name="/result_audio")
        assert sf.info(clip).frames > 0
    with pytest.raises(Exception, match="not in the list of choices"):  # the index picker knows its names
        c.predict("../../etc", 0, api_name="/result_audio")
    # a window row of a long file comes back as that window only
    rows = demo.simsearch_pool.get("ix_folder").index.rows
    mid = rows[rows["path"].str.endswith("long.wav") & (rows["offset_s"] == 10.0)].iloc[0]
    y, sr = sf.read(c.predict("ix_folder", int(mid["id"]), api_name="/result_audio"))
    assert len(y) == round(mid["duration_s"] * sr) < sf.info(str(corpus / "long" / "long.wav")).frames


def test_an_indexed_path_swapped_for_a_link_is_refused(app, tmp_path):
    """A row's file replaced after indexing by a link to a key (inside the folder) or to a file outside it."""
    demo, url, corpus, m, _ = app
    c = Client(url, verbose=False, analytics_enabled=False)
    rows = demo.simsearch_pool.get("ix_manifest").index.rows
    a1 = m / "audio" / "a1.wav"
    row_id = int(rows[rows["path"] == str(a1.resolve())]["id"].item())
    outside = write(tmp_path / "outside.wav", tone(500, 1.0))
    saved = a1.read_bytes()
    try:
        for target, message in [(m / ".ssh" / "id_rsa", "no longer readable audio"), (outside, "outside the indexed")]:
            a1.unlink()
            a1.symlink_to(target)
            with pytest.raises(AppError, match=message):
                c.predict("ix_manifest", row_id, api_name="/result_audio")
    finally:
        a1.unlink()
        a1.write_bytes(saved)


def wait_for(url: str, proc: subprocess.Popen, deadline_s: float = 180.0) -> None:
    """Poll until the app answers (or the process dies); a start-up deadline, not a timing assertion."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"the app exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("the app did not start")


def test_sigterm_removes_the_clip_folder(app, tmp_path):
    """Issue 16: simsearch-app-clips-* folders stayed behind after SIGTERM."""
    demo, *_ = app
    ix = demo.simsearch_pool.get("ix_folder").index.dir.root
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp), "GRADIO_TEMP_DIR": str(tmp / "gradio"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    log = (tmp_path / "app.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "simsearch", "serve", "--index", str(ix), "--port", str(port)],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for(url, proc)
        rows = json.loads(Client(url, verbose=False, analytics_enabled=False).predict("ix_folder",
                                                                                       api_name="/index_info"))
        assert rows["name"] == "ix_folder"
        long_id = int(demo.simsearch_pool.get("ix_folder").index.rows.query("offset_s == 10.0")["id"].iloc[0])
        Client(url, verbose=False, analytics_enabled=False).predict("ix_folder", long_id, api_name="/result_audio")
        clip_dirs = list(tmp.glob("simsearch-app-clips-*"))
        assert len(clip_dirs) == 1 and any(clip_dirs[0].iterdir())  # the cut window is there
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM, (tmp_path / "app.log").read_text()[-3000:]
        assert not list(tmp.glob("simsearch-app-clips-*"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
