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
