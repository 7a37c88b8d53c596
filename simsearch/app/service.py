"""The Gradio front end: find similar sounds, search by text, classify a clip, and inspect an index.

UI logic lives in small functions over an IndexPool (find_similar, text_search, classify_clip,
index_overview, result_audio, check_upload) so tests can call them without a browser; build_app only
wires them to components. Indexes and their encoders are opened once, when the pool is built.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf

from simsearch.audio.decode import MIN_DURATION_S, decode
from simsearch.classify.knn import KNN_K, knn_scores, split_labels
from simsearch.classify.probe import PROBE_WEIGHTS, classify_probe
from simsearch.classify.zeroshot import zero_shot_scores
from simsearch.errors import AudioError, SimsearchError
from simsearch.search.index import Index
from simsearch.search.text import TEXT_ENCODERS, text_mode

log = logging.getLogger(__name__)
RESULT_KEYS = ("rank", "score", "path", "label", "offset_s")
MATCH_KEYS = ("cosine", "match")  # audio queries on an index with landmark fingerprints (see Index.search)
MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")
MAX_SLOTS = 20  # result rows the UI has room for; also the largest k
MAX_TEXT_CHARS = 500
MB = 1024 * 1024  # Gradio reads "50mb" as 50 MiB; the app uses the same unit
DEFAULT_INDEX_ROOT = "indexes"


@dataclass(frozen=True)
class Limits:
    """What the app accepts from users; set from the command line."""

    max_upload_mb: float = 50.0
    max_duration_s: float = 600.0
    max_k: int = MAX_SLOTS
    upload_dir: Path | None = None  # build_app sets Gradio's upload folder: query files must come from there


def find_index_dirs(paths: list[str | Path] | None = None, default_root: str | Path = DEFAULT_INDEX_ROOT) -> list[Path]:
    """Index folders named, or every index folder one level under each folder named (default: ./indexes)."""
    found: list[Path] = []
    for p in map(Path, paths or [default_root]):
        if (p / "index.json").is_file():
            found.append(p.resolve())
        elif p.is_dir():
            kids = sorted(c.resolve() for c in p.iterdir() if (c / "index.json").is_file())
            if not kids:
                raise SimsearchError(f"{p}: neither an index folder nor a folder of them; build one with "
                                     f"`simsearch index SRC --out {p / 'NAME'}`")
            found += kids
        else:
            raise SimsearchError(f"{p}: no such index folder; build one with `simsearch index SRC --out {p}` "
                                 "or pass --index DIR")
    return list(dict.fromkeys(found))


def source_roots(info: dict) -> list[Path]:
    """Folders whose files results may play: each indexed folder, or the folder holding an indexed manifest."""
    roots = []
    for s in info.get("sources", []):
        p = Path(s).resolve()
        roots.append(p.parent if p.suffix.lower() in MANIFEST_SUFFIXES and not p.is_dir() else p)
    return list(dict.fromkeys(roots))


def inside(path: str | Path, roots: list[Path]) -> bool:
    """True when the path, links resolved, lies within one of the roots."""
    real = Path(path).resolve()
    return any(real == r or real.is_relative_to(r) for r in roots)


@dataclass
class Served:
    """One index the app serves, opened once: the Index, its playable roots, and its labelled rows for kNN."""

    name: str
    index: Index
    roots: list[Path]
    knn_bank: np.ndarray | None  # normalised embeddings of labelled rows
    knn_labels: list[list[str]]
    knn_rows: pd.DataFrame  # the labelled rows, aligned with knn_bank

    @property
    def has_probe(self) -> bool:
        return (self.index.dir.root / PROBE_WEIGHTS).is_file()


def open_served(name: str, root: Path, device: str = "auto", warm: bool = True) -> Served:
    """Open an index, cache what kNN votes need, and (warm=True) load and run its encoder once."""
    index = Index.open(root, device=device)
    labels = [split_labels(v) for v in index.rows["label"]]
    keep = np.array([bool(v) for v in labels], dtype=bool)
    bank = index.embeddings()[keep] if keep.any() else None
    served = Served(name, index, source_roots(index.info), bank, [v for v, m in zip(labels, keep) if m],
                    index.rows[keep])
    if warm:
        warm_up(index)
    return served


def warm_up(index: Index) -> None:
    """Load the encoder (and the text model for tag search) now, so the first request is not the slow one."""
    enc = index.encoder
    rng = np.random.default_rng(0)
    enc.embed_batch([(0.1 * rng.standard_normal(enc.sample_rate)).astype(np.float32)])
    index.landmark_table  # noqa: B018 - cached property: reads the fingerprints once
    mode = text_mode(index)
    if mode == "tags":
        from simsearch.encoders.tag_text import class_embeddings
        from simsearch.encoders.yamnet import load_class_names

        index.extras  # noqa: B018 - cached property: reads tag scores once
        class_embeddings(load_class_names())
    elif mode == "clap":
        enc.embed_text(["warm up"])


class IndexPool:
    """Every index the app serves, keyed by a short display name; each opened once at start-up."""

    def __init__(self, dirs: list[str | Path], device: str = "auto", warm: bool = True):
        if not dirs:
            raise SimsearchError("no index folders to serve; build one with `simsearch index SRC --out indexes/NAME`")
        self.served: dict[str, Served] = {}
        for d in map(Path, dirs):
            name = d.name if d.name not in self.served else str(d)
            self.served[name] = open_served(name, d, device, warm)
        self.clip_dir = Path(tempfile.mkdtemp(prefix="simsearch-app-clips-"))  # windows cut out of long files
        weakref.finalize(self, shutil.rmtree, self.clip_dir, True)

    @property
    def names(self) -> list[str]:
        return list(self.served)

    def get(self, name: str | None) -> Served:
        if not name:
            return next(iter(self.served.values()))
        if name not in self.served:
            raise SimsearchError(f"unknown index {name!r}; choose one of: {', '.join(self.served)}")
        return self.served[name]

    def all_roots(self) -> list[str]:
        return sorted({str(r) for s in self.served.values() for r in s.roots})


def check_upload(path: str | Path | None, limits: Limits) -> Path:
    """An uploaded clip that is present, audio, and within the size and duration caps; else AudioError.

    With limits.upload_dir set, only files inside it are accepted: an API caller cannot name a server path.
    """
    if path is None or str(path).strip() == "":
        raise AudioError("query", "no audio given: upload a file or record from the microphone")
    p = Path(path)
    name = p.name
    if limits.upload_dir is not None and not inside(p, [limits.upload_dir]):
        raise AudioError(name, "only clips uploaded to this app are accepted, not paths on the server; "
                               "upload the file instead")
    if not p.is_file():
        raise AudioError(name, "the upload is gone; upload it again")
    size = p.stat().st_size
    if size == 0:
        raise AudioError(name, "file is empty (0 bytes)")
    if size > limits.max_upload_mb * MB:
        raise AudioError(name, f"file is {size / MB:.1f} MB; the limit is {limits.max_upload_mb:g} MB; "
                               "upload a shorter clip")
    try:
        info = sf.info(str(p))
    except Exception:  # libsndfile says little that helps a user here
        raise AudioError(name, "not an audio file this app can read; upload WAV, FLAC, OGG or MP3") from None
    seconds = info.frames / info.samplerate if info.samplerate else 0.0
    if seconds < MIN_DURATION_S:
        raise AudioError(name, "holds no audio (empty or too short)")
    if seconds > limits.max_duration_s:
        raise AudioError(name, f"clip is {seconds:.0f} s long; the limit is {limits.max_duration_s:g} s; "
                               "trim it and try again")
    return p


def clamp_k(k: Any, limits: Limits) -> int:
    """k from a slider or an API call, as an int in [1, max_k]."""
    try:
        k = int(k)
    except (TypeError, ValueError):
        raise SimsearchError(f"k must be a whole number from 1 to {limits.max_k}, got {k!r}") from None
    return max(1, min(k, limits.max_k))


def load_query(served: Served, path: str | Path | None, limits: Limits) -> np.ndarray:
    """The checked upload, decoded at the encoder's rate."""
    p = check_upload(path, limits)
    try:
        return decode(p, served.index.encoder.sample_rate)
    except AudioError as e:
        raise AudioError(p.name, e.reason) from None


