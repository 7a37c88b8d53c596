"""Hostile audio: seconds and peak memory (MB above the baseline) to decode, index or query each case.

Run: python scripts/bench_decode.py [--big] [--limit-gb 12]
Each case runs in a fresh process; the peak is ru_maxrss after the action minus ru_maxrss after the imports and a
warm-up resample (and, for the query, after the index and encoder are loaded). An address-space cap (--limit-gb
above the baseline) keeps an old decoder from taking the machine down: hitting it shows as MemoryError/RuntimeError.
To measure the code before a change, run this script with PYTHONPATH pointing at an export of the old tree.
"""
from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

CHILD = r"""
import json, os, resource, sys, time
action, path, ix, limit_gb = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
import numpy as np, torch, torchaudio
from simsearch.audio.decode import decode, iter_windows
from simsearch.errors import AudioError
decode({"array": np.sin(np.arange(44100) * 0.1), "sampling_rate": 44100}, 16000)  # warm-up: torch's lazy init
if action == "query":
    from simsearch.search.index import Index
    index = Index.open(ix)
    index.search(audio=np.sin(np.arange(16000) * 0.1).astype(np.float32), k=1)  # load the encoder first
vm = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
cap = vm + int(limit_gb * 2**30)
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
r0 = resource.getrusage(resource.RUSAGE_SELF)
base, cpu = r0.ru_maxrss, r0.ru_utime + r0.ru_stime
t = time.perf_counter()
try:
    if action == "decode":
        result = f"{len(decode(path, 16000))} samples"
    elif action == "index":  # what an indexing worker does with one file
        try:
            result = f"{sum(1 for _ in iter_windows(path, 16000, 10.0, 10.0))} windows"
        except (AudioError, MemoryError, ValueError, OSError) as e:  # the reader logs these per file
            result = f"per-file error: {getattr(e, 'reason', e)}"
    else:
        result = f"{len(index.search(audio=path, k=5))} results"
except Exception as e:  # in an indexing worker, anything but the per-file errors kills the job
    result = f"{'job crash: ' if action == 'index' else ''}{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"s": time.perf_counter() - t, "cpu": r1.ru_utime + r1.ru_stime - cpu, "mb": (r1.ru_maxrss - base) / 1024,
                  "result": result[:90]}))
"""


def wav_header(sr: int, ch: int, data_bytes: int) -> bytes:
    """A 16-bit PCM WAV header declaring data_bytes of samples, whatever follows it."""
    ba = 2 * ch
    return (b"RIFF" + struct.pack("<I", min(36 + data_bytes, 2**32 - 1)) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, ch, sr, sr * ba, ba, 16) + b"data" + struct.pack("<I", data_bytes))


def write_blocks(path: Path, sr: int, seconds: float, channels: int, fmt: str | None = None) -> Path:
    """A 10-ms tone burst each second, written a second at a time (mostly zeros: FLAC files stay small)."""
    with sf.SoundFile(str(path), "w", sr, channels, subtype="PCM_16", format=fmt) as f:
        block = np.zeros(sr, np.float32)
        block[:sr // 100] = 0.3 * np.sin(2 * np.pi * 1000 * np.arange(sr // 100) / sr)
        block = np.repeat(block[:, None], channels, axis=1)
        for _ in range(int(seconds)):
            f.write(block)
    return path


def make_cases(d: Path, big: bool) -> list[tuple[str, str, Path]]:
    tone = (0.3 * np.sin(np.arange(16000) * 0.2)).astype(np.float32)
    sf.write(d / "r22051.wav", np.resize(tone, 22051), 22051, subtype="PCM_16")
    sf.write(d / "r999983.wav", np.resize(tone, 999983), 999983, subtype="PCM_16")
    write_blocks(d / "f655350_8ch_60s.flac", 655350, 60, 8)
    (d / "lie.wav").write_bytes(wav_header(16000, 1, 2**32 - 100) + (tone * 32767).astype("<i2").tobytes())
    sf.write(d / "small.flac", tone, 16000)
    b = bytearray((d / "small.flac").read_bytes())
    v = int.from_bytes(b[18:26], "big") | (2**36 - 1)  # STREAMINFO: total samples are the low 36 bits here
    b[18:26] = v.to_bytes(8, "big")
    (d / "lie.flac").write_bytes(b)
    write_blocks(d / "hour.wav", 16000, 3600, 1)
    cases = [("1-s WAV at 22051 Hz", "decode", d / "r22051.wav"),
             ("1-s WAV at 999983 Hz (index)", "index", d / "r999983.wav"),
             ("60-s 8-ch FLAC at 655350 Hz", "decode", d / "f655350_8ch_60s.flac"),
             ("WAV header claims 4 GB, holds 1 s", "decode", d / "lie.wav"),
             ("FLAC header claims 2^36 frames (index)", "index", d / "lie.flac"),
             ("1-hour WAV as a query", "query", d / "hour.wav")]
    if big:
        cases.insert(3, ("600-s 8-ch FLAC at 655350 Hz", "decode", write_blocks(d / "f_big.flac", 655350, 600, 8)))
    return cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big", action="store_true", help="also the 600-s 8-channel FLAC that passes the app's caps")
    ap.add_argument("--limit-gb", type=float, default=12.0, help="address-space cap above the baseline")
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args()
    nan = float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        cases = make_cases(d, args.big)
        (d / "src").mkdir()
        sf.write(d / "src" / "a.wav", (0.3 * np.sin(np.arange(32000) * 0.05)).astype(np.float32), 16000)
        subprocess.run([sys.executable, "-m", "simsearch", "index", str(d / "src"), "--out", str(d / "ix"),
                        "--encoder", "spectral", "-q", "--workers", "0"], check=True, capture_output=True)
        print(f"| {'case':40} | {'bytes':>10} | {'wall s':>7} | {'CPU s':>7} | {'peak MB':>7} | result")
        print(f"|{'-' * 42}|{'-' * 12}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 40}")
        for name, action, path in cases:
            try:
                r = subprocess.run([sys.executable, "-c", CHILD, action, str(path), str(d / "ix"), str(args.limit_gb)],
                                   capture_output=True, text=True, timeout=args.timeout)
                out = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else \
                    {"s": nan, "cpu": nan, "mb": nan, "result": f"exit {r.returncode}: {r.stderr[-100:]!r}"}
            except subprocess.TimeoutExpired:
                out = {"s": args.timeout, "cpu": nan, "mb": nan, "result": "timed out"}
            print(f"| {name:40} | {path.stat().st_size:>10} | {out['s']:7.2f} | {out['cpu']:7.2f} | {out['mb']:7.0f} "
                  f"| {out['result']}", flush=True)


if __name__ == "__main__":
    main()
