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
# what a text query is matched against: file/metadata words, the words said in the clip, and the sound itself
TEXT_FIELDS = ("words", "spoken", "sound")
RRF_K = 60  # reciprocal rank fusion constant (Cormack et al. 2009): 1/(RRF_K + rank) per ranking, summed
SOUND_DEPTH = 1000  # acoustic ranks fused (the word matches beyond them keep their acoustic score for "why")


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
    # the part with the audio-text space (CLAP, PE-Audio): as recorded, else as its encoder declares
    kinds = [p.get("text_space") or (SPECS[p["name"]].text_space if p.get("name") in SPECS else None) for p in parts]
    i = kinds.index("clap") if "clap" in kinds else 0
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
    from simsearch.encoders.tag_text import index_class_names, rank_by_tags

    order, scores = rank_by_tags(text, index.extras["tag_scores"], index_class_names(index.info), k,
                                 stats=index.tag_stats)
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
    """Text search over names, spoken words and sound, fused by reciprocal rank so a file called "bass_hit" answers
    "bass" and a clip where someone says "seven" answers "seven".

    Rows are ordered by the fused score (sum of 1/(RRF_K + rank) over the rankings a row is in); "score" stays
    the acoustic score (the first word field's BM25 score without "sound"); "why": {"words": the query words the
    row's names/metadata matched, "spoken": [{"word", "start_s", "p"}] said in the row, "sound": its acoustic
    score, "tags": the AudioSet tags the query went to with their share (tag-space indexes), "fused"}. A hit
    with spoken words also carries "at_s": where in its file the first of them was said.
    """
    fields = check_fields(fields)
    if not (text or "").strip():
        raise SimsearchError("empty text query")
    k = max(1, int(k))
    if fields == ("sound",):
        return [{**r, "why": {"words": [], "spoken": [], "sound": r["score"], "tags": _tags(index, text),
                              "fused": round(1.0 / (RRF_K + r["rank"]), 6)}}
                for r in search_sound(index, text, k, filter, group_by_file)]
    if fields == ("spoken",) and index.spoken is None:
        raise SimsearchError(f"{index.dir.root} keeps no spoken words; index it with --transcribe auto|on")
    fused: dict[int, float] = {}
    sound: dict[int, float] = {}
    order: dict[int, int] = {}  # acoustic position, the tie-break
    keep = index.filter_mask(filter) if filter else None
    ids_all = index.rows["id"].to_numpy()
    matched: dict[str, dict[int, list[str]]] = {"words": {}, "spoken": {}}
    bm25: dict[int, float] = {}
    for field in ("words", "spoken"):
        words = index.words if field == "words" else index.spoken
        if field not in fields or words is None:
            continue
        pos, scores, matches = words.rank(text, keep)
        # rows of one file (and files with the same words) tie: they share a rank, so a long file takes one place
        dense = np.cumsum(np.r_[True, scores[1:] != scores[:-1]]) if len(pos) else np.zeros(0, int)
        for p, rank, sc in zip(pos, dense, scores):
            i = int(ids_all[p])
            fused[i] = fused.get(i, 0.0) + 1.0 / (RRF_K + int(rank))
            matched[field][i] = matches[p]
            bm25.setdefault(i, float(sc))
    if "sound" in fields:
        sound, order = _sound_scores(index, text, filter, list(fused), k)
        for i, rank in order.items():
            fused[i] = fused.get(i, 0.0) + 1.0 / (RRF_K + rank)
    ranked = sorted(fused, key=lambda i: (-fused[i], order.get(i, len(index) + 1), i))
    ids = np.array(ranked, np.int64)
    vals = np.array([fused[i] for i in ranked], np.float32)
    if group_by_file:
        ids, vals = index.best_per_file(ids, vals)
    ids = ids[:k]
    score = sound if "sound" in fields else bm25
    out = index.records(ids, np.array([score[int(i)] for i in ids], np.float32))
    tags = _tags(index, text) if "sound" in fields else []
    for r in out:
        said = _said(index, r, matched["spoken"].get(r["id"], []))
        r["why"] = {"words": matched["words"].get(r["id"], []), "spoken": said, "sound": sound.get(r["id"]),
                    "tags": tags, "fused": round(fused[r["id"]], 6)}
        if said:
            r["at_s"] = round(r["offset_s"] + said[0]["start_s"], 2)
    return out


def _said(index: "Index", hit: dict, query_words: list[str]) -> list[dict]:
    """The spoken words a hit matched, with where in its window they were said."""
    if not query_words:
        return []
    from simsearch.search.words import spoken_at

    return spoken_at(index.transcripts["words"].loc[hit["id"]], query_words)


def _tags(index: "Index", text: str) -> list[dict]:
    """The AudioSet tags a tag-space index maps the query to, with their share of it ([] for CLAP)."""
    space = text_space(index.info)
    if space is None or space.kind != "tags":
        return []
    from simsearch.encoders.tag_text import index_class_names, top_tags

    return [{"tag": name, "share": round(w, 3)} for name, w in top_tags(text.strip(), index_class_names(index.info))]


def _sound_scores(index: "Index", text: str, filter: dict | None, word_ids: list[int],
                  k: int) -> tuple[dict[int, float], dict[int, int]]:
    """Acoustic score and rank of the best SOUND_DEPTH rows passing `filter`, plus the score (no rank) of the word
    matches beyond them: further down, 1/(RRF_K + rank) no longer moves a fused ranking."""
    space = text_space(index.info)
    if space is None:
        raise no_text_space(index)
    depth = min(len(index), max(SOUND_DEPTH, 4 * k))
    if space.kind == "tags":
        from simsearch.encoders.tag_text import index_class_names, rank_by_tags

        order, sorted_scores = rank_by_tags(text, index.extras["tag_scores"], index_class_names(index.info),
                                            len(index), stats=index.tag_stats)
        if filter:
            passing = index.filter_mask(filter)[order]
            order, sorted_scores = order[passing], sorted_scores[passing]
        ids_all = index.rows["id"].to_numpy()
        scores = {int(ids_all[p]): round(float(v), 6) for p, v in zip(order[:depth], sorted_scores[:depth])}
        ranks = {int(ids_all[p]): n for n, p in enumerate(order[:depth], start=1)}
        by_id = dict(zip(ids_all[order].tolist(), sorted_scores.tolist()))
        scores.update({i: round(float(by_id[i]), 6) for i in word_ids if i not in scores and i in by_id})
        return scores, ranks
    q = index.encoder.embed_text([text.strip()])[0]
    hits = index.search_vector(q, depth, filter)
    scores = {r["id"]: round(float(r["score"]) / space.scale, 6) for r in hits}
    order = {r["id"]: n for n, r in enumerate(hits, start=1)}
    rest = np.array([i for i in word_ids if i not in scores], np.int64)
    if len(rest):  # word matches beyond the acoustic depth still show their acoustic score (but get no rank)
        qn = q / max(float(np.linalg.norm(q)), 1e-12)
        for i, s in zip(rest, index.vectors_for(rest) @ qn):
            scores[int(i)] = round(float(s) / space.scale, 6)
    return scores, order
