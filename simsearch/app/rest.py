"""Plain HTTP endpoints beside the Gradio app, for programs: one request per search (the clip is the request body),
JSON back, no upload step, queue or event stream, so a call costs the server far less CPU than Gradio's API.

    curl --data-binary @query.wav 'http://127.0.0.1:7860/v1/search_audio?k=10&index=NAME'
    curl 'http://127.0.0.1:7860/v1/search_text?text=dog+barking&k=10'

They share the pool, the limits and the answers (service.py) with the page and the Gradio API. A body is written
to the upload folder as it arrives and refused with 413 past --max-upload-mb, so no request can fill memory or
disk, and with 408 when it has not all arrived within BODY_TIMEOUT_S, so a body with no end holds nothing for long;
at most `concurrency` searches run at once (the rest wait), like Gradio's queue.
"""
# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations (Request) as objects.
import functools
import logging
import uuid
from collections.abc import Callable
from pathlib import Path

from simsearch.app.pool import IndexPool
from simsearch.app.service import MB, Limits, discard_upload, find_similar, public, text_search
from simsearch.errors import SimsearchError

log = logging.getLogger(__name__)
PREFIX = "/v1"
BODY_TIMEOUT_S = 120.0  # a whole request body must arrive within this (50 MB at 3.5 Mbit/s)


class TooLarge(Exception):
    """The request body passed the upload cap."""


class TooSlow(Exception):
    """The request body did not all arrive within BODY_TIMEOUT_S."""


async def save_body(request, limits: Limits) -> Path:
    """The request body, streamed into its own folder under the upload folder, at most max_upload_mb, within
    BODY_TIMEOUT_S."""
    from anyio import fail_after

    cap = int(limits.max_upload_mb * MB)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise TooLarge
    folder = Path(limits.upload_dir) / f"rest-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    path = folder / "query"
    size = 0
    try:
        with open(path, "wb") as f, fail_after(BODY_TIMEOUT_S):
            async for chunk in request.stream():
                size += len(chunk)
                if size > cap:
                    raise TooLarge
                f.write(chunk)
    except BaseException as e:  # over the cap, too slow, or the client went away mid-body: nothing stays behind
        discard_upload(path, limits)
        if isinstance(e, TimeoutError):
            raise TooSlow from None
        raise
    return path


def add_rest_routes(app, pool: IndexPool, limits: Limits, concurrency: int) -> None:
    """Mount the /v1 endpoints on the app's FastAPI server (after launch: the same port and process)."""
    from anyio import CapacityLimiter, to_thread
    from fastapi import Request
    from fastapi.responses import JSONResponse

    limiter = CapacityLimiter(concurrency)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def answer(fn: Callable, *args) -> JSONResponse:
        """Run a blocking search on a worker thread, at most `concurrency` at once; user errors as 400."""
        try:
            return JSONResponse(public(await to_thread.run_sync(functools.partial(fn, *args), limiter=limiter)))
        except SimsearchError as e:
            return error(400, str(e))
        except Exception as e:  # a bug: logged for the operator, a short answer for the caller
            log.exception("request failed")
            return error(500, f"something went wrong ({type(e).__name__}); the server log has the details")

    async def search_audio(request: Request, k: int = 10, index: str | None = None):
        """Nearest clips to the audio file sent as the body: [{rank, score, path, label, offset_s, duration_s,
        id, cosine, match}], best first."""
        try:
            path = await save_body(request, limits)
        except TooLarge:
            return error(413, f"the clip is larger than {limits.max_upload_mb:g} MB")
        except TooSlow:
            return error(408, f"the clip did not arrive within {BODY_TIMEOUT_S:g} s")
        try:
            return await answer(lambda: find_similar(pool, index, path, k, limits)[0])
        finally:
            discard_upload(path, limits)

    async def search_text(text: str, k: int = 10, index: str | None = None):
        """Clips matching a text query: [{rank, score, path, label, offset_s, duration_s, id, why, at_s}]."""
        return await answer(lambda: text_search(pool, index, text, k, limits))

    async def indexes():
        """The names of the indexes this server searches."""
        return JSONResponse(pool.names)

    app.add_api_route(f"{PREFIX}/search_audio", search_audio, methods=["POST"])
    app.add_api_route(f"{PREFIX}/search_text", search_text, methods=["GET"])
    app.add_api_route(f"{PREFIX}/indexes", indexes, methods=["GET"])
