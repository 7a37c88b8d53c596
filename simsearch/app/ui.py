"""The Gradio layout: four tabs and the stable API endpoints, wired to the service functions."""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pandas as pd
import soundfile as sf

from simsearch.app.media import is_window, result_audio, result_caption, spectrogram_image
from simsearch.app.service import (
    MAX_SLOTS,
    RESULT_KEYS,
    IndexPool,
    Limits,
    Served,
    api_classify,
    api_index_info,
    classify_clip,
    find_index_dirs,
    find_similar,
    index_overview,
    public,
    query_tags,
    status_line,
    text_search,
    text_support,
)
from simsearch.classify.knn import KNN_K
from simsearch.errors import SimsearchError

log = logging.getLogger(__name__)




def friendly(fn: Callable) -> Callable:
    """Turn user errors into a readable gr.Error, and anything else into a short one (never a stack trace)."""
    import gradio as gr

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except SimsearchError as e:
            raise gr.Error(str(e), title="Cannot do that", print_exception=False) from None
        except Exception as e:  # a bug: log it for the operator, keep the page tidy for the user
            log.exception("request failed")
            raise gr.Error(f"something went wrong ({type(e).__name__}); the server log has the details",
                           print_exception=False) from None

    return wrapper


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
                clip = result_audio(served, r, pool.clip_dir)
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


