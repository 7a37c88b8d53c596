"""Hostile audio: headers that lie, extreme rates and channel counts, huge declared lengths, NaN, truncated files and
non-audio each give a one-line AudioError or the audio really there, in memory that the header cannot inflate."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import tone, write

from simsearch.audio.decode import decode, iter_windows
from simsearch.cli.core import main
from simsearch.errors import AudioError
from simsearch.store.folder import IndexDir

NOT_AUDIO = "not a readable audio file"
OUT_OF_RANGE = "outside the supported range 1000-768000 Hz"


def wav_header(sr: int, channels: int, data_bytes: int) -> bytes:
    """A 16-bit PCM WAV header that declares data_bytes of samples, whatever really follows it."""
    block = 2 * channels
    return (b"RIFF" + struct.pack("<I", min(36 + data_bytes, 2**32 - 1)) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, channels, sr, sr * block, block, 16)
            + b"data" + struct.pack("<I", data_bytes))


def flac_claiming(path: Path, x: np.ndarray, sr: int, frames: int) -> Path:
    """A FLAC of x whose STREAMINFO says it holds `frames` frames."""
    write(path, x, sr)
    b = bytearray(path.read_bytes())
    # STREAMINFO follows "fLaC" and a 4-byte block header; its bytes 10..17 end in the 36-bit total sample count.
    v = (int.from_bytes(b[18:26], "big") & ~(2**36 - 1)) | frames
    b[18:26] = v.to_bytes(8, "big")
    path.write_bytes(bytes(b))
    return path


def make_hostile(root: Path) -> dict[str, str | None]:
    """Write the hostile corpus under root; name -> the error text it must give, or None when its audio decodes."""
    root.mkdir(parents=True, exist_ok=True)
    t = tone(1000, 1.0, 16000)
    write(root / "rate_22051.wav", tone(1000, 1.0, 22051), 22051)
    write(root / "rate_999983.wav", tone(1000, 0.1, 999983), 999983)
    write(root / "rate_500.wav", tone(100, 1.0, 500), 500)
    write(root / "rate_768000.wav", tone(1000, 0.2, 768000), 768000)
    write(root / "channels_256.wav", np.repeat(tone(500, 0.2)[:, None], 256, axis=1))
    (root / "wav_claims_4gb.wav").write_bytes(wav_header(16000, 1, 2**32 - 100) + (t * 32767).astype("<i2").tobytes())
    (root / "wav_header_only.wav").write_bytes(wav_header(16000, 2, 64000))
    flac_claiming(root / "flac_claims_2e36_frames.flac", t, 16000, 2**36 - 1)
    flac_claiming(root / "flac_claims_40s_holds_4s.flac", tone(300, 4.0), 16000, 40 * 16000)
    full = write(root / "cut_half.flac", tone(440, 4.0), 16000).read_bytes()
    (root / "cut_half.flac").write_bytes(full[: len(full) // 2])
    full = write(root / "cut_half.wav", tone(440, 4.0), 16000).read_bytes()
    (root / "cut_half.wav").write_bytes(full[: len(full) // 2])
    late = tone(440, 70.0)  # NaN after the first read block (2**20 samples, 65.5 s)
    late[68 * 16000] = np.nan
    write(root / "nan_late.wav", late, subtype="FLOAT")
    (root / "png.wav").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    (root / "text.flac").write_text("fLaC? no, a text file with an audio name\n" * 40)
    (root / "zip.mp3").write_bytes(b"PK\x03\x04" + np.random.default_rng(1).bytes(3000))
    (root / "random.ogg").write_bytes(np.random.default_rng(2).bytes(5000))
    (root / "empty.wav").write_bytes(b"")
    return {"rate_22051.wav": None, "rate_999983.wav": OUT_OF_RANGE, "rate_500.wav": OUT_OF_RANGE,
            "rate_768000.wav": None, "channels_256.wav": None, "wav_claims_4gb.wav": None,
            "wav_header_only.wav": "holds no audio frames", "flac_claims_2e36_frames.flac": "over the budget",
            "flac_claims_40s_holds_4s.flac": None, "cut_half.flac": None, "cut_half.wav": None,
            "nan_late.wav": "NaN", "png.wav": NOT_AUDIO, "text.flac": NOT_AUDIO, "zip.mp3": NOT_AUDIO,
            "random.ogg": NOT_AUDIO, "empty.wav": "empty"}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[Path, dict[str, str | None]]:
    root = tmp_path_factory.mktemp("hostile") / "src"
    return root, make_hostile(root)


def outcome(fn) -> str | None:
    """The AudioError's text, or None when fn decoded something."""
    try:
        x = fn()
    except AudioError as e:
        return str(e)
    assert len(x) and np.isfinite(x).all()
    return None


