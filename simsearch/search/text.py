"""Text-to-audio search, and the one rule for which text space an index has (text search, zero-shot, the app)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from simsearch.encoders import SPECS
from simsearch.errors import SimsearchError

if TYPE_CHECKING:
    from simsearch.search.index import Index


TEXT_ENCODERS = [n for n, s in SPECS.items() if s.text]
TEXT_FIELDS = ("words", "sound")  # what a text query is matched against: file/metadata words, and the sound itself
RRF_K = 60  # reciprocal rank fusion constant (Cormack et al. 2009): 1/(RRF_K + rank) per ranking, summed
SOUND_DEPTH = 1000  # acoustic ranks a CLAP index fuses (tag-space indexes rank every row anyway)


@dataclass(frozen=True)
class TextSpace:
    """How an index answers text. "clap": the stored vectors' [start:stop] is a CLAP audio vector times `scale`
    (the whole vector, scale 1, for CLAP alone; the CLAP part of a fusion otherwise). "tags": stored tag_scores."""

    kind: str
    start: int = 0
    stop: int = 0
    scale: float = 1.0


def text_space(info: dict) -> TextSpace | None:
    """The text space of an index from its index.json: what the encoder recorded (Encoder.text_space), else, for
    an index made before that was recorded, what its encoder (or a fusion's parts, CLAP first) declares."""
    enc = info["encoder"]
    parts = enc.get("parts") or [enc]
    if "text_space" in enc:
        kind = enc["text_space"]
    else:
        kinds = {SPECS[p["name"]].text_space for p in parts if p.get("name") in SPECS}
        kind = "clap" if "clap" in kinds else "tags" if "tags" in kinds else None
    if kind == "tags":
        return TextSpace("tags") if "tag_scores" in info.get("extras", []) else None
    if kind != "clap":
        return None
    names = [p.get("name") for p in parts]
    i = names.index("clap") if "clap" in names else 0
    start = sum(int(p["dim"]) for p in parts[:i])
    weights = enc.get("weights") or [1.0] * len(parts)
    return TextSpace("clap", start, start + int(parts[i]["dim"]), float(np.sqrt(weights[i] / sum(weights))))


def text_mode(index: "Index") -> str | None:
    """'clap' (shared audio-text space), 'tags' (stored AudioSet scores) or None."""
    space = text_space(index.info)
    return space.kind if space else None


def no_text_space(index: "Index", what: str = "text search") -> SimsearchError:
    """The error for an index without a text space, naming the encoders that have one."""
    return SimsearchError(f"this index was built with encoder {index.info['encoder']['name']!r}, which has no text "
                          f"space; {what} works with indexes built with: {', '.join(TEXT_ENCODERS)} (alone or "
                          "fused with others)")


def search_text(index: "Index", text: str, k: int = 10, filter: dict | None = None,
                group_by_file: bool = False) -> list[dict]:
    """Rank the index's rows for a text query. CLAP: through the index (filters apply inside it), score = cosine
    with each row's CLAP vector; tags: the weighted tag probability (Index.search filters that ranking itself)."""
    text = (text or "").strip()
    if not text:
        raise SimsearchError("empty text query")
    space = text_space(index.info)
    if space is None:
        raise no_text_space(index)
    if space.kind == "clap":
        # embed_text gives a unit vector in the index's space (a fusion's: zeros outside the CLAP part), whose
        # cosine with a row is space.scale times the row's CLAP cosine
        hits = index.search_vector(index.encoder.embed_text([text])[0], k, filter, group_by_file)
        return [{**h, "score": round(float(h["score"]) / space.scale, 6)} for h in hits]
    if filter or group_by_file:
        raise ValueError("tag-space text search ranks every row; Index.search applies filters to that ranking")
    from simsearch.encoders.tag_text import rank_by_tags
    from simsearch.encoders.yamnet import load_class_names

    order, scores = rank_by_tags(text, index.extras["tag_scores"], load_class_names(), k)
    return index.records(index.rows.index.to_numpy()[order], scores)


def search_sound(index: "Index", text: str, k: int, filter: dict | None = None,
                 group_by_file: bool = False) -> list[dict]:
    """The acoustic text ranking (fields=("sound",)): CLAP through the index, tag scores filtered as a whole."""
    if not filter and not group_by_file:
        return search_text(index, text, k)
    if text_mode(index) == "clap":
        return search_text(index, text, k, filter, group_by_file)
    ranked = search_text(index, text, len(index))  # tag scoring ranks every row anyway: filter the ranking
    keep = set(index.rows["id"].to_numpy()[index.filter_mask(filter)]) if filter else None
    ids = np.array([r["id"] for r in ranked if keep is None or r["id"] in keep], np.int64)
    scores = np.array([r["score"] for r in ranked if keep is None or r["id"] in keep], np.float32)
    if group_by_file:
        ids, scores = index.best_per_file(ids, scores)
    return index.records(ids[:k], scores[:k])


def check_fields(fields: tuple[str, ...] | list[str] | str | None) -> tuple[str, ...]:
    """The fields a text query uses, checked (None: all of TEXT_FIELDS), so a typo fails loudly."""
    if fields is None:
        return TEXT_FIELDS
    if isinstance(fields, str):
        fields = [f.strip() for f in fields.split(",") if f.strip()]
    bad = [f for f in fields if f not in TEXT_FIELDS]
    if bad or not fields:
        raise SimsearchError(f"text fields must be some of {', '.join(TEXT_FIELDS)} (got {', '.join(fields) or 'none'})")
    return tuple(f for f in TEXT_FIELDS if f in fields)


def search_text_fields(index: "Index", text: str, k: int = 10, filter: dict | None = None,
                       group_by_file: bool = False, fields: tuple[str, ...] | None = None) -> list[dict]:
    """Text search over words and/or sound, fused by reciprocal rank so a file called "bass_hit" answers "bass".

    Rows are ordered by the fused score (sum of 1/(RRF_K + rank) over the rankings a row is in); "score" stays
    the acoustic score as before (the BM25 score for fields=("words",)); "why": {"words": the query words the
    row's names/metadata matched, "sound": its acoustic score, "fused": the fused score}.
    """
    fields = check_fields(fields)
    if not (text or "").strip():
        raise SimsearchError("empty text query")
    k = max(1, int(k))
    if fields == ("sound",):
        return [{**r, "why": {"words": [], "sound": r["score"], "fused": round(1.0 / (RRF_K + r["rank"]), 6)}}
                for r in search_sound(index, text, k, filter, group_by_file)]
    fused: dict[int, float] = {}
    sound: dict[int, float] = {}
    order: dict[int, int] = {}  # acoustic position, the tie-break
    keep = index.filter_mask(filter) if filter else None
    pos, word_scores, matched = index.words.rank(text, keep)
    ids_all = index.rows["id"].to_numpy()
    word_ids = [int(ids_all[p]) for p in pos]
    if "sound" in fields:
        sound, order = _sound_scores(index, text, filter, word_ids, k)
        for i, rank in order.items():
            fused[i] = 1.0 / (RRF_K + rank)
    # rows of one file (and files with the same words) tie: they share a rank, so a long file takes one place
    dense = np.cumsum(np.r_[True, word_scores[1:] != word_scores[:-1]]) if len(pos) else np.zeros(0, int)
    words_of, bm25 = {}, {}
    for p, i, rank, sc in zip(pos, word_ids, dense, word_scores):
        fused[i] = fused.get(i, 0.0) + 1.0 / (RRF_K + int(rank))
        words_of[i], bm25[i] = matched[p], float(sc)
    ranked = sorted(fused, key=lambda i: (-fused[i], order.get(i, len(index) + 1), i))
    ids = np.array(ranked, np.int64)
    vals = np.array([fused[i] for i in ranked], np.float32)
    if group_by_file:
        ids, vals = index.best_per_file(ids, vals)
    ids = ids[:k]
    score = sound if "sound" in fields else bm25
    out = index.records(ids, np.array([score[int(i)] for i in ids], np.float32))
    for r in out:
        r["why"] = {"words": words_of.get(r["id"], []), "sound": sound.get(r["id"]),
                    "fused": round(fused[r["id"]], 6)}
    return out


def _sound_scores(index: "Index", text: str, filter: dict | None, word_ids: list[int],
                  k: int) -> tuple[dict[int, float], dict[int, int]]:
    """Acoustic score and rank of the rows passing `filter` (CLAP: the best SOUND_DEPTH, plus the word matches)."""
    space = text_space(index.info)
    if space is None:
        raise no_text_space(index)
    if space.kind == "tags":
        hits = search_sound(index, text, len(index), filter)
        return {r["id"]: r["score"] for r in hits}, {r["id"]: n for n, r in enumerate(hits, start=1)}
    q = index.encoder.embed_text([text.strip()])[0]
    hits = index.search_vector(q, min(len(index), max(SOUND_DEPTH, 4 * k)), filter)
    scores = {r["id"]: round(float(r["score"]) / space.scale, 6) for r in hits}
    order = {r["id"]: n for n, r in enumerate(hits, start=1)}
    rest = np.array([i for i in word_ids if i not in scores], np.int64)
    if len(rest):  # word matches beyond the acoustic depth still show their acoustic score (but get no rank)
        qn = q / max(float(np.linalg.norm(q)), 1e-12)
        for i, s in zip(rest, index.vectors_for(rest) @ qn):
            scores[int(i)] = round(float(s) / space.scale, 6)
    return scores, order
