"""The app's stable API endpoints: search_audio, search_text, classify, index_info (JSON text) and result_audio (a file).

Answers are JSON *text*, not JSON values: gradio_client, by default, takes every {"path": "..."} it finds in an
answer for a file, downloads it and puts the local path in its place, which turned result rows into bare paths.
Text passes through untouched; callers read it with json.loads. The audio of a result is fetched by its index
name and row id through /result_audio, which returns the row's window cut server-side.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from simsearch.app.media import row_audio
from simsearch.app.pool import IndexPool
from simsearch.app.service import Limits, api_classify, api_index_info, as_json, discard_upload, find_similar, public, text_search
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


def api_functions(pool: IndexPool, limits: Limits) -> list[Callable]:
    """The endpoint functions; their names are the API names and their docstrings the API descriptions."""

    def search_audio(audio: str, k: int, index: str) -> str:
        """Nearest clips to an audio file, as JSON text: [{rank, score, path, label, offset_s, duration_s, id,
        cosine, match}], best first (cosine and match on indexes with landmarks). Read it with json.loads."""
        try:
            return as_json(public(find_similar(pool, index, audio, k, limits)[0]))
        finally:
            discard_upload(audio, limits)

    def search_text(text: str, k: int, index: str) -> str:
        """Clips matching a text query, as JSON text: [{rank, score, path, label, offset_s, duration_s, id}]."""
        return as_json(public(text_search(pool, index, text, k, limits)))

    def classify(audio: str, k: int, labels: str, index: str) -> str:
        """JSON text {"knn", "neighbours", "probe", "zero_shot", "notes"} for an audio file."""
        try:
            return as_json(api_classify(pool, index, audio, k, labels, limits))
        finally:
            discard_upload(audio, limits)

    def index_info(index: str) -> str:
        """index.json of an index, with its display name, as JSON text."""
        return as_json(api_index_info(pool, index))

    def result_audio(index: str, row_id: int) -> str:
        """The audio of one result (its index and its "id"), cut to the result's window, as a file."""
        return str(row_audio(pool.get(index), row_id, pool.clips))

    return [search_audio, search_text, classify, index_info, result_audio]


def add_api(pool: IndexPool, limits: Limits, max_k: int) -> None:
    """Hidden components and the named endpoints; call inside the app's gr.Blocks."""
    import gradio as gr

    names = pool.names
    with gr.Column(visible=False):
        a_file = gr.File(label="audio", type="filepath")
        a_text = gr.Textbox(label="text")
        a_k = gr.Number(label="k", value=min(10, max_k), precision=0)
        a_labels = gr.Textbox(label="labels")
        a_index = gr.Dropdown(names, value=names[0], label="index")
        a_row = gr.Number(label="row_id", precision=0)
        a_json = gr.Textbox(label="json")
        a_clip = gr.File(label="clip")
        a_btn = gr.Button()
    search_audio, search_text, classify, index_info, result_audio = api_functions(pool, limits)
    wiring = ((search_audio, [a_file, a_k, a_index], a_json), (search_text, [a_text, a_k, a_index], a_json),
              (classify, [a_file, a_k, a_labels, a_index], a_json), (index_info, [a_index], a_json),
              (result_audio, [a_index, a_row], a_clip))
    for fn, inputs, output in wiring:
        a_btn.click(friendly(fn), inputs, output, api_name=fn.__name__, api_description=fn.__doc__)
