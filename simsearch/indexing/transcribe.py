"""The spoken-words stage of an indexing run: transcribe the windows that hold speech into transcripts/ parts.

Runs after the shards are written, over the live rows that have no transcript yet, so it is incremental and
resumable like the rest. `auto` transcribes a window when its stored YAMNet "Speech" score says it holds speech
(indexes without tag scores: every window, keeping those Whisper itself hears speech in); `on` every window;
`off` none. A window the gate passes over is recorded as such (text null), so the next run does not look again,
and `on` later transcribes it.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from tqdm import tqdm

from simsearch.audio.decode import iter_windows
from simsearch.encoders.tag_text import SPEECH_GATE
from simsearch.errors import AudioError
from simsearch.store import transcripts
from simsearch.store.folder import IndexDir

log = logging.getLogger(__name__)

MODES = ("auto", "on", "off")
NO_SPEECH = 0.6  # without tag scores: Whisper's own no-speech probability above which a transcript is dropped
PART_ROWS = 2048  # windows per part file: what a crash can lose at most
BATCH = 16  # windows per Whisper call


def check_mode(mode: str | None) -> str | None:
    """The mode as given, checked, so a typo fails before anything is embedded."""
    if mode is not None and mode not in MODES:
        raise ValueError(f"--transcribe must be one of {', '.join(MODES)} (got {mode!r})")
    return mode


def speech_scores(d: IndexDir, rows: pd.DataFrame, class_names: list[str]) -> np.ndarray | None:
    """Each row's "Speech" tag score, or None for an index whose rows hold no tag scores with that class."""
    from simsearch.encoders.tag_text import speech_scores as speech_column

    if not has_tag_scores(d) or "Speech" not in class_names:
        return None
    t = d.live_rows(["id", "tag_scores"])
    if not t.num_rows or len(t.column("tag_scores")[0]) != len(class_names):
        return None
    scores = speech_column(np.stack(t.column("tag_scores").to_numpy(zero_copy_only=False)), class_names)
    by_id = dict(zip(t.column("id").to_numpy(), scores))
    return np.array([by_id.get(i, 0.0) for i in rows["id"]], np.float32)


def has_tag_scores(d: IndexDir) -> bool:
    """Whether the index's rows hold tag scores (its newest shard says: one index, one encoder)."""
    import pyarrow.parquet as pq

    shards = d.shard_paths()
    return bool(shards) and "tag_scores" in pq.read_schema(shards[-1]).names


def transcribe_index(d: IndexDir, mode: str, window_s: float, hop_s: float, class_names: list[str],
                     device: str = "cpu", progress: bool = True, errors=None) -> int:
    """Transcribe the live rows of `d` that need it under `mode` (class_names: the tag_scores columns, for the
    speech gate); returns windows transcribed."""
    if mode == "off":
        return 0
    rows = d.live_rows(["id", "path", "sha256", "offset_s", "duration_s"]).to_pandas()
    todo = _untranscribed(d, rows, mode)
    speech = speech_scores(d, todo, class_names) if mode == "auto" and len(todo) else None
    sink = _Sink(d, gated=speech is not None)
    if speech is not None:  # windows without speech: recorded, not transcribed
        sink.out += [_record(r, None, [], 1.0) for r in todo[speech < SPEECH_GATE].itertuples()]
        todo = todo[speech >= SPEECH_GATE]
    if len(todo):
        from simsearch.encoders.whisper_asr import WHISPER_SR, shared_asr

        sink.asr = shared_asr(device)
        bar = tqdm(total=len(todo), desc="spoken words", unit="window", disable=not progress)
        for path, group in todo.groupby("path", sort=False):
            wanted = dict(zip(transcripts.offset_key(group["offset_s"]), group.itertuples()))
            try:  # streamed window by window: a long recording never sits in memory whole
                for w in iter_windows(path, WHISPER_SR, window_s, hop_s):
                    if (r := wanted.get(int(transcripts.offset_key(w.offset_s)))) is not None:
                        sink.add(r, w.samples)
            except (AudioError, OSError) as e:  # the file changed or went since it was indexed: its rows go next run
                why = f"spoken words skipped: {e}"
                errors.add(path, why, fatal=False) if errors is not None else log.warning("%s: %s", path, why)
            bar.update(len(group))
        bar.close()
    sink.close()
    transcripts.merge(d, rows)
    return sink.count


def _untranscribed(d: IndexDir, rows: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Rows with no transcript record (`on`: nor one the gate passed over)."""
    done = transcripts.read(d)
    if mode == "on":
        done = done[done["text"].notna()]
    key = pd.MultiIndex.from_arrays([rows["sha256"], transcripts.offset_key(rows["offset_s"])])
    return rows[~key.isin(pd.MultiIndex.from_arrays([done["sha256"], done["offset_ms"]]))]


class _Sink:
    """Windows in, transcripts out: Whisper runs on batches gathered across files, parts are written as they fill."""

    def __init__(self, d: IndexDir, gated: bool):
        self.d, self.gated, self.asr = d, gated, None
        self.pending: list[tuple] = []
        self.out: list[dict] = []
        self.count = 0

    def add(self, row, samples: np.ndarray) -> None:
        self.pending.append((row, samples))
        if len(self.pending) >= BATCH:
            self.flush()

    def flush(self) -> None:
        for (r, _), t in zip(self.pending, self.asr.transcribe([x for _, x in self.pending]) if self.pending else []):
            keep = self.gated or t.no_speech < NO_SPEECH  # ungated: Whisper's own judgement drops non-speech
            self.out.append(_record(r, t.text if keep else "", t.words if keep else [], t.no_speech))
            self.count += 1
        self.pending.clear()
        if len(self.out) >= PART_ROWS:
            transcripts.write_part(self.d, self.out)
            self.out = []

    def close(self) -> None:
        self.flush()
        transcripts.write_part(self.d, self.out)
        self.out = []


def _record(r, text: str | None, words: list, no_speech: float) -> dict:
    return {"sha256": r.sha256, "offset_ms": int(transcripts.offset_key(r.offset_s)), "text": text,
            "words": [list(w) for w in words], "no_speech": float(no_speech)}


def recorded_mode(info: dict | None, asked: str | None, has_tags: bool) -> str:
    """This run's mode: the one asked for, else the index's recorded one; a new index with tag scores (the speech
    gate) transcribes `auto`, one without `off` (every window through Whisper would double the cost)."""
    if asked is not None:
        return asked
    if info:
        return info.get("transcribe", "off")
    return "auto" if has_tags else "off"
