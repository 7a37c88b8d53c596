"""Result audio for the app: clips cut to the matching window, captions, and the query's spectrogram."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from simsearch.app.clips import ClipStore
from simsearch.app.pool import Served, inside
from simsearch.audio import containers
from simsearch.audio.fingerprint import SAME_RECORDING
from simsearch.errors import SimsearchError


def row_audio(served: Served, row_id: int, clips: ClipStore) -> Path:
    """A playable copy of one index row, cut to its window; SimsearchError when it cannot be served.

    Only rows of the index are served, and only while their file lies within the indexed folders (a manifest's
    folder for a manifest index) and is still audio: never another file beside them.
    """
    rows = served.index.rows
    try:
        row_id = int(row_id)
    except (TypeError, ValueError):
        raise SimsearchError(f"row id must be a whole number (the 'id' of a result), got {row_id!r}") from None
    if row_id not in rows.index:
        raise SimsearchError(f"index {served.name!r} has no row {row_id}; use the 'id' of a search result")
    row = rows.loc[row_id]
    path = Path(row["path"])
    if not inside(path, served.roots):
        raise SimsearchError(f"the audio of row {row_id} is not served: its file lies outside the indexed folders")
    if not (path.is_file() or containers.member_exists(path)):
        raise SimsearchError(f"the audio of row {row_id} is gone from {path.parent}; re-index to drop it")
    try:
        return clips.clip(path, float(row["offset_s"]), float(row["duration_s"]))
    except (RuntimeError, OSError):  # libsndfile errors are RuntimeErrors
        raise SimsearchError(f"the file of row {row_id} is no longer readable audio; re-index it") from None


def result_audio(served: Served, result: dict, clips: ClipStore) -> str | None:
    """For a result row in the UI: its playable clip, or None when it cannot be served."""
    try:
        return str(row_audio(served, result["id"], clips))
    except SimsearchError:
        return None


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
            f"`{result['path']}`{note}{why_line(result)}")


def why_line(result: dict) -> str:
    """What a text hit matched, for its card: name words, words said (and when), the sound's tags."""
    why = result.get("why")
    if not why:
        return ""
    parts = []
    if why.get("words"):
        parts.append("name: " + ", ".join(f"**{w}**" for w in why["words"]))
    for w in why.get("spoken", []):
        parts.append(f"said **“{w['word']}”** at {result['offset_s'] + w['start_s']:.1f} s ({w['p']:.0%} sure)")
    if why.get("sound") is not None:
        tags = ", ".join(f"{t['tag']} {t['share']:.0%}" for t in why.get("tags", []))
        parts.append(f"sound {why['sound']:.2f}" + (f" ({tags})" if tags else ""))
    return "  \n_matched: " + " · ".join(parts) + "_" if parts else ""


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

