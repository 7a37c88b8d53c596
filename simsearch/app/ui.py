"""The Gradio layout: four tabs wired to the service functions, plus the stable API endpoints (api.py)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import soundfile as sf

from simsearch.app.api import add_api, friendly
from simsearch.app.clips import exit_on_sigterm
from simsearch.app.media import is_window, result_audio, result_caption, spectrogram_image
from simsearch.app.pool import IndexPool, Served, find_index_dirs
from simsearch.app.rest import add_rest_routes
from simsearch.app.service import MAX_SLOTS, Limits, classify_clip, find_similar, public, text_search
from simsearch.app.views import index_overview, query_tags, status_line, text_support
from simsearch.classify.knn import KNN_K

log = logging.getLogger(__name__)
DISPLAY_KEYS = ("rank", "score", "path", "label", "offset_s")  # the neighbours table in the Classify tab
CONCURRENCY = 16  # requests handled at once: the models and indexes are shared read-only by every request


@dataclass
class Ctx:
    """What every tab needs: the open indexes, the request limits, the index picker, and the largest k."""

    pool: IndexPool
    limits: Limits
    index_dd: object  # gr.Dropdown
    max_k: int


class ResultSlots:
    """A fixed list of hidden result rows (audio player + caption) that a search fills in."""

    def __init__(self, n: int = MAX_SLOTS):
        import gradio as gr

        self.rows, self.audios, self.captions = [], [], []
        for i in range(n):
            with gr.Row(visible=False, equal_height=True) as row:
                audio = gr.Audio(label=f"#{i + 1}", interactive=False, type="filepath", scale=2, min_width=260,
                                 buttons=["download"], elem_classes=["result-audio"])
                caption = gr.Markdown(elem_classes=["result-caption"])
            self.rows.append(row)
            self.audios.append(audio)
            self.captions.append(caption)

    @property
    def outputs(self) -> list:
        return [*self.rows, *self.audios, *self.captions]

    def fill(self, pool: IndexPool, served: Served, results: list[dict]) -> list:
        """Updates for self.outputs: one visible row per result, the rest hidden."""
        import gradio as gr

        rows, audios, captions = [], [], []
        missing = 0
        for i in range(len(self.rows)):
            if i < len(results):
                r = results[i]
                clip = result_audio(served, r, pool.clips)
                missing += clip is None
                window = clip is not None and is_window(r, sf.info(r["path"]).duration)
                rows.append(gr.update(visible=True))
                audios.append(gr.update(value=clip, label=f"#{r['rank']}  {r['label'] or ''}".strip()))
                captions.append(result_caption(r, clip is not None, window))
            else:
                rows.append(gr.update(visible=False))
                audios.append(gr.update(value=None))
                captions.append("")
        if missing:
            gr.Warning(f"{missing} result(s) cannot be played: their files are outside the indexed folders or gone")
        return [*rows, *audios, *captions]


def scores_dict(scored: list[dict] | None) -> dict[str, float] | None:
    return None if not scored else {d["label"]: float(d["score"]) for d in scored}


def similar_tab(ctx: Ctx) -> None:
    """Find similar: upload or record a clip, see its spectrogram and the nearest rows with players."""
    import gradio as gr

    with gr.Tab("Find similar", id="similar"):
        with gr.Row():
            with gr.Column(scale=2):
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                 label="Query clip (upload or record)", elem_id="query-audio")
                with gr.Row():
                    k = gr.Slider(1, ctx.max_k, value=min(5, ctx.max_k), step=1, label="k (results)")
                    btn = gr.Button("Find similar", variant="primary", elem_id="find-similar")
            spec = gr.Image(label="Query spectrogram", type="numpy", interactive=False, scale=3,
                            elem_id="query-spectrogram")
        slots = ResultSlots(ctx.max_k)

    @friendly
    def on_similar(name, path, k):
        served = ctx.pool.get(name)
        results, x = find_similar(ctx.pool, name, path, k, ctx.limits)
        sr = served.index.encoder.sample_rate
        image = spectrogram_image(x, sr, f"query: {Path(path).name}  ({len(x) / sr:.1f} s)")
        return [image, *slots.fill(ctx.pool, served, results)]

    # progress (and, on failure, Gradio's red badge) on one component per tab, not on every result row
    btn.click(on_similar, [ctx.index_dd, audio, k], [spec, *slots.outputs], api_visibility="private",
              show_progress_on=spec)


def text_tab(ctx: Ctx, first: Served):
    """Search by text; returns the note on text support, which changes with the index."""
    import gradio as gr

    with gr.Tab("Search by text", id="text"):
        note = gr.Markdown(text_support(first))
        with gr.Row():
            text = gr.Textbox(label="Text query", placeholder="dog barking, snare drum, speech ...", scale=4,
                              elem_id="text-query")
            k = gr.Slider(1, ctx.max_k, value=min(5, ctx.max_k), step=1, label="k", scale=1)
            btn = gr.Button("Search", variant="primary", scale=1, elem_id="search-text")
        tags = gr.Markdown()
        slots = ResultSlots(ctx.max_k)

    @friendly
    def on_text(name, query, k):
        results = text_search(ctx.pool, name, query, k, ctx.limits)
        if not results:
            gr.Warning("no results: the index is empty")
        served = ctx.pool.get(name)
        return [query_tags(served, query), *slots.fill(ctx.pool, served, results)]

    for trigger in (btn.click, text.submit):
        trigger(on_text, [ctx.index_dd, text, k], [tags, *slots.outputs], api_visibility="private",
                show_progress_on=tags)
    return note


def classify_tab(ctx: Ctx) -> None:
    """Classify: kNN vote with its neighbours, the probe, and zero-shot scores over the user's labels."""
    import gradio as gr

    with gr.Tab("Classify", id="classify"):
        with gr.Row():
            with gr.Column(scale=2):
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Clip to label",
                                 elem_id="classify-audio")
                k = gr.Slider(1, ctx.max_k, value=min(KNN_K, ctx.max_k), step=1, label="k (neighbours that vote)")
                labels = gr.Textbox(label="Zero-shot labels (comma separated, optional)",
                                    placeholder="dog, rain, speech")
                btn = gr.Button("Classify", variant="primary", elem_id="classify-btn")
                notes = gr.Markdown()
            with gr.Column(scale=3):
                knn = gr.Label(label="kNN vote (similarity-weighted)", num_top_classes=10)
                probe = gr.Label(label="Probe prediction", num_top_classes=5)
                zero = gr.Label(label="Zero-shot over your labels", num_top_classes=10)
        neigh = gr.Dataframe(label="Neighbours that voted", interactive=False, wrap=True)

    @friendly
    def on_classify(name, path, k, zero_shot_labels):
        out = classify_clip(ctx.pool, name, path, k, zero_shot_labels, ctx.limits)
        table = pd.DataFrame(public(out["neighbours"]), columns=list(DISPLAY_KEYS)).round({"score": 3})
        return (scores_dict(out["knn"]), gr.update(value=scores_dict(out["probe"]), visible=out["probe"] is not None),
                gr.update(value=scores_dict(out["zero_shot"]), visible=out["zero_shot"] is not None), table,
                "\n".join(f"- {n}" for n in out["notes"]))

    btn.click(on_classify, [ctx.index_dd, audio, k, labels], [knn, probe, zero, neigh, notes],
              api_visibility="private", show_progress_on=knn)


