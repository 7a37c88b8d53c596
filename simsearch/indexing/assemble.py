"""Put each file's windows back together as their embeddings arrive (in any order), for either engine.

A file's rows go to the ShardWriter only once every one of its windows is embedded, so a crash or a bad window
never leaves part of a file in the index; a file the decoder rejects is logged and dropped whole.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tqdm import tqdm

from simsearch.indexing.sources import Item
from simsearch.indexing.writer import ErrorLog, ShardWriter
from simsearch.store.folder import LANDMARKS


@dataclass
class _File:
    """What has arrived of one file so far."""

    windows: dict[int, tuple[float, float, bytes | None]] = field(default_factory=dict)  # offset, duration, landmarks
    outputs: dict[int, dict] = field(default_factory=dict)
    total: int | None = None  # known once the decoder has read the whole file
    source_rate: int = 0


class FileAssembler:
    """Collects windows and embeddings per file and writes each file when it is complete."""

    def __init__(self, writer: ShardWriter, todo: list[Item], shas: dict[str, str], errors: ErrorLog, bar: tqdm):
        self.writer, self.todo, self.shas, self.errors, self.bar = writer, todo, shas, errors, bar
        self.files: dict[int, _File] = {}
        self.failed: set[int] = set()  # rows of a dropped file may still arrive (the Ray engine does not keep order)
        self.written = 0

    def window(self, item: int, index: int, offset_s: float, duration_s: float, source_rate: int,
               landmarks: bytes | None = None) -> None:
        """Where window `index` of file `item` lies in the file (and its landmarks, when the index keeps them)."""
        if item in self.failed:
            return
        f = self.files.setdefault(item, _File())
        f.windows[index] = (offset_s, duration_s, landmarks)
        f.source_rate = source_rate or f.source_rate
        self._write_if_complete(item)

    def output(self, item: int, index: int, out: dict) -> None:
        """The encoder's outputs for one window; ignored when the file was already dropped."""
        if item in self.files:
            self.files[item].outputs[index] = out
            self._write_if_complete(item)

    def total(self, item: int, n: int) -> None:
        """The decoder reached the end of the file: it has `n` windows."""
        if item in self.failed:
            return
        self.files.setdefault(item, _File()).total = n
        self._write_if_complete(item)

    def fail(self, item: int, reason: str) -> None:
        """The file cannot be indexed: log why, drop what arrived of it, and go on."""
        self.files.pop(item, None)
        self.failed.add(item)
        self.errors.add(self.todo[item].path, reason)
        self.bar.update(1)

    def _write_if_complete(self, item: int) -> None:
        f = self.files[item]
        if f.total is None or len(f.outputs) < f.total or len(f.windows) < f.total:
            return
        del self.files[item]
        order = range(f.total)
        rows = [{**f.outputs[k], LANDMARKS: f.windows[k][2]} for k in order]
        path = self.todo[item].path
        self.writer.add_file(self.todo[item], self.shas[path], f.source_rate, [f.windows[k][:2] for k in order],
                             rows)
        self.written += 1
        self.bar.update(1)
