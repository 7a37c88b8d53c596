"""Text-to-audio search: the CLAP text tower where the index has it, else the offline AudioSet tag space."""
from __future__ import annotations

from typing import TYPE_CHECKING

from simsearch.encoders import SPECS
from simsearch.errors import SimsearchError

if TYPE_CHECKING:
    from simsearch.search.index import Index


TEXT_ENCODERS = [n for n, s in SPECS.items() if s.text]


def text_mode(index: "Index") -> str | None:
    """'clap' (shared audio-text space), 'tags' (stored AudioSet scores) or None."""
    name = index.info["encoder"]["name"]
    if name == "clap":
        return "clap"
    if "tag_scores" in index.info.get("extras", []):
        return "tags"
    return None


def search_text(index: "Index", text: str, k: int = 10) -> list[dict]:
    """Rank the index's rows for a text query."""
    text = (text or "").strip()
    if not text:
        raise SimsearchError("empty text query")
    mode = text_mode(index)
    if mode == "clap":
        return index.search_vector(index.encoder.embed_text([text])[0], k)
    if mode == "tags":
        from simsearch.encoders.tag_text import rank_by_tags
        from simsearch.encoders.yamnet import load_class_names

        order, scores = rank_by_tags(text, index.extras["tag_scores"], load_class_names(), k)
        return index.records(index.rows.index.to_numpy()[order], scores)
    raise SimsearchError(f"this index was built with encoder {index.info['encoder']['name']!r}, which has no text "
                         f"space; text search works with indexes built with: {', '.join(TEXT_ENCODERS)}")