def index_tab(first: Served) -> tuple:
    """Index facts and the label histogram; returns both components (they change with the index)."""
    import gradio as gr

    md, hist = index_overview(first)
    with gr.Tab("Index", id="index"):
        facts = gr.Markdown(md)
        plot = gr.BarPlot(hist, x="label", y="rows", title="Rows per label", sort="-y", x_label_angle=-45,
                          height=320, y_lim=[0, None], y_axis_format="d")
    return facts, plot


def page(pool: IndexPool, limits: Limits, max_k: int) -> None:
    """The web page: index picker, the four tabs; call inside the app's gr.Blocks."""
    import gradio as gr

    names = pool.names
    first = pool.get(names[0])
    gr.Markdown("# simsearch\nFind similar sounds, search by text, and label clips in an audio index.")
    with gr.Row():
        index_dd = gr.Dropdown(names, value=names[0], label="Index", scale=1, interactive=len(names) > 1,
                               elem_id="index-select")
        status = gr.Markdown(status_line(first))
    ctx = Ctx(pool, limits, index_dd, max_k)
    with gr.Tabs():
        similar_tab(ctx)
        note = text_tab(ctx, first)
        classify_tab(ctx)
        facts, plot = index_tab(first)

    @friendly
    def on_index(name):
        served = pool.get(name)
        return status_line(served), text_support(served), *index_overview(served)

    index_dd.change(on_index, index_dd, [status, note, facts, plot], api_visibility="private")


