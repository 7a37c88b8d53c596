"""A corpus of hostile files: each bad one is recorded and skipped, every good one indexed."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import wave
from contextlib import contextmanager

import numpy as np
import pytest
import soundfile as sf
from conftest import noise, tone, write

from simsearch.cli.core import main
from simsearch.store.folder import IndexDir

GOOD = {"pcm8.wav", "six_channels.wav", "hi_rate_384k.wav", "normal.flac", "float_ok.wav"}
BAD = {"zero.wav": "empty", "trunc_header.wav": "not a readable audio file", "random.wav": "not a readable",
       "text.mp3": "not a readable", "nan.wav": "NaN", "inf.wav": "NaN", "one_sample.wav": "too short",
       "dir.wav": "directory", "broken_link.wav": "broken"}


def make_corpus(root):
    root.mkdir()
    write(root / "pcm8.wav", tone(440, 0.5, 8000), 8000, subtype="PCM_U8")
    write(root / "six_channels.wav", np.stack([tone(300 + 50 * c, 0.5, seed=c) for c in range(6)], axis=1))
    write(root / "hi_rate_384k.wav", tone(1000, 0.3, 384000), 384000)
    write(root / "normal.flac", tone(660, 0.7, 44100), 44100)
    write(root / "float_ok.wav", tone(880, 0.5), subtype="FLOAT")
    (root / "zero.wav").write_bytes(b"")
    good_bytes = (root / "normal.flac").read_bytes()
    wav = root / "tmp_full.wav"
    write(wav, tone(440, 0.5))
    (root / "trunc_header.wav").write_bytes(wav.read_bytes()[:20])
    wav.unlink()
    (root / "random.wav").write_bytes(np.random.default_rng(3).bytes(8000))
    (root / "text.mp3").write_text("ID3? no, just a text file pretending to be an mp3\n" * 20)
    x = tone(440, 0.5)
    x[100] = np.nan
    write(root / "nan.wav", x, subtype="FLOAT")
    y = tone(440, 0.5)
    y[200] = np.inf
    write(root / "inf.wav", y, subtype="FLOAT")
    write(root / "one_sample.wav", np.array([0.5], np.float32))
    (root / "dir.wav").mkdir()
    os.symlink(root / "does_not_exist.wav", root / "broken_link.wav")
    assert good_bytes


def test_hostile_corpus_is_reported_and_the_rest_indexed(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "ix"
    make_corpus(src)
    assert main(["index", str(src), "--out", str(out), "--encoder", "spectral", "-q", "--workers", "1"]) == 0
    summary = capsys.readouterr().out
    assert f"indexed {len(GOOD)} files" in summary and f"errors {len(BAD)}" in summary
    rows = IndexDir(out).live_rows().to_pandas()
    assert {p.rsplit("/", 1)[1] for p in rows["path"]} == GOOD
    assert np.isfinite(np.stack(rows["embedding"])).all()
    errors = {json.loads(line)["path"].rsplit("/", 1)[1]: json.loads(line)["reason"]
              for line in (out / "errors.jsonl").read_text().splitlines()}
    assert set(errors) == set(BAD)
    for name, reason in BAD.items():
        assert reason in errors[name], (name, errors[name])
    assert main(["index", str(src), "--out", str(tmp_path / "strict"), "--encoder", "spectral", "-q",
                 "--strict", "--workers", "0"]) == 2


def test_truncated_data_keeps_what_is_there(tmp_path):
    p = write(tmp_path / "cut.wav", tone(440, 2.0))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])  # header promises 2 s, only 1 s of samples remain
    with sf.SoundFile(str(p)) as f:
        assert f.frames > 0
    out = tmp_path / "ix"
    assert main(["index", str(tmp_path), "--out", str(out), "--encoder", "spectral", "-q"]) == 0
    rows = IndexDir(out).live_rows().to_pandas()
    assert len(rows) == 1 and 0.9 < rows["duration_s"].iloc[0] <= 2.0


def _without_read_override() -> list[str]:
    """As root, drop the capabilities that let root read any file; as a user, permissions apply anyway."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv (util-linux): cannot make a file unreadable to ourselves")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def test_unreadable_file_is_reported(tmp_path):
    src, out = tmp_path / "src", tmp_path / "ix"
    write(src / "ok.wav", tone(440))
    write(src / "secret.wav", tone(550))
    os.chmod(src / "secret.wav", 0o000)
    cmd = [*_without_read_override(), sys.executable, "-m", "simsearch", "index", str(src), "--out", str(out),
           "--encoder", "spectral", "-q", "--workers", "0"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "indexed 1 files" in r.stdout and "errors 1" in r.stdout
    assert "permission denied" in (out / "errors.jsonl").read_text().lower()


def test_one_hour_file_streams_in_bounded_memory(tmp_path):
    """An hour at 16 kHz decodes to 230 MB of float32; streaming windows must never hold it whole."""
    sr = 16000
    path = tmp_path / "hour.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(sr)
        block = (tone(220, 60.0, sr, amp=0.3) * 32767).astype("<i2").tobytes()
        for _ in range(60):
            w.writeframes(block)
    code = (
        "import resource, sys\n"
        "from simsearch.indexing.reader import ReadSettings, stream_chunks\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "n = last = 0\n"
        "for c in stream_chunks([sys.argv[1]], ReadSettings(16000, 10.0, 10.0), num_workers=0):\n"
        "    n += len(c.windows); last = max([w.offset_s for w in c.windows] + [last]); assert c.error is None\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(n, last, (peak - base) // 1024)\n")
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    windows, last, grew_mb = r.stdout.split()
    assert int(windows) == 360 and float(last) == 3590.0
    assert int(grew_mb) < 100, f"reading grew peak RSS by {grew_mb} MB"


class Hung(Exception):
    """Raised by hang_guard's timer."""


@contextmanager
def hang_guard(seconds: int = 60):
    """Turn a hang into a failure: reading a FIFO or /dev/zero used to block or run forever."""
    def fire(*_):  # not an OSError (TimeoutError is one): nothing on the way may swallow it as a read error
        raise Hung(f"still running after {seconds} s: hung on a non-regular file")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)  # and again each second after
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_fifo_and_link_to_a_device_are_skipped_not_hung(tmp_path, capsys):
    src = tmp_path / "src"
    write(src / "ok.wav", tone(440))
    os.mkfifo(src / "pipe.wav")
    os.symlink("/dev/zero", src / "zero.wav")
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path\n{src / 'ok.wav'}\n{src / 'pipe.wav'}\n{src / 'zero.wav'}\n")
    for source in (src, manifest):
        out = tmp_path / f"ix_{source.name}"
        with hang_guard():
            assert main(["index", str(source), "--out", str(out), "--encoder", "spectral", "-q", "--workers", "0"]) == 0
        assert "indexed 1 files" in capsys.readouterr().out
        errors = {json.loads(line)["path"].rsplit("/", 1)[1]: json.loads(line)["reason"]
                  for line in (out / "errors.jsonl").read_text().splitlines()}
        assert errors == {"pipe.wav": "not a regular file: a named pipe (FIFO)",
                          "zero.wav": "not a regular file: a character device"}


