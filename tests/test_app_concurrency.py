"""The app answers several requests at once, through Gradio's API and the plain /v1 endpoint alike: two searches run
inside the shared index at the same time, and with --concurrency 1 in turn."""
from __future__ import annotations

import json
import threading

import pytest

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")
httpx = pytest.importorskip("httpx")

from conftest import noise, tone, write  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402

from simsearch.app.ui import CONCURRENCY, build_app, launch  # noqa: E402
from simsearch.indexing.job import run_index  # noqa: E402
from simsearch.indexing.options import IndexOptions  # noqa: E402


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("conc")
    for i in range(4):
        write(root / "src" / "low" / f"low{i}.wav", tone(220 + 10 * i, 1.5, seed=i))
        write(root / "src" / "noise" / f"noise{i}.wav", noise(1.5, seed=10 + i))
    run_index(root / "src", root / "ix", IndexOptions(encoder="spectral", num_workers=1, progress=False))
    return root


def overlapping_searches(index_dir, concurrency: int | None, wait_s: float, via: str = "gradio"
                         ) -> tuple[list[bool], list[list[dict]]]:
    """Two clients search at once (`via` Gradio's API or /v1); each search waits (up to wait_s) inside the index for
    the other to arrive."""
    demo = build_app([index_dir / "ix"], warm=False)
    served = next(iter(demo.simsearch_pool.served.values()))
    real_search, meet = served.index.search, threading.Barrier(2, timeout=wait_s)
    met: list[bool] = []

    def search(*args, **kwargs):  # the real search, after seeing whether the other request is inside too
        try:
            meet.wait()
            met.append(True)
        except threading.BrokenBarrierError:
            met.append(False)
        return real_search(*args, **kwargs)

    served.index.search = search
    _, url, _ = launch(demo, port=None, block=False, quiet=True, concurrency=concurrency)
    answers: list[list[dict]] = []
    try:
        clients = [Client(url, verbose=False, download_files=False) if via == "gradio" else None for _ in range(2)]
        queries = [index_dir / "src" / "low" / "low1.wav", index_dir / "src" / "noise" / "noise2.wav"]

        def ask(client, q):
            if via == "gradio":
                answers.append(json.loads(client.predict(handle_file(str(q)), 3, "ix", api_name="/search_audio")))
            else:
                r = httpx.post(f"{url.rstrip('/')}/v1/search_audio", params={"k": 3, "index": "ix"},
                               content=q.read_bytes(), timeout=60)
                answers.append(r.json())

        threads = [threading.Thread(target=ask, args=(c, q)) for c, q in zip(clients, queries)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        demo.close()
    return met, answers


@pytest.mark.parametrize("via", ["gradio", "v1"])
def test_two_searches_run_at_the_same_time(index_dir, via):
    assert CONCURRENCY >= 2
    met, answers = overlapping_searches(index_dir, None, 20.0, via)  # generous: a loaded machine delays the second
    assert met == [True, True]  # each search was inside the index while the other one was
    assert len(answers) == 2 and all(len(a) == 3 for a in answers)
    assert {a[0]["label"] for a in answers} == {"low", "noise"}


@pytest.mark.parametrize("via", ["gradio", "v1"])
def test_concurrency_one_runs_them_in_turn(index_dir, via):
    met, answers = overlapping_searches(index_dir, 1, 2.0, via)
    assert met == [False, False]  # the second search only started once the first had finished
    assert len(answers) == 2


def test_api_only_app_answers_the_same(index_dir):
    """serve --api-only: the same endpoints and answers, without the page's components."""
    answers = []
    for ui in (True, False):
        demo = build_app([index_dir / "ix"], warm=False, ui=ui)
        _, url, _ = launch(demo, port=None, block=False, quiet=True)
        try:
            client = Client(url, verbose=False, download_files=False)
            q = handle_file(str(index_dir / "src" / "low" / "low2.wav"))
            answers.append(json.loads(client.predict(q, 4, "ix", api_name="/search_audio")))
            assert json.loads(client.predict("ix", api_name="/index_info"))["name"] == "ix"
        finally:
            demo.close()
        if not ui:
            assert len(demo.blocks) < 20  # the API's hidden inputs and outputs only
    assert answers[0] == answers[1] and answers[0][0]["label"] == "low"