def build_app(index_dirs: list[str | Path] | None = None, limits: Limits = Limits(), device: str = "auto",
              warm: bool = True, pool: IndexPool | None = None, ui: bool = True):
    """The Gradio Blocks app over one or more index folders (see find_index_dirs); pool holds them open.

    ui=False serves the API alone: Gradio builds every new session's state from all of an app's components, so
    without the page's a REST call (one session each) costs the server far less CPU.
    """
    import gradio as gr

    pool = pool or IndexPool(find_index_dirs(index_dirs), device=device, warm=warm, clip_ttl_s=limits.cache_ttl_s)
    if limits.upload_dir is None:
        from gradio.utils import get_upload_folder

        limits = replace(limits, upload_dir=Path(get_upload_folder()).resolve())
    max_k = min(limits.max_k, MAX_SLOTS)
    ttl = max(1, int(limits.cache_ttl_s))
    # Every ttl/3 s Gradio deletes the uploads and cached result clips older than ttl, called for or not.
    with gr.Blocks(title="simsearch", analytics_enabled=False, delete_cache=(max(1, ttl // 3), ttl)) as demo:
        if ui:
            page(pool, limits, max_k)
        else:
            gr.Markdown("# simsearch API\nThis server answers the API only (see *Use via API* below).")
        add_api(pool, limits, max_k)

    demo.simsearch_pool = pool  # type: ignore[attr-defined]
    demo.simsearch_limits = limits  # type: ignore[attr-defined]
    return demo


def launch(demo, host: str = "127.0.0.1", port: int | None = None, block: bool = True, quiet: bool = False,
           concurrency: int | None = None):
    """Serve the app (the page or the Gradio API alone, plus the plain /v1 endpoints of rest.py). No source folder
    is opened to Gradio's file route: result audio is served as copies of index rows (see media.row_audio), uploads
    are capped; with block=True, SIGTERM cleans up and exits."""
    import gradio as gr

    pool: IndexPool = demo.simsearch_pool
    limits: Limits = demo.simsearch_limits
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # no web-font downloads
    demo.queue(default_concurrency_limit=concurrency or CONCURRENCY)
    out = demo.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=quiet,
                      max_file_size=f"{limits.max_upload_mb:g}mb", show_error=True, ssr_mode=False,
                      footer_links=["api"], theme=theme, css=CSS)
    add_rest_routes(out[0], pool, limits, concurrency or CONCURRENCY)  # /v1: one plain request per search
    if not block:
        return out
    exit_on_sigterm()
    try:
        demo.block_thread()
    finally:
        demo.close()  # runs Gradio's shutdown: it deletes this app's uploads and cached files
        pool.close()
    return out


CSS = """
.result-caption { font-size: 0.92em; }
.result-caption code { word-break: break-all; }
"""
