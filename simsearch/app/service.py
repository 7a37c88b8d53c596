"""Request handling for the app: checks on what users send, and find-similar, text search and classify over an IndexPool.

These functions take plain values and return plain values, so tests (and scripts) call them without a browser;
ui.py and api.py wire them to Gradio components.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from simsearch.app.pool import IndexPool, Served, inside
from simsearch.app.views import text_support
from simsearch.audio.decode import MIN_DURATION_S, decode
from simsearch.classify.knn import KNN_K, knn_scores
from simsearch.classify.label import spoken_samples
from simsearch.classify.probe import classify_probe
from simsearch.classify.zeroshot import zero_shot_scores
from simsearch.errors import AudioError, SimsearchError
from simsearch.search.text import text_mode

log = logging.getLogger(__name__)
RESULT_KEYS = ("rank", "score", "path", "label", "offset_s", "duration_s", "id")
MATCH_KEYS = ("cosine", "match")  # audio queries on an index with landmark fingerprints (see Index.search)
WHY_KEYS = ("why", "at_s")  # text queries: what matched (names, words said, sound) and where the words were said
MAX_SLOTS = 20  # result rows the UI has room for; also the largest k
MAX_TEXT_CHARS = 500
MAX_LABELS = 50  # zero-shot labels per request: each costs a text embedding (about 30 ms of CPU with YAMNet tags)
MAX_LABEL_CHARS = 100
MB = 1024 * 1024  # Gradio reads "50mb" as 50 MiB; the app uses the same unit


@dataclass(frozen=True)
class Limits:
    """What the app accepts from users; set from the command line."""

    max_upload_mb: float = 50.0
    max_duration_s: float = 600.0
    max_k: int = MAX_SLOTS
    upload_dir: Path | None = None  # build_app sets Gradio's upload folder: query files must come from there
    cache_ttl_s: float = 900.0  # uploads and result clips older than this are deleted (Gradio's delete_cache)


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


def discard_upload(path: str | Path | None, limits: Limits) -> None:
    """Delete a query upload once its request is done, so uploads do not pile up until the cache sweep.

    Only files inside Gradio's upload folder are touched, with the per-upload folder Gradio made for it.
    """
    if not path or limits.upload_dir is None or not inside(path, [limits.upload_dir]):
        return
    p = Path(path).resolve()
    if p == limits.upload_dir.resolve():
        return
    p.unlink(missing_ok=True)
    try:
        if p.parent != limits.upload_dir.resolve():
            p.parent.rmdir()  # Gradio's one folder per upload (named by the content hash); kept if not empty
    except OSError:
        pass


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
    return [{k: r[k] for k in RESULT_KEYS + MATCH_KEYS + WHY_KEYS if k in r} for r in results]


def as_json(value: Any) -> str:
    """API answers as JSON text: a client that downloads every {"path": ...} it sees leaves text alone."""
    return json.dumps(value, ensure_ascii=False)


def find_similar(pool: IndexPool, name: str | None, audio_path: str | Path | None, k: Any,
                 limits: Limits) -> tuple[list[dict], np.ndarray]:
    """Nearest clips to an uploaded or recorded clip; also returns the decoded query (encoder's rate)."""
    served = pool.get(name)
    k = clamp_k(k, limits)
    x = load_query(served, audio_path, limits)
    return served.index.search(audio=x, k=k), x


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


def parse_labels(labels: str | list[str] | None) -> list[str]:
    """'dog, cat; rain' or a list -> ['dog', 'cat', 'rain'] without blanks or repeats; at most MAX_LABELS labels.

    Each label costs a text embedding, so the count and each label's length are capped before any work.
    """
    if labels is None:
        return []
    if not isinstance(labels, list) and len(str(labels)) > MAX_LABELS * (MAX_LABEL_CHARS + 2):
        raise SimsearchError(f"the labels are {len(str(labels))} characters in all; give at most {MAX_LABELS} "
                             f"labels of up to {MAX_LABEL_CHARS} characters each")
    parts = labels if isinstance(labels, list) else str(labels).replace(";", ",").replace("\n", ",").split(",")
    out = list(dict.fromkeys(str(p).strip() for p in parts if str(p).strip()))
    if len(out) > MAX_LABELS:
        raise SimsearchError(f"{len(out)} zero-shot labels given; the limit is {MAX_LABELS}: keep the ones "
                             "you want to tell apart")
    long = next((v for v in out if len(v) > MAX_LABEL_CHARS), None)
    if long is not None:
        raise SimsearchError(f"the label {long[:40]!r}... is {len(long)} characters; keep each label under "
                             f"{MAX_LABEL_CHARS} (a few words, e.g. 'dog barking')")
    return out


def knn_vote(served: Served, vector: np.ndarray, k: int) -> tuple[list[dict], list[dict]]:
    """kNN label scores (best first, only labels that got votes) and the labelled rows that voted."""
    classes, scores = knn_scores(vector, served.knn_bank, served.knn_labels, k)
    order = np.argsort(-scores[0], kind="stable")
    knn = [{"label": classes[i], "score": round(float(scores[0][i]), 6)} for i in order if scores[0][i] > 0]
    sims = served.knn_bank @ vector
    top = np.argsort(-sims, kind="stable")[:min(k, len(sims))]
    return knn, served.index.records(served.knn_rows["id"].to_numpy()[top], sims[top])


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
    vector, extras, windows = served.index.embed_clip_windows(x)
    out: dict[str, Any] = {"knn": [], "neighbours": [], "probe": None, "zero_shot": None, "notes": []}
    if not served.knn_labels:
        out["notes"].append("this index has no labels, so there is nothing to vote with; index with sub-folders "
                            "or --label-regex")
    else:
        out["knn"], out["neighbours"] = knn_vote(served, vector, k)
    if served.has_probe:
        out["probe"] = classify_probe(served.index, vector, windows)
    else:
        out["notes"].append(f"no probe trained for this index (train one with `simsearch probe {served.index.dir.root}`)")
    if labels:
        scores = zero_shot_scores(served.index, vector, extras, labels, spoken_samples(served.index, x),
                                  Path(audio_path).name if audio_path else None)
        order = np.argsort(-scores, kind="stable")
        out["zero_shot"] = [{"label": labels[i], "score": round(float(scores[i]), 6)} for i in order]
    return out


def api_classify(pool: IndexPool, name: str | None, path: str | None, k: Any, labels: str | None,
                 limits: Limits) -> dict:
    """classify_clip in the API's JSON shape."""
    out = classify_clip(pool, name, path, k, labels, limits)
    return {"knn": out["knn"], "neighbours": public(out["neighbours"]), "probe": out["probe"],
            "zero_shot": out["zero_shot"], "notes": out["notes"]}


def api_index_info(pool: IndexPool, name: str | None) -> dict:
    """index.json of an index, with its display name."""
    served = pool.get(name)
    return {"name": served.name, **served.index.info}