def public(results: list[dict]) -> list[dict]:
    """Results in the API's documented shape."""
    return [{k: r[k] for k in RESULT_KEYS + MATCH_KEYS if k in r} for r in results]


def find_similar(pool: IndexPool, name: str | None, audio_path: str | Path | None, k: Any,
                 limits: Limits) -> tuple[list[dict], np.ndarray]:
    """Nearest clips to an uploaded or recorded clip; also returns the decoded query (encoder's rate)."""
    served = pool.get(name)
    k = clamp_k(k, limits)
    x = load_query(served, audio_path, limits)
    return served.index.search(audio=x, k=k), x


def text_support(served: Served) -> str:
    """A sentence telling the user which text search this index supports, if any."""
    mode = text_mode(served.index)
    enc = served.index.info["encoder"]["name"]
    if mode == "clap":
        return f"Text search uses the **CLAP text tower** of this index's encoder (`{enc}`)."
    if mode == "tags":
        return ("Text search maps your words onto the **521 AudioSet tags** YAMNet scored for every clip "
                "(offline; works best with sound words such as *dog*, *drum*, *speech*, *rain*).")
    return (f"**Text search is not available for this index**: it was built with `{enc}`, which has no text "
            f"space. Build an index with one of: {', '.join(f'`{e}`' for e in TEXT_ENCODERS)}.")


