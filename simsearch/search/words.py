"""Words per row, BM25-ranked for a query: names (file, folders, label, manifest values) and spoken words.

People type what files are called ("bass", "kick") and what was said ("seven"); the acoustic text spaces only
know AudioSet tags or CLAP captions. Built from Index.rows (and the index's transcripts) on first use and cached
on the Index, so they are always in step with the shards.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import PurePath

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.feature_extraction import DictVectorizer

BM25_K1 = 1.2  # term-frequency saturation (the usual BM25 value)
BM25_B = 0.75  # document-length normalisation (the usual BM25 value)
PREFIX_MIN = 4  # a query word matches a name word it starts (or that starts it) if both have this many letters: guit ~ guitar
NUMBERS = "zero one two three four five six seven eight nine ten eleven twelve".split()
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


def name_docs(rows: pd.DataFrame) -> list[dict[str, float]]:
    """Each row's name/folder/label/metadata words, counted."""
    meta = rows["metadata"] if "metadata" in rows else [None] * len(rows)
    return [dict(Counter(row_words(p, lab, m))) for p, lab, m in zip(rows["path"], rows["label"], meta)]


def spoken_docs(words: pd.Series) -> list[dict[str, float]]:
    """Each row's spoken words (transcripts' [word, start, end, p] lists), each form counted by its probability,
    so a word Whisper was unsure of weighs less than one it was sure of."""
    docs = []
    for ws in words:
        doc: dict[str, float] = {}
        for w in ws:
            for form in _forms(w[0]):
                doc[form] = doc.get(form, 0.0) + max(float(w[3]), 1e-3)
        docs.append(doc)
    return docs


def spoken_forms(word: str) -> list[str]:
    """The searchable forms of a spoken word: itself, and the number word of a numeral ("7" -> "seven"), since
    Whisper writes numbers as digits and people type them as words."""
    if word.isdigit() and int(word) < len(NUMBERS):
        return [word, NUMBERS[int(word)]]
    return [word]


def _forms(word: str) -> list[str]:
    return [f for piece in split_words(word) for f in spoken_forms(piece)]


def _matches(term: str, word: str) -> bool:
    """A query word matches a term: the same, or one starts the other and both are long enough (guit ~ guitar)."""
    return term == word or (min(len(term), len(word)) >= PREFIX_MIN and (term.startswith(word) or word.startswith(term)))


def spoken_at(words: list, query_words: list[str]) -> list[dict]:
    """Where in a window (seconds from its start) each matched query word was first said, and how sure Whisper was."""
    out = []
    for q in query_words:
        hit = next((w for w in words if any(_matches(f, q) for f in _forms(w[0]))), None)
        if hit is not None:
            out.append({"word": hit[0], "start_s": float(hit[1]), "p": float(hit[3])})
    return out


class WordIndex:
    """BM25 over the rows' words (weighted counts); rows of one file share its name words, so they tie."""

    def __init__(self, docs: list[dict[str, float]]):
        self.n = len(docs)
        if not any(docs):
            self.vocab: dict[str, int] = {}
            self.weights = sparse.csc_matrix((self.n, 0), dtype=np.float32)
            return
        dv = DictVectorizer(dtype=np.float32)  # the words are already split and counted
        tf = dv.fit_transform(docs).tocsc()
        self.vocab = dict(dv.vocabulary_)
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
        return [j for t, j in self.vocab.items() if _matches(t, word)]

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
