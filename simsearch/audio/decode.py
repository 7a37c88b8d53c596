"""Decode, mix to mono, resample and validate audio files and buffers: every path into an encoder goes through here.

Files are read in blocks of READ_SAMPLES (frames x channels) and resampled as a stream, so memory depends on
neither the header's sample rate nor its channel count: reading one file window by window (indexing) stays
within ~100 MB above the baseline whatever its header says, and decode() holds its result (at the target rate,
at most MAX_HELD_SAMPLES) on top of that. What the header declares is checked before any decoding: the rate must
be in MIN_RATE..MAX_RATE and both frames x channels and the samples they become within a budget (DECODE_BUDGET by
default), so a small file cannot make us decode for hours.
"""
from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import soundfile as sf

from simsearch.audio import containers
from simsearch.audio.resample import MAX_RATE, MIN_RATE, stream_resample
from simsearch.audio.windows import Window, iter_window_starts
from simsearch.errors import AudioError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".opus")
MIN_DURATION_S = 0.01  # shorter than this holds no usable sound (a 20 ms click still counts)
SILENCE_PEAK = 1e-6
READ_SAMPLES = 2**20  # frames x channels per read (4 MB of float32), whatever the channel count
DECODE_BUDGET = 2**31  # frames x channels (and samples out) one file may ask for: 6.2 h of 48 kHz stereo, 37 h at 16 kHz
MAX_HELD_SAMPLES = 2**27  # samples decode() returns at most (512 MB of float32; 2.3 h at 16 kHz)

log = logging.getLogger(__name__)


def to_mono(data: np.ndarray) -> np.ndarray:
    """Average channels; soundfile gives [frames, channels]."""
    if data.ndim != 2:
        return data
    # A product with equal weights: several times faster than .mean(axis=1) over a short last axis.
    return data @ np.full(data.shape[1], 1.0 / data.shape[1], dtype=data.dtype)


def check_samples(x: np.ndarray, where: str) -> None:
    """Reject NaN/inf samples: they poison every embedding they touch."""
    if not np.isfinite(x).all():
        raise AudioError(where, "contains NaN or infinite samples")


def check_rate(rate: int, where: str) -> None:
    """Refuse sample rates no recording uses: they would size resampling kernels, not sound."""
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(where, f"sample rate {rate} Hz is outside the supported range {MIN_RATE}-{MAX_RATE} Hz; "
                                "convert it (e.g. `sox in.wav -r 48000 out.wav`)")


def check_header(f: sf.SoundFile, where: str, frames: int, sample_rate: int, budget: int) -> None:
    """What the header declares, checked before decoding: the rate, the channels, and both frames x channels and
    the samples they become at sample_rate within budget (a 1 kHz file of a billion frames is 16 billion at 16 kHz)."""
    check_rate(f.samplerate, where)
    if f.channels < 1:
        raise AudioError(where, f"declares {f.channels} channels")
    if f.frames <= 0:
        raise AudioError(where, "holds no audio frames")
    if frames * f.channels > budget:
        raise AudioError(where, f"header declares {frames} frames x {f.channels} channels = {frames * f.channels} "
                                f"samples to decode, over the budget of {budget}; split or downmix the file")
    out = math.ceil(frames * sample_rate / f.samplerate)
    if out > budget:
        raise AudioError(where, f"header declares {frames / f.samplerate:.0f} s, {out} samples at {sample_rate} Hz, "
                                f"over the budget of {budget}; split the file")


def _open(path: str | Path) -> sf.SoundFile:
    if containers.split_member(path) is not None:  # a clip inside a tar shard or a saved dataset
        try:
            return sf.SoundFile(containers.open_member(path))
        except (sf.LibsndfileError, RuntimeError) as e:
            raise AudioError(str(path), f"not a readable audio file ({e})") from None
    p = Path(path)
    if p.is_dir():
        raise AudioError(str(path), "is a directory, not an audio file")
    if not p.exists():
        raise AudioError(str(path), "file does not exist (or is a broken link)")
    if p.stat().st_size == 0:
        raise AudioError(str(path), "file is empty (0 bytes)")
    try:
        return sf.SoundFile(str(p))
    except PermissionError as e:
        raise AudioError(str(path), f"permission denied ({e.strerror})") from None
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(str(path), f"not a readable audio file ({e})") from None