def test_every_hostile_file_decodes_or_names_its_problem(hostile):
    root, expected = hostile
    for name, reason in expected.items():
        got = outcome(lambda: decode(root / name, 16000))
        if reason is None:
            assert got is None, (name, got)
        else:
            assert got is not None and reason in got and name in got, (name, got)
        # Bytes take the same road (an empty buffer has its own message).
        got_bytes = outcome(lambda: decode((root / name).read_bytes(), 16000))
        assert (got_bytes is None) == (reason is None), (name, got_bytes)
        # ... and so do the indexer's windows.
        got_windows = outcome(lambda: np.concatenate([w.samples for w in iter_windows(root / name, 16000)]))
        assert (got_windows is None) == (reason is None), (name, got_windows)


def test_what_lying_and_cut_files_really_hold_is_kept(hostile):
    root, _ = hostile
    x = decode(root / "rate_22051.wav", 16000)
    assert len(x) == 16000  # exact length even where the ratio 16000/22051 is approximated
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    assert abs(np.fft.rfftfreq(len(x), 1 / 16000)[spec.argmax()] - 1000) < 2
    assert len(decode(root / "wav_claims_4gb.wav", 16000)) == 16000
    assert 3.9 * 16000 < len(decode(root / "flac_claims_40s_holds_4s.flac", 16000)) <= 4 * 16000
    assert 1.0 * 16000 < len(decode(root / "cut_half.flac", 16000)) < 2.1 * 16000
    ws = list(iter_windows(root / "flac_claims_40s_holds_4s.flac", 16000, window_s=1.0))
    assert [w.offset_s for w in ws] == [0.0, 1.0, 2.0, 3.0]  # and no windows for the 36 s that are not there


def test_budget_is_checked_from_the_header_before_decoding(tmp_path):
    p = write(tmp_path / "eight.flac", np.repeat(tone(300, 2.0)[:, None], 8, axis=1))
    with pytest.raises(AudioError, match=r"32000 frames x 8 channels = 256000 samples to decode, over the budget"):
        decode(p, 16000, budget=100_000)
    with pytest.raises(AudioError, match="over the budget"):
        list(iter_windows(p, 16000, budget=100_000))
    assert len(decode(p, 16000, max_seconds=0.5, budget=100_000)) == 8000  # only what is read counts
    low = write(tmp_path / "low.wav", tone(100, 2.0, 1000), 1000)  # 2000 frames become 32000 samples at 16 kHz
    with pytest.raises(AudioError, match="32000 samples at 16000 Hz, over the budget of 10000"):
        decode(low, 16000, budget=10_000)


def test_query_length_cap_reads_only_the_head(tmp_path, caplog):
    p = write(tmp_path / "long.wav", tone(220, 30.0))
    x = decode(p, 16000, max_seconds=12.5)
    assert len(x) == 200_000 and "using its first 12 s" in caplog.text
    assert np.allclose(x, decode(p, 16000)[:200_000])
    assert len(decode(tone(220, 30.0), 16000, max_seconds=2.0)) == 32000


