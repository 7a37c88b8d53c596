"""Search filters (label/metadata values, path glob, file duration range) turned into the row ids that pass."""
from __future__ import annotations

import fnmatch
import json
import re
from typing import Any

import numpy as np
import pandas as pd

from simsearch.errors import SimsearchError

SPECIAL = ("path_glob", "min_duration", "max_duration")
COLUMNS = ("label", "path", "sha256", "sample_rate")


def parse_cli(pairs: list[str] | None = None, path_globs: list[str] | None = None, min_duration: float | None = None,
              max_duration: float | None = None) -> dict:
    """`--filter key=value` (repeat a key for OR, different keys AND) and the other flags as a filter dict."""
    spec: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SimsearchError(f"--filter {pair!r}: expected key=value, e.g. label=dog")
        spec.setdefault(key.strip(), []).append(value)
    if path_globs:
        spec["path_glob"] = list(path_globs)
    if min_duration is not None:
        spec["min_duration"] = float(min_duration)
    if max_duration is not None:
        spec["max_duration"] = float(max_duration)
    return spec


def metadata_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """The manifest's metadata JSON of each row as columns (values as strings), aligned with rows."""
    parsed = [json.loads(m) if isinstance(m, str) and m else {} for m in rows["metadata"]]
    # Text before the frame is built: a column of ints with gaps would otherwise become floats (999 -> "999.0").
    parsed = [{k: None if v is None or (isinstance(v, float) and v != v) else str(v) for k, v in p.items()} for p in parsed]
    return pd.DataFrame.from_records(parsed, index=rows.index) if parsed else pd.DataFrame(index=rows.index)


def file_durations(rows: pd.DataFrame) -> np.ndarray:
    """Each row's whole-file duration (end of its file's last window), so windows of long recordings filter as one."""
    end = rows["offset_s"].astype(float) + rows["duration_s"].astype(float)
    return end.groupby(rows["path"]).transform("max").to_numpy()


def _values(v: Any) -> list[str]:
    return [str(x) for x in (v if isinstance(v, (list, tuple, set)) else [v])]


def mask(rows: pd.DataFrame, spec: dict, metadata: pd.DataFrame | None = None,
         durations: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask over rows: every key must match (AND); several values for one key are alternatives (OR)."""
    keep = np.ones(len(rows), bool)
    for key, want in spec.items():
        if key == "path_glob":
            rx = re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in _values(want)))
            keep &= np.fromiter((rx.match(p) is not None for p in rows["path"]), bool, len(rows))
        elif key in ("min_duration", "max_duration"):
            d = file_durations(rows) if durations is None else durations
            keep &= (d >= float(want) - 1e-6) if key == "min_duration" else (d <= float(want) + 1e-6)
        elif key in COLUMNS:
            col = rows[key]
            keep &= (col.notna() & col.astype(str).isin(_values(want))).to_numpy(bool)
        else:
            meta = metadata_frame(rows) if metadata is None else metadata
            if key not in meta.columns:
                known = ", ".join([*COLUMNS, *SPECIAL, *map(str, meta.columns)])
                raise SimsearchError(f"unknown filter key {key!r}; this index has: {known}")
            keep &= meta[key].isin(_values(want)).to_numpy()
    return keep