class _Reader:
    """Mono blocks of one file; keeps the peak (for the silence check) and how many frames the last run found.

    Owns the open file: libsndfile fails a whole read that runs into a break (a cut FLAC, a header promising more
    than there is) and then fails every later call on that handle, so the reader reopens it and reads that stretch
    again in smaller pieces, keeping every frame before the break.
    """

    def __init__(self, opener: Callable[[], sf.SoundFile], where: str):
        self.opener, self.where, self.peak, self.got = opener, where, 0.0, 0
        self.f = opener()

    def __enter__(self) -> "_Reader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()

    def blocks(self, start: int, count: int) -> Iterator[np.ndarray]:
        """count frames from start, READ_SAMPLES at a time; stops early where the data ends before the header says."""
        per = max(1, READ_SAMPLES // self.f.channels)
        self.got = 0
        while self.got < count:
            data, asked = self._read(start + self.got, min(per, count - self.got))
            if len(data) == 0:
                return
            mono = to_mono(data)
            del data
            check_samples(mono, self.where)
            self.peak = max(self.peak, float(np.abs(mono).max()))
            self.got += len(mono)
            yield mono
            if len(mono) < asked:
                return

    def _read(self, pos: int, size: int) -> tuple[np.ndarray, int]:
        """(frames [pos, pos + size) or fewer, the size asked for); no frames where the data ends or breaks."""
        sr = self.f.samplerate
        while True:
            try:
                if self.f.tell() != pos:  # a FLAC seek re-decodes a frame: only when not already there
                    self.f.seek(pos)
                return self.f.read(size, dtype="float32", always_2d=True), size
            except (sf.LibsndfileError, RuntimeError) as e:
                self.f.close()
                self.f = self.opener()
                if size > 1:
                    size = max(1, size // 16)
                    continue
                if pos == 0:
                    raise AudioError(self.where, f"decoding failed at 0.00 s ({e})") from None
                log.warning("%s: decoding stopped at %.2f s of %.2f s (%s)", self.where, pos / sr,
                            self.f.frames / sr, e)
                return np.zeros((0, self.f.channels), np.float32), size


def _resampled(blocks: Iterator[np.ndarray], sr: int, sample_rate: int, where: str) -> np.ndarray:
    """Resample a block stream into one array; a resampling failure is this input's AudioError, never a crash."""
    try:
        parts = list(stream_resample(blocks, sr, sample_rate))
    except (RuntimeError, ValueError, MemoryError) as e:
        raise AudioError(where, f"resampling {sr} -> {sample_rate} Hz failed ({type(e).__name__}: {e})") from None
    if not parts:
        return np.zeros(0, np.float32)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def iter_windows(path: str | Path, sample_rate: int, window_s: float = 10.0, hop_s: float | None = None,
                 max_duration_s: float | None = None, budget: int = DECODE_BUDGET) -> Iterator[Window]:
    """Stream a file window by window, so a one-hour recording never sits in memory whole."""
    hop_s = window_s if hop_s is None else hop_s
    where = str(path)
    with _Reader(lambda: _open(path), where) as reader:
        f = reader.f
        sr, n = f.samplerate, f.frames
        check_header(f, where, n, sample_rate, budget)
        if n / sr < MIN_DURATION_S:
            raise AudioError(where, f"too short ({n / sr * 1000:.1f} ms; need >= {MIN_DURATION_S * 1000:.0f} ms)")
        if max_duration_s is not None and n / sr > max_duration_s:
            raise AudioError(where, f"too long ({n / sr:.0f} s; limit {max_duration_s:.0f} s)")
        for start, length in iter_window_starts(n, sr, window_s, hop_s):
            x = _resampled(reader.blocks(start, length), sr, sample_rate, where)
            if reader.got == 0:
                if start == 0:
                    raise AudioError(where, "holds no audio data")
                log.warning("%s: data ends at %.2f s though the header says %.2f s", where, start / sr, n / sr)
                break
            yield Window(start / sr, reader.got / sr, x, sr)
            if reader.got < length:
                break  # the data ended inside this window
        if reader.peak < SILENCE_PEAK:
            raise AudioError(where, "is silent (all samples are zero)")


def _decode_file(reader: _Reader, sample_rate: int, max_seconds: float | None, budget: int) -> np.ndarray:
    """A whole file (or its first max_seconds) as mono at sample_rate, streamed through the resampler."""
    f, where = reader.f, reader.where
    sr, n = f.samplerate, f.frames
    check_rate(sr, where)  # before sr sizes anything below
    frames = n
    if max_seconds is not None and n > max_seconds * sr:
        frames = int(max_seconds * sr)
        log.warning("%s: %.0f s long; using its first %.0f s", where, n / sr, max_seconds)
    check_header(f, where, frames, sample_rate, budget)
    _check_held(frames, sr, sample_rate, where)
    x = _resampled(reader.blocks(0, frames), sr, sample_rate, where)
    if reader.got and reader.peak < SILENCE_PEAK:
        raise AudioError(where, "is silent (all samples are zero)")
    return x


def _open_bytes(source: bytes | bytearray) -> sf.SoundFile:
    try:
        return sf.SoundFile(io.BytesIO(bytes(source)))
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError("<bytes>", f"not a readable audio file ({e})") from None


def _head(x: np.ndarray, rate: int, max_seconds: float | None, where: str, sample_rate: int) -> np.ndarray:
    """The first max_seconds of an in-memory waveform (logged when that drops something), if its result fits."""
    if max_seconds is not None and len(x) > max_seconds * rate:
        log.warning("%s: %.0f s long; using its first %.0f s", where, len(x) / rate, max_seconds)
        x = x[:int(max_seconds * rate)]
    _check_held(len(x), rate, sample_rate, where)
    return x


def _check_held(frames: int, rate: int, sample_rate: int, where: str) -> None:
    """decode() returns the whole clip: refuse one whose result would not fit MAX_HELD_SAMPLES."""
    if math.ceil(frames * sample_rate / rate) > MAX_HELD_SAMPLES:
        raise AudioError(where, f"{frames / rate:.0f} s is more than one clip decodes to at once "
                                f"(limit {MAX_HELD_SAMPLES / sample_rate:.0f} s at {sample_rate} Hz); "
                                "use its first minutes, or index it (indexing streams long files)")


def decode(source: Any, sample_rate: int, max_seconds: float | None = None,
           budget: int = DECODE_BUDGET) -> np.ndarray:
    """Whole clip (or its first max_seconds) as mono float32 at sample_rate, from a path, bytes, an array
    (already at sample_rate) or {"array","sampling_rate"}; files and bytes are decoded block by block."""
    if isinstance(source, dict):
        if "array" not in source or "sampling_rate" not in source:
            raise AudioError("<dict>", 'expected keys "array" and "sampling_rate"')
        where, sr = "<array>", int(source["sampling_rate"])
        check_rate(sr, where)
        arr = np.asarray(source["array"], dtype=np.float32)
        if arr.ndim not in (1, 2):
            raise AudioError(where, f"expected a 1-D waveform or [channels, frames], got shape {arr.shape}")
        arr = _head(to_mono(arr.T) if arr.ndim == 2 else arr, sr, max_seconds, where, sample_rate)
        check_samples(arr, where)
        x = _resampled(iter([arr]), sr, sample_rate, where)
    elif isinstance(source, np.ndarray):
        where = "<array>"
        x = _head(np.asarray(source, dtype=np.float32), sample_rate, max_seconds, where, sample_rate)
    elif isinstance(source, (bytes, bytearray)):
        where = "<bytes>"
        if not source:
            raise AudioError(where, "no bytes given")
        with _Reader(lambda: _open_bytes(source), where) as reader:
            x = _decode_file(reader, sample_rate, max_seconds, budget)
    else:
        where = str(source)
        with _Reader(lambda: _open(source), where) as reader:
            x = _decode_file(reader, sample_rate, max_seconds, budget)
    if x.ndim != 1:
        raise AudioError(where, f"expected a 1-D waveform, got shape {x.shape}")
    if x.size < MIN_DURATION_S * sample_rate:
        raise AudioError(where, "too short or empty")
    check_samples(x, where)
    if np.abs(x).max() < SILENCE_PEAK:
        raise AudioError(where, "is silent (all samples are zero)")
    return x


def check_readable(path: str | Path) -> None:
    """Open a file (or a clip inside a container) and read its header only: AudioError when it cannot be used."""
    with _Reader(lambda: _open(path), str(path)) as reader:
        check_header(reader.f, str(path), reader.f.frames, reader.f.samplerate, DECODE_BUDGET)


def duration_s(path: str | Path) -> float:
    """Length in seconds from the header, without decoding."""
    info = sf.info(str(path))
    return info.frames / info.samplerate if info.samplerate else math.nan
