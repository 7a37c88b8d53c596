"""The app's private folder of result clips: cut or copied on request, pruned by age, removed at exit and on SIGTERM."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import tempfile
import threading
import time
import weakref
from pathlib import Path

import soundfile as sf

from simsearch.audio import containers

CLIP_PREFIX = "simsearch-app-clips-"
BROWSER_AUDIO = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".opus")  # played as-is; others become WAV


class ClipStore:
    """A temp folder of playable copies of index rows; Gradio serves its own cached copies, never the sources."""

    def __init__(self, ttl_s: float = 900.0):
        self.dir = Path(tempfile.mkdtemp(prefix=CLIP_PREFIX))
        self.ttl_s = ttl_s
        self._last_prune = time.monotonic()
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.dir, True)  # also runs at interpreter exit
        _LIVE.add(self)

    def close(self) -> None:
        """Remove the folder and everything in it (idempotent)."""
        self._finalizer()

    def clip(self, path: Path, offset_s: float, duration_s: float | None) -> Path:
        """A file holding [offset_s, offset_s + duration_s) of path: the file's bytes when that is all of it.

        Named by the source's path, mtime and window, so a repeated request reuses the clip.
        """
        member = containers.split_member(path)  # a clip inside a tar shard or a saved dataset: read in place
        real = path if member else path.resolve()
        source = containers.open_member(path) if member else str(real)
        info = sf.info(source)  # raises on anything that is not audio libsndfile reads
        total = info.frames / info.samplerate
        dur = float(duration_s or total)
        whole = offset_s <= 0 and dur >= total - 1e-3 and real.suffix.lower() in BROWSER_AUDIO and not member
        stamp = (member[0] if member else real).stat().st_mtime_ns
        key = hashlib.sha1(f"{real}|{stamp}|{offset_s:.3f}|{dur:.3f}".encode()).hexdigest()[:12]
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in real.name.rpartition(".")[0] or real.name)
        out = self.dir / (f"{stem}_{key}{real.suffix.lower()}" if whole else f"{stem}_{offset_s:.1f}s_{key}.wav")
        self.prune()
        try:
            os.utime(out)  # made before and recently used again: keep it through the next prune
            return out
        except FileNotFoundError:
            pass
        fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=out.suffix)  # two requests may make the same clip
        os.close(fd)
        if whole:
            shutil.copyfile(real, tmp)
        else:
            if member:
                source.seek(0)
            data, sr = sf.read(source, start=round(offset_s * info.samplerate), frames=round(dur * info.samplerate),
                               dtype="float32", always_2d=True)
            sf.write(tmp, data, sr, subtype="PCM_16")
        os.replace(tmp, out)
        return out

    def prune(self) -> None:
        """Delete clips unused for ttl_s (checked at most every ttl_s / 4), so a long-running app stays small."""
        now = time.monotonic()
        if now - self._last_prune < self.ttl_s / 4:
            return
        self._last_prune = now
        cutoff = time.time() - self.ttl_s
        for f in self.dir.iterdir():
            try:
                if f.stat().st_mtime < cutoff:
                    f.unlink()
            except FileNotFoundError:  # another request pruned or replaced it
                pass


_LIVE: weakref.WeakSet[ClipStore] = weakref.WeakSet()  # every open store, for the SIGTERM handler


def close_all() -> None:
    """Remove every open store's folder."""
    for store in list(_LIVE):
        store.close()


def exit_on_sigterm() -> None:
    """On SIGTERM remove the clip folders, then exit (status 143) through the normal shutdown path.

    SIGTERM's default action ends the process without running atexit hooks, which left the folders behind.
    Signal handlers can only be set from the main thread; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum, frame):
        close_all()
        if callable(previous):
            previous(signum, frame)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