def text_search(pool: IndexPool, name: str | None, text: str | None, k: Any, limits: Limits) -> list[dict]:
    """Clips that best match a text query, in whatever text space the index has."""
    served = pool.get(name)
    k = clamp_k(k, limits)
    text = (text or "").strip()
    if not text:
        raise SimsearchError("type what to search for, e.g. 'dog barking' or 'snare drum'")
    if len(text) > MAX_TEXT_CHARS:
        raise SimsearchError(f"the query is {len(text)} characters; keep it under {MAX_TEXT_CHARS}")
    if text_mode(served.index) is None:
        raise SimsearchError(text_support(served).replace("**", "").replace("`", "'"))
    return served.index.search(text=text, k=k)


def query_tags(served: Served, text: str, top: int = 3) -> str:
    """For tag-space indexes: which AudioSet tags a text query was mapped to (explains the ranking)."""
    if text_mode(served.index) != "tags" or not (text or "").strip():
        return ""
    from simsearch.encoders.tag_text import top_tags
    from simsearch.encoders.yamnet import load_class_names

    tags = top_tags(text.strip(), load_class_names(), top=top)
    return "Matched AudioSet tags: " + ", ".join(f"**{name}** ({w:.0%})" for name, w in tags)


def parse_labels(labels: str | list[str] | None) -> list[str]:
    """'dog, cat; rain' or a list -> ['dog', 'cat', 'rain'] without blanks or repeats."""
    if labels is None:
        return []
    parts = labels if isinstance(labels, list) else str(labels).replace(";", ",").replace("\n", ",").split(",")
    return list(dict.fromkeys(p.strip() for p in parts if str(p).strip()))


