"""Result audio for the app: clips cut to the matching window, captions, and the query's spectrogram."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from simsearch.app.service import Served, inside
from simsearch.audio.fingerprint import SAME_RECORDING

BROWSER_AUDIO = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".opus")  # played as-is; others become WAV


def result_audio(served: Served, result: dict, clip_dir: Path) -> str | None:
    """A playable file for a hit: the file itself, or its window cut out as WAV; None outside the indexed roots."""
    path = Path(result["path"])
    if not inside(path, served.roots) or not path.is_file():
        return None
    real = path.resolve()
    info = sf.info(str(real))
    total = info.frames / info.samplerate
    offset, dur = float(result["offset_s"]), float(result.get("duration_s") or total)
    if not is_window(result, total) and real.suffix.lower() in BROWSER_AUDIO:
        return str(real)
    key = hashlib.sha1(f"{real}|{real.stat().st_mtime_ns}|{offset:.3f}|{dur:.3f}".encode()).hexdigest()[:12]
    out = clip_dir / f"{real.stem}_{offset:.1f}s_{key}.wav"
    if not out.exists():
        start = round(offset * info.samplerate)
        data, sr = sf.read(str(real), start=start, frames=round(dur * info.samplerate), dtype="float32",
                           always_2d=True)
        fd, tmp = tempfile.mkstemp(dir=clip_dir, suffix=".wav")  # two requests may cut the same window
        os.close(fd)
        sf.write(tmp, data, sr, subtype="PCM_16")
        os.replace(tmp, out)
    return str(out)


def is_window(result: dict, file_seconds: float) -> bool:
    """True when a hit is a window of a longer file rather than the whole file."""
    dur = float(result.get("duration_s") or file_seconds)
    return float(result["offset_s"]) > 0 or dur < file_seconds - 1e-3


def result_caption(result: dict, playable: bool, window: bool = False) -> str:
    """One result row's text: rank, score, label, path and where in the file."""
    label = result["label"] if result["label"] is not None else "—"
    where = ""
    if window or result["offset_s"]:
        end = result["offset_s"] + result.get("duration_s", 0.0)
        where = f" · {result['offset_s']:.1f}–{end:.1f} s"
    note = "" if playable else "  \n_audio not served: the file is outside the indexed folders or gone_"
    if result.get("match", 0) >= SAME_RECORDING:
        where += " · **same recording** (landmarks match)"
    return (f"**#{result['rank']}** · score **{result['score']:.3f}** · label **{label}**{where}  \n"
            f"`{result['path']}`{note}")


def spectrogram_image(x: np.ndarray, sr: int, title: str = "query") -> np.ndarray:
    """Log-mel spectrogram of a clip as an RGB image (matplotlib Agg)."""
    import torch
    import torchaudio.transforms as T
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    mel = T.MelSpectrogram(sample_rate=sr, n_fft=1024, hop_length=max(1, sr // 100), n_mels=64, f_max=sr / 2)
    db = T.AmplitudeToDB(top_db=80)(mel(torch.from_numpy(np.ascontiguousarray(x, np.float32)))).numpy()
    fig = Figure(figsize=(7, 2.6), dpi=100)
    ax = fig.add_subplot()
    im = ax.imshow(db, origin="lower", aspect="auto", cmap="magma", extent=(0, len(x) / sr, 0, db.shape[0]))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel band")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, format="%+.0f dB", pad=0.01)
    fig.tight_layout()
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()