def test_index_records_hostile_files_and_goes_on(hostile, tmp_path):
    """The 999983 Hz file used to kill `simsearch index` (a 64 GB kernel); now every bad file is one errors.jsonl line."""
    root, expected = hostile
    out = tmp_path / "ix"
    assert main(["index", str(root), "--out", str(out), "--encoder", "spectral", "-q", "--workers", "0"]) == 0
    errors = {Path(json.loads(line)["path"]).name: json.loads(line)["reason"]
              for line in (out / "errors.jsonl").read_text().splitlines()}
    bad = {n: r for n, r in expected.items() if r is not None}
    assert set(errors) == set(bad)
    for name, reason in bad.items():
        assert reason in errors[name], (name, errors[name])
    rows = IndexDir(out).live_rows().to_pandas()
    assert {Path(p).name for p in rows["path"]} == {n for n, r in expected.items() if r is None}


MEMORY_CHILD = r"""
import os, resource, sys
import numpy as np
from simsearch.audio.decode import decode, iter_windows
from simsearch.errors import AudioError
case, path = sys.argv[1], sys.argv[2]
decode({"array": np.sin(np.arange(44100) * 0.1), "sampling_rate": 44100}, 16000)  # warm-up: loads torch's kernels
vm = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
cap = vm + 2 * 2**30  # an old decoder's multi-GB kernel fails here instead of taking the machine
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if case == "windows":
    try:
        n = sum(len(w.samples) for w in iter_windows(path, 16000))
    except AudioError as e:
        n = -1
elif case == "query":
    n = len(decode(path, 16000, max_seconds=600.0))
else:
    n = len(decode(path, 16000))
print(n, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
"""


def _lying_wav(path: Path) -> Path:
    path.write_bytes(wav_header(16000, 1, 2**32 - 100) + (tone(300) * 32767).astype("<i2").tobytes())
    return path


def _hour_wav(path: Path) -> Path:
    with sf.SoundFile(str(path), "w", 16000, 1, subtype="PCM_16") as f:
        block = tone(220, 60.0, amp=0.3)
        for _ in range(60):
            f.write(block)
    return path


def _eight_channels(path: Path) -> Path:
    with sf.SoundFile(str(path), "w", 655350, 8, subtype="PCM_16") as f:
        block = np.repeat(tone(1000, 1.0, 655350, noise=0.0)[:, None], 8, axis=1)
        for _ in range(10):
            f.write(block)
    return path


@pytest.mark.parametrize("case,make,samples,bound_mb", [
    ("decode", lambda d: write(d / "r.wav", tone(1000, 1.0, 22051), 22051), 16000, 100),
    ("windows", lambda d: write(d / "r.wav", tone(1000, 1.0, 999983), 999983), -1, 100),
    ("decode", lambda d: _eight_channels(d / "eight.flac"), 160000, 120),
    ("decode", lambda d: _lying_wav(d / "lie.wav"), 16000, 100),
    ("query", lambda d: _hour_wav(d / "hour.wav"), 600 * 16000, 150),  # the first 10 minutes (38 MB) are kept
], ids=["1s_wav_22051Hz", "wav_999983Hz", "10s_8ch_flac_655350Hz", "wav_claiming_4GB", "hour_long_query"])
def test_peak_memory_does_not_follow_the_header(tmp_path, case, make, samples, bound_mb):
    """Decoding one file stays within ~100 MB above the baseline (plus the result it returns), whatever its header
    says; the old decoder built a 6 GB kernel for 22051 Hz and a 64 GB one for 999983 Hz."""
    path = make(tmp_path)
    r = subprocess.run([sys.executable, "-c", MEMORY_CHILD, case, str(path)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    n, grew_mb = map(int, r.stdout.split())
    print(f"{case} {path.name}: peak RSS +{grew_mb} MB")
    assert n == samples
    assert grew_mb < bound_mb, f"peak RSS grew by {grew_mb} MB"
