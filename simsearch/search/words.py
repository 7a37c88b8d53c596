"""Metadata words per row (file name, folders, label, manifest values) and BM25 ranking of rows for a query.

People type what files are called ("bass", "kick"); the acoustic text spaces only know AudioSet tags or CLAP
captions. Built from Index.rows on first use and cached on the Index, so it is always in step with the shards.
"""
from __future__ import annotations

import json
import re
from pathlib import PurePath

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer

BM25_K1 = 1.2  # term-frequency saturation (the usual BM25 value)
BM25_B = 0.75  # document-length normalisation (the usual BM25 value)
PREFIX_MIN = 4  # a query word matches a name word it starts (or that starts it) if both have this many letters: guit ~ guitar
FOLDERS = 2  # parent folders whose names count as words (the nearest ones: "drums/kicks/x.wav")

# Within an alphanumeric run: UPPER runs not followed by lower case, Capitalised or lower words, digit runs.
_PIECE = re.compile(r"[A-Z]+(?![^\W\d_A-Z])|[A-Z]?[^\W\d_A-Z]+|\d+")


def split_words(text: str) -> list[str]:
    """Lower-case words of a name: split on non-alphanumerics, camelCase and letter/digit boundaries."""
    return [p.lower() for run in re.split(r"[\W_]+", str(text or "")) for p in _PIECE.findall(run)]


def row_words(path: str, label: object = None, metadata: object = None) -> list[str]:
    """A row's words: file stem, nearest parent folder names, label and the manifest metadata's string values."""
    p = PurePath(str(path))
    parts = [p.stem, *[f.name for f in list(p.parents)[:FOLDERS]]]
    if isinstance(label, str):
        parts.append(label)
    if isinstance(metadata, str) and metadata:
        try:
            meta = json.loads(metadata)
        except ValueError:
            meta = {}
        if isinstance(meta, dict):
            parts += [v for v in meta.values() if isinstance(v, str)]
    return [w for part in parts for w in split_words(part)]


class WordIndex:
    """BM25 over the rows' words; rows of one file share its words, so they tie."""

    def __init__(self, rows: pd.DataFrame):
        docs = [row_words(p, lab, m) for p, lab, m in
                zip(rows["path"], rows["label"], rows["metadata"] if "metadata" in rows else [None] * len(rows))]
        self.n = len(docs)
        if not any(docs):
            self.vocab: dict[str, int] = {}
            self.weights = sparse.csc_matrix((self.n, 0), dtype=np.float32)
            return
        cv = CountVectorizer(analyzer=lambda d: d)  # the words are already split: count them
        tf = cv.fit_transform(docs).tocsc().astype(np.float32)
        self.vocab = dict(cv.vocabulary_)
        df = np.diff(tf.indptr).astype(np.float32)
        idf = np.log1p((self.n - df + 0.5) / (df + 0.5))
        length = np.asarray(tf.sum(axis=1)).ravel()
        norm = BM25_K1 * (1 - BM25_B + BM25_B * length / max(float(length.mean()), 1e-9))
        w = tf.tocoo()
        vals = w.data * (BM25_K1 + 1) / (w.data + norm[w.row]) * idf[w.col]
        self.weights = sparse.csc_matrix((vals, (w.row, w.col)), shape=tf.shape)

    def _terms(self, word: str) -> list[int]:
        """Vocabulary columns a query word matches: itself, or a word it prefixes / that prefixes it (long enough)."""
        if word in self.vocab:
            return [self.vocab[word]]
        if len(word) < PREFIX_MIN:
            return []
        return [j for t, j in self.vocab.items() if len(t) >= PREFIX_MIN and (t.startswith(word) or word.startswith(t))]

    def score(self, query: str) -> tuple[np.ndarray, list[list[str]]]:
        """(BM25 score per row [N], the query words each row matched); a query word counts its best matching term."""
        total = np.zeros(self.n, np.float32)
        matched: list[list[str]] = [[] for _ in range(self.n)]
        for word in dict.fromkeys(split_words(query)):
            cols = self._terms(word)
            if not cols:
                continue
            best = np.asarray(self.weights[:, cols].max(axis=1).todense()).ravel()
            total += best
            for i in np.flatnonzero(best > 0):
                matched[i].append(word)
        return total, matched

    def rank(self, query: str, keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
        """Positions (in rows order) of rows with a word match, best first, with their scores; and the words per row."""
        scores, matched = self.score(query)
        hit = scores > 0 if keep is None else (scores > 0) & keep
        pos = np.flatnonzero(hit)
        pos = pos[np.argsort(-scores[pos], kind="stable")]
        return pos, scores[pos], matched
