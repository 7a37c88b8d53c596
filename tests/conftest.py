"""Shared fixtures: generated signals written to disk, and the path to the shared real data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def tone(freq: float, seconds: float = 1.0, sr: int = 16000, amp: float = 0.5, seed: int = 0,
         noise: float = 0.01) -> np.ndarray:
    """A sine with a little noise so no two generated clips are bit-identical."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    return (amp * np.sin(2 * np.pi * freq * t) + noise * rng.standard_normal(t.size)).astype(np.float32)


def noise(seconds: float = 1.0, sr: int = 16000, amp: float = 0.3, seed: int = 0) -> np.ndarray:
    return (amp * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


def write(path: Path, x: np.ndarray, sr: int = 16000, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, sr, **kw)
    return path


def labelled_clip(cls: str, pos: float, seconds: float = 1.0, seed: int | None = None) -> np.ndarray:
    """Clip number `pos` of three easy classes ("low" tone, "high" tone, any other name noise); a fractional pos
    gives a new clip between the written ones."""
    seed = int(pos) if seed is None else seed
    if cls == "low":
        return tone(200 + 15 * pos, seconds, seed=seed)
    if cls == "high":
        return tone(3000 + 150 * pos, seconds, seed=100 + seed)
    return noise(seconds, seed=200 + seed)


def write_labelled(root: Path, classes: tuple[str, ...], n: int = 6) -> Path:
    """n one-second clips of each class in sub-folders named by the class (labels from folder names)."""
    for cls in classes:
        for i in range(n):
            write(root / cls / f"{cls}{i}.wav", labelled_clip(cls, i))
    return root


@pytest.fixture
def class_folder(tmp_path: Path) -> Path:
    """Three classes in sub-folders: low tones, high tones, noise bursts; four clips each, mixed rates."""
    root = tmp_path / "corpus"
    for i in range(4):
        write(root / "low" / f"low{i}.wav", tone(220 + 5 * i, 1.0 + 0.2 * i, 16000, seed=i), 16000)
        write(root / "high" / f"high{i}.flac", tone(3000 + 40 * i, 1.2, 44100, seed=10 + i), 44100)
        write(root / "noise" / f"noise{i}.wav", noise(0.8 + 0.1 * i, 22050, seed=20 + i), 22050)
    return root


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


# Forks one child per crash point from a process that imported everything but ran nothing (fork-safe, fast).
CRASH_DRIVER = r"""
import json, os, shutil, sys
import faiss, pyarrow.parquet, scipy.ndimage, torchaudio.transforms  # noqa: F401 - imports the children share
import simsearch.encoders.spectral, simsearch.indexing.job  # noqa: F401
from simsearch.cli.core import build_parser, main
build_parser()  # imports every command module
base, src, work, env, extra = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
results = []
for n in range(1, 80):
    out = os.path.join(work, f"crash{n:02d}")
    shutil.copytree(base, out)
    pid = os.fork()
    if pid == 0:
        os.environ[env] = str(n)
        os._exit(main(["index", src, "--out", out, *extra]))
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    results.append([n, out, code])
    if code != 70:
        break
print(json.dumps(results))
"""


def crash_at_every_write(base: Path, src: Path, work: Path, args: list[str]) -> list[list]:
    """Copies of the index `base` updated from `src` with `args`, each killed at its N-th durable write (N = 1, 2,
    ... until a run finishes): [[N, copy, exit code], ...]; exit code 70 = killed there."""
    import json
    import subprocess
    import sys

    from simsearch.store.folder import CRASH_ENV

    r = subprocess.run([sys.executable, "-c", CRASH_DRIVER, str(base), str(src), str(work), CRASH_ENV, *args],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])