def test_unreadable_now_keeps_rows_and_only_absent_files_are_removed(tmp_path):
    src, out = tmp_path / "src", tmp_path / "ix"
    for name in ("a.wav", "b.wav", "sub/c.wav", "sub/d.wav"):
        write(src / name, tone(300 + 100 * len(name) + ord(name[-5]), 0.5))
    assert main(["index", str(src), "--out", str(out), "--encoder", "spectral", "-q", "--workers", "0"]) == 0
    (src / "b.wav").unlink()  # really gone
    os.chmod(src / "sub", 0o000)  # cannot be listed right now
    os.chmod(src / "a.wav", 0o000)  # cannot be read right now
    try:
        cmd = [*_without_read_override(), sys.executable, "-m", "simsearch", "index", str(src), "--out", str(out),
               "--encoder", "spectral", "-q", "--workers", "0"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    finally:
        os.chmod(src / "sub", 0o755)
        os.chmod(src / "a.wav", 0o644)
    assert r.returncode == 0, r.stderr
    assert "removed 1," in r.stdout and "errors 2" in r.stdout, r.stdout
    kept = {p.rsplit("/", 1)[1] for p in IndexDir(out).live_rows(["path"]).column("path").to_pylist()}
    assert kept == {"a.wav", "c.wav", "d.wav"}
    log = (out / "errors.jsonl").read_text()
    assert "kept the 2 indexed files under it" in log and "kept its rows from the last run" in log
    assert main(["index", str(src), "--out", str(out), "--encoder", "spectral", "-q", "--workers", "0"]) == 0
    assert len(IndexDir(out).live_rows()) == 3


def test_the_same_file_listed_three_ways_is_indexed_once(tmp_path, capsys):
    write(tmp_path / "audio" / "x.wav", tone(500))
    write(tmp_path / "audio" / "y.wav", noise(1.0))
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,label\naudio/x.wav,a\n./audio/x.wav,a\n{tmp_path}/audio/../audio/x.wav,a\n"
                        "audio/y.wav,b\naudio//x.wav,b\n")
    out = tmp_path / "ix"
    assert main(["index", str(manifest), "--out", str(out), "--encoder", "spectral", "-q", "--workers", "0"]) == 0
    rows = IndexDir(out).live_rows(["path", "label"]).to_pandas()
    assert sorted(rows["path"]) == [str(tmp_path / "audio" / "x.wav"), str(tmp_path / "audio" / "y.wav")]
    assert rows.set_index("path")["label"][str(tmp_path / "audio" / "x.wav")] == "a"  # the first listing
    assert "listed again in row 6 with other label" in (out / "errors.jsonl").read_text()
    capsys.readouterr()
    assert main(["search", str(out), "--audio", str(tmp_path / "audio" / "x.wav"), "-k", "5", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2


@pytest.mark.parametrize("name, content, says", [
    ("empty.csv", b"", "empty"),
    ("binary.csv", bytes(range(256)) * 20, "not a UTF-8 text CSV"),
    ("corrupt.parquet", b"PAR1" + b"\x07" * 300 + b"PAR1", "not a readable Parquet file"),
    ("quote.csv", b'path,label\n"a.wav,dog\nb.wav,cat\n', "not a readable CSV"),
    ("stray.csv", b'path,label\na.wav,"dog"x\n', "not a readable CSV (line 2"),
    ("fields.csv", b'path,label\na.wav,dog,1\n', "line 2 has 3 fields"),
])
def test_broken_manifests_are_one_line_errors(tmp_path, capsys, name, content, says):
    manifest = tmp_path / name
    manifest.write_bytes(content)
    assert main(["index", str(manifest), "--out", str(tmp_path / "ix"), "--encoder", "spectral", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("simsearch: error:") and says in err[0], err


def test_blank_paths_are_reported_and_integer_metadata_stays_integer(tmp_path, capsys):
    for i in range(3):
        write(tmp_path / f"f{i}.wav", tone(300 + 200 * i))
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,id,code\nf0.wav,a,999,007\n,b,5,1\nf1.wav,a,,1.50\nf2.wav,,7,\n")
    out = tmp_path / "ix"
    assert main(["index", str(manifest), "--out", str(out), "--encoder", "spectral", "-q", "--workers", "0"]) == 0
    assert "indexed 3 files" in capsys.readouterr().out
    rows = IndexDir(out).live_rows(["path", "metadata"]).to_pandas()
    assert not rows["path"].str.endswith("nan").any() and len(rows) == 3
    assert "row 3: blank 'path' cell" in (out / "errors.jsonl").read_text()
    meta = {p.rsplit("/", 1)[1]: json.loads(m) for p, m in zip(rows["path"], rows["metadata"])}
    assert meta == {"f0.wav": {"id": 999, "code": "007"}, "f1.wav": {"code": "1.50"}, "f2.wav": {"id": 7}}
    for flt, want in (("id=999", "f0.wav"), ("code=007", "f0.wav"), ("code=1.50", "f1.wav")):
        capsys.readouterr()
        assert main(["search", str(out), "--audio", str(tmp_path / "f2.wav"), "--filter", flt, "--json"]) == 0
        assert [r["path"].rsplit("/", 1)[1] for r in json.loads(capsys.readouterr().out)] == [want], flt