def build_app(index_dirs: list[str | Path] | None = None, limits: Limits = Limits(), device: str = "auto",
              warm: bool = True, pool: IndexPool | None = None):
    """The Gradio Blocks app over one or more index folders (see find_index_dirs); pool holds them open."""
    import gradio as gr

    pool = pool or IndexPool(find_index_dirs(index_dirs), device=device, warm=warm)
    if limits.upload_dir is None:
        from gradio.utils import get_upload_folder

        limits = replace(limits, upload_dir=Path(get_upload_folder()).resolve())
    names = pool.names
    first = pool.get(names[0])
    max_k = min(limits.max_k, MAX_SLOTS)

    with gr.Blocks(title="simsearch", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        gr.Markdown("# simsearch\nFind similar sounds, search by text, and label clips in an audio index.")
        with gr.Row():
            index_dd = gr.Dropdown(names, value=names[0], label="Index", scale=1, interactive=len(names) > 1,
                                   elem_id="index-select")
            status = gr.Markdown(status_line(first))

        with gr.Tabs():
            with gr.Tab("Find similar", id="similar"):
                with gr.Row():
                    with gr.Column(scale=2):
                        q_audio = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                           label="Query clip (upload or record)", elem_id="query-audio")
                        with gr.Row():
                            q_k = gr.Slider(1, max_k, value=min(5, max_k), step=1, label="k (results)")
                            q_btn = gr.Button("Find similar", variant="primary", elem_id="find-similar")
                    q_spec = gr.Image(label="Query spectrogram", type="numpy", interactive=False, scale=3,
                                      elem_id="query-spectrogram")
                q_slots = ResultSlots(max_k)

            with gr.Tab("Search by text", id="text"):
                t_note = gr.Markdown(text_support(first))
                with gr.Row():
                    t_text = gr.Textbox(label="Text query", placeholder="dog barking, snare drum, speech ...",
                                        scale=4, elem_id="text-query")
                    t_k = gr.Slider(1, max_k, value=min(5, max_k), step=1, label="k", scale=1)
                    t_btn = gr.Button("Search", variant="primary", scale=1, elem_id="search-text")
                t_tags = gr.Markdown()
                t_slots = ResultSlots(max_k)

            with gr.Tab("Classify", id="classify"):
                with gr.Row():
                    with gr.Column(scale=2):
                        c_audio = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                           label="Clip to label", elem_id="classify-audio")
                        c_k = gr.Slider(1, max_k, value=min(KNN_K, max_k), step=1, label="k (neighbours that vote)")
                        c_labels = gr.Textbox(label="Zero-shot labels (comma separated, optional)",
                                              placeholder="dog, rain, speech")
                        c_btn = gr.Button("Classify", variant="primary", elem_id="classify-btn")
                        c_notes = gr.Markdown()
                    with gr.Column(scale=3):
                        c_knn = gr.Label(label="kNN vote (similarity-weighted)", num_top_classes=10)
                        c_probe = gr.Label(label="Probe prediction", num_top_classes=5)
                        c_zero = gr.Label(label="Zero-shot over your labels", num_top_classes=10)
                c_neigh = gr.Dataframe(label="Neighbours that voted", interactive=False, wrap=True)

            with gr.Tab("Index", id="index"):
                i_md = gr.Markdown(index_overview(first)[0])
                i_hist = gr.BarPlot(index_overview(first)[1], x="label", y="rows", title="Rows per label",
                                    sort="-y", x_label_angle=-45, height=320, y_lim=[0, None], y_axis_format="d")

        # ---- UI events (not part of the API: the API has its own JSON endpoints below)
        @friendly
        def on_similar(name, path, k):
            served = pool.get(name)
            results, x = find_similar(pool, name, path, k, limits)
            sr = served.index.encoder.sample_rate
            spec = spectrogram_image(x, sr, f"query: {Path(path).name}  ({len(x) / sr:.1f} s)")
            return [spec, *q_slots.fill(pool, served, results)]

        @friendly
        def on_text(name, text, k):
            results = text_search(pool, name, text, k, limits)
            if not results:
                gr.Warning("no results: the index is empty")
            served = pool.get(name)
            return [query_tags(served, text), *t_slots.fill(pool, served, results)]

        @friendly
        def on_classify(name, path, k, labels):
            out = classify_clip(pool, name, path, k, labels, limits)
            neigh = pd.DataFrame(public(out["neighbours"]), columns=list(RESULT_KEYS)).round({"score": 3})
            notes = "\n".join(f"- {n}" for n in out["notes"])
            return (scores_dict(out["knn"]), gr.update(value=scores_dict(out["probe"]), visible=out["probe"] is not None),
                    gr.update(value=scores_dict(out["zero_shot"]), visible=out["zero_shot"] is not None), neigh, notes)

        @friendly
        def on_index(name):
            served = pool.get(name)
            md, hist = index_overview(served)
            return status_line(served), text_support(served), md, hist

        # progress (and, on failure, Gradio's red badge) on one component per tab, not on every result row
        q_btn.click(on_similar, [index_dd, q_audio, q_k], [q_spec, *q_slots.outputs], api_visibility="private",
                    show_progress_on=q_spec)
        for trigger in (t_btn.click, t_text.submit):
            trigger(on_text, [index_dd, t_text, t_k], [t_tags, *t_slots.outputs], api_visibility="private",
                    show_progress_on=t_tags)
        c_btn.click(on_classify, [index_dd, c_audio, c_k, c_labels], [c_knn, c_probe, c_zero, c_neigh, c_notes],
                    api_visibility="private", show_progress_on=c_knn)
        index_dd.change(on_index, index_dd, [status, t_note, i_md, i_hist], api_visibility="private")

        # ---- API: stable names, JSON out
        with gr.Column(visible=False):
            a_file = gr.File(label="audio", type="filepath")
            a_text = gr.Textbox(label="text")
            a_k = gr.Number(label="k", value=min(10, max_k), precision=0)
            a_labels = gr.Textbox(label="labels")
            a_index = gr.Dropdown(names, value=names[0], label="index")
            a_out = gr.JSON(label="results")
            a_btn = gr.Button()

        def search_audio(audio: str, k: int, index: str) -> list[dict]:
            """Nearest clips to an audio file: [{rank, score, path, label, offset_s}], best first."""
            return public(find_similar(pool, index, audio, k, limits)[0])

        def search_text(text: str, k: int, index: str) -> list[dict]:
            """Clips matching a text query: [{rank, score, path, label, offset_s}], best first."""
            return public(text_search(pool, index, text, k, limits))

        def classify(audio: str, k: int, labels: str, index: str) -> dict:
            """{"knn", "neighbours", "probe", "zero_shot", "notes"} for an audio file."""
            return api_classify(pool, index, audio, k, labels, limits)

        def index_info(index: str) -> dict:
            """index.json of an index, with its display name."""
            return api_index_info(pool, index)

        for fn, inputs in ((search_audio, [a_file, a_k, a_index]), (search_text, [a_text, a_k, a_index]),
                           (classify, [a_file, a_k, a_labels, a_index]), (index_info, [a_index])):
            a_btn.click(friendly(fn), inputs, a_out, api_name=fn.__name__, api_description=fn.__doc__)

    demo.simsearch_pool = pool  # type: ignore[attr-defined]
    demo.simsearch_limits = limits  # type: ignore[attr-defined]
    return demo


def launch(demo, host: str = "127.0.0.1", port: int | None = None, block: bool = True, quiet: bool = False):
    """Serve the app; files are served only from the indexed roots, uploads are capped."""
    import gradio as gr

    pool: IndexPool = demo.simsearch_pool
    limits: Limits = demo.simsearch_limits
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # no web-font downloads
    demo.queue(default_concurrency_limit=2)
    return demo.launch(server_name=host, server_port=port, prevent_thread_lock=not block, quiet=quiet,
                       allowed_paths=pool.all_roots(), max_file_size=f"{limits.max_upload_mb:g}mb",
                       show_error=True, ssr_mode=False, footer_links=["api"], theme=theme, css=CSS)


CSS = """
.result-caption { font-size: 0.92em; }
.result-caption code { word-break: break-all; }
"""

