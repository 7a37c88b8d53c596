"""Turn what the user points at (a folder or a CSV/Parquet manifest) into a list of items to index."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from simsearch.audio.decode import AUDIO_EXTENSIONS
from simsearch.errors import SimsearchError


@dataclass
class Item:
    """One file to index, with its label and any metadata columns the manifest carried."""

    path: str
    label: str | None = None
    metadata: dict = field(default_factory=dict)

    def metadata_json(self) -> str:
        return json.dumps(self.metadata, sort_keys=True, default=str)


@dataclass
class Unreadable:
    """A path the walk met that can never be indexed (broken link, unreadable folder)."""

    path: str
    reason: str


def _label_from_regex(name: str, pattern: re.Pattern | None) -> str | None:
    if pattern is None:
        return None
    m = pattern.search(name)
    if not m:
        return None
    return m.group(1) if m.groups() else m.group(0)


def walk_folder(root: Path, label_regex: str | None = None) -> tuple[list[Item], list[Unreadable]]:
    """Recursive walk; label = parent folder relative to root (None at the root) unless a regex is given."""
    pattern = re.compile(label_regex) if label_regex else None
    items, bad = [], []

    def on_error(err: OSError) -> None:
        bad.append(Unreadable(str(err.filename), f"cannot list folder ({err.strerror})"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames if d.lower().endswith(AUDIO_EXTENSIONS)]:
            if not name.lower().endswith(AUDIO_EXTENSIONS):
                continue
            full = Path(dirpath) / name
            rel_parent = Path(dirpath).relative_to(root)
            if pattern is not None:
                label = _label_from_regex(name, pattern)
            else:
                label = str(rel_parent) if str(rel_parent) != "." else None
            if full.is_dir():
                bad.append(Unreadable(os.path.abspath(full), "is a directory, not an audio file"))
            elif full.is_symlink() and not full.exists():
                bad.append(Unreadable(os.path.abspath(full), "broken symbolic link"))
            else:
                items.append(Item(os.path.abspath(full), label))
    return items, bad


def read_manifest(path: Path, label_regex: str | None = None) -> list[Item]:
    """CSV or Parquet with a `path` column; `label` and every other column are kept."""
    import pandas as pd

    df = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
    if "path" not in df.columns:
        raise SimsearchError(f"{path}: manifest needs a 'path' column (has: {', '.join(map(str, df.columns))})")
    pattern = re.compile(label_regex) if label_regex else None
    base = path.parent
    items = []
    for row in df.to_dict("records"):
        p = Path(str(row.pop("path")))
        p = p if p.is_absolute() else base / p
        label = row.pop("label", None)
        label = None if label is None or (isinstance(label, float) and label != label) else str(label)
        if pattern is not None and label is None:
            label = _label_from_regex(p.name, pattern)
        meta = {k: v for k, v in row.items() if not (isinstance(v, float) and v != v)}
        items.append(Item(os.path.abspath(p), label, meta))
    return items


def collect(src: str | Path, label_regex: str | None = None) -> tuple[list[Item], list[Unreadable]]:
    """Items from a folder or a manifest file."""
    src = Path(src)
    if src.is_dir():
        return walk_folder(src, label_regex)
    if src.is_file() and src.suffix.lower() in (".csv", ".parquet", ".pq"):
        return read_manifest(src, label_regex), []
    if not src.exists():
        raise SimsearchError(f"{src}: no such folder or manifest")
    raise SimsearchError(f"{src}: expected a folder of audio or a .csv/.parquet manifest with a 'path' column")

