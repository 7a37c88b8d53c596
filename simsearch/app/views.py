"""Text the app shows about an index: its status line, its facts and label histogram, and what text search it has."""
from __future__ import annotations

import pandas as pd

from simsearch.app.pool import Served
from simsearch.encoders.profiles import record_line
from simsearch.search.text import TEXT_ENCODERS, text_mode


def text_support(served: Served) -> str:
    """A sentence telling the user which text search this index supports, if any."""
    mode = text_mode(served.index)
    enc = served.index.info["encoder"]["name"]
    names = "File and folder names, labels and metadata words are searched too"
    if served.index.info.get("transcribe", "off") != "off":
        names += ", and the **words spoken** in clips with speech"
    if mode == "clap":
        return f"Text search uses the **CLAP text tower** of this index's encoder (`{enc}`). {names}."
    if mode == "tags":
        return ("Text search maps your words onto the **521 AudioSet tags** YAMNet scored for every clip "
                f"(offline; works best with sound words such as *dog*, *drum*, *speech*, *rain*). {names}; each "
                "result says what it matched.")
    return (f"**Text search is not available for this index**: it was built with `{enc}`, which has no text "
            f"space. Build an index with one of: {', '.join(f'`{e}`' for e in TEXT_ENCODERS)}.")


def query_tags(served: Served, text: str, top: int = 3) -> str:
    """For tag-space indexes: which AudioSet tags a text query was mapped to (explains the ranking)."""
    if text_mode(served.index) != "tags" or not (text or "").strip():
        return ""
    from simsearch.encoders.tag_text import index_class_names, top_tags

    tags = top_tags(text.strip(), index_class_names(served.index.info), top=top)
    return "Matched AudioSet tags: " + ", ".join(f"**{name}** ({w:.0%})" for name, w in tags)


def index_overview(served: Served) -> tuple[str, pd.DataFrame]:
    """Markdown facts about an index (encoder, profile, checkpoint, dim, counts) and its label histogram."""
    info = served.index.info
    enc = info["encoder"]
    counts = info.get("counts", {})
    rows = served.index.rows
    hist = (rows["label"].fillna("(none)").astype(str).value_counts().rename_axis("label").reset_index(name="rows"))
    facts = [
        ("folder", f"`{served.index.dir.root}`"),
        ("encoder", f"`{enc['name']}`"),
        ("profile", record_line(info["profile"]) if info.get("profile") else "-"),
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
    """One line naming the index, its encoder, size, and what it offers."""
    info = served.index.info
    return (f"**{served.name}** · `{info['encoder']['name']}` · {len(served.index)} rows · "
            f"text search: {text_mode(served.index) or 'none'} · probe: {'yes' if served.has_probe else 'no'}")