def classify_clip(pool: IndexPool, name: str | None, audio_path: str | Path | None, k: Any,
                  zero_shot_labels: str | list[str] | None, limits: Limits) -> dict:
    """kNN label scores with the neighbours that voted, the probe's prediction, and zero-shot scores.

    Returns {"knn": [{"label","score"}], "neighbours": [result rows], "probe": [...] | None,
    "zero_shot": [...] | None, "notes": [str]}; scores are best first.
    """
    served = pool.get(name)
    k = clamp_k(k or KNN_K, limits)
    labels = parse_labels(zero_shot_labels)
    x = load_query(served, audio_path, limits)
    vector, extras = served.index.embed_clip(x)
    out: dict[str, Any] = {"knn": [], "neighbours": [], "probe": None, "zero_shot": None, "notes": []}
    if served.knn_bank is None:
        out["notes"].append("this index has no labels, so there is nothing to vote with; index with sub-folders "
                            "or --label-regex")
    else:
        classes, scores = knn_scores(vector, served.knn_bank, served.knn_labels, k)
        order = np.argsort(-scores[0], kind="stable")
        out["knn"] = [{"label": classes[i], "score": round(float(scores[0][i]), 6)} for i in order if scores[0][i] > 0]
        sims = served.knn_bank @ vector
        top = np.argsort(-sims, kind="stable")[:min(k, len(sims))]
        rows = served.knn_rows.iloc[top]
        out["neighbours"] = served.index.records(rows["id"].to_numpy(), sims[top])
    if served.has_probe:
        out["probe"] = classify_probe(served.index, vector)
    else:
        out["notes"].append(f"no probe trained for this index (train one with `simsearch probe {served.index.dir.root}`)")
    if labels:
        scores = zero_shot_scores(served.index, vector, extras, labels)
        order = np.argsort(-scores, kind="stable")
        out["zero_shot"] = [{"label": labels[i], "score": round(float(scores[i]), 6)} for i in order]
    return out


def index_overview(served: Served) -> tuple[str, pd.DataFrame]:
    """Markdown facts about an index (encoder, checkpoint, dim, counts) and its label histogram."""
    info = served.index.info
    enc = info["encoder"]
    counts = info.get("counts", {})
    rows = served.index.rows
    hist = (rows["label"].fillna("(none)").astype(str).value_counts().rename_axis("label").reset_index(name="rows"))
    facts = [
        ("folder", f"`{served.index.dir.root}`"),
        ("encoder", f"`{enc['name']}`"),
        ("checkpoint", f"`{enc.get('checkpoint') or '(bundled)'}`"),
        ("pooling / options", f"{enc.get('pooling') or '-'} {enc.get('options') or ''}"),
        ("dim", f"{info['dim']} ({info.get('metric', 'cosine')})"),
        ("files / rows", f"{counts.get('files', '?')} files, {counts.get('rows', len(rows))} rows"),
        ("labels", f"{int(rows['label'].notna().sum())} labelled rows, {len(hist) - int('(none)' in set(hist['label']))} labels"),
        ("windows", f"{info.get('window_s')} s, hop {info.get('hop_s') or info.get('window_s')} s"),
        ("text search", text_mode(served.index) or "none"),
        ("probe", "yes" if served.has_probe else "no"),
        ("sources", ", ".join(f"`{s}`" for s in info.get("sources", [])) or "-"),
        ("updated", str(info.get("updated_at", "-"))),
    ]
    md = "| index | |\n|---|---|\n" + "\n".join(f"| **{k}** | {v} |" for k, v in facts)
    return md, hist


def status_line(served: Served) -> str:
    info = served.index.info
    return (f"**{served.name}** · `{info['encoder']['name']}` · {len(served.index)} rows · "
            f"text search: {text_mode(served.index) or 'none'} · probe: {'yes' if served.has_probe else 'no'}")


def api_classify(pool: IndexPool, name: str | None, path: str | None, k: Any, labels: str | None,
                 limits: Limits) -> dict:
    """classify_clip in the API's JSON shape."""
    out = classify_clip(pool, name, path, k, labels, limits)
    return {"knn": out["knn"], "neighbours": public(out["neighbours"]), "probe": out["probe"],
            "zero_shot": out["zero_shot"], "notes": out["notes"]}


def api_index_info(pool: IndexPool, name: str | None) -> dict:
    served = pool.get(name)
    return {"name": served.name, **served.index.info}

