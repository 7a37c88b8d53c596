"""The Gradio app through its HTTP API (gradio_client), on small indexes built here, plus its helper functions."""
from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")
httpx = pytest.importorskip("httpx")

from conftest import noise, tone, write  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from simsearch.app.media import result_audio, spectrogram_image
from simsearch.app.pool import IndexPool, find_index_dirs, source_roots
from simsearch.app.service import MAX_LABEL_CHARS, MAX_LABELS, Limits, check_upload, find_similar, parse_labels
from simsearch.app.ui import build_app, launch
from simsearch.errors import AudioError, SimsearchError
from simsearch.indexing.job import run_index
from simsearch.indexing.options import IndexOptions

LIMITS = Limits(max_upload_mb=1.0, max_duration_s=20.0)
KEYS = {"rank", "score", "path", "label", "offset_s", "duration_s", "id"}


def make_corpus(root: Path) -> Path:
    """Low tones, high tones, noise bursts (4 each) and one 25 s file: noise, a 440 Hz tone, noise."""
    for i in range(4):
        write(root / "low" / f"low{i}.wav", tone(220 + 5 * i, 1.0 + 0.2 * i, 16000, seed=i), 16000)
        write(root / "high" / f"high{i}.flac", tone(3000 + 40 * i, 1.2, 44100, seed=10 + i), 44100)
        write(root / "noise" / f"noise{i}.wav", noise(0.8 + 0.1 * i, 22050, seed=20 + i), 22050)
    long = np.concatenate([noise(10, 16000, seed=5), tone(440, 10, 16000, seed=6), noise(5, 16000, seed=7)])
    write(root / "long" / "long.wav", long, 16000)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("app") / "corpus")


@pytest.fixture(scope="module")
def indexes(corpus) -> dict[str, Path]:
    """A YAMNet index (text via tags) with a trained probe, and a spectral one (no text space, no probe)."""
    from simsearch.classify.probe import train_probe
    from simsearch.search.index import Index

    base = corpus.parent / "indexes"
    out = {}
    for enc in ("yamnet", "spectral"):
        out[enc] = base / f"ix_{enc}"
        run_index(corpus, out[enc], IndexOptions(encoder=enc, progress=False, num_workers=1))
    train_probe(Index.open(out["yamnet"]))
    return out


@pytest.fixture(scope="module")
def server(indexes):
    demo = build_app([indexes["yamnet"], indexes["spectral"]], LIMITS)
    _, url, _ = launch(demo, host="127.0.0.1", port=free_port(), block=False, quiet=True)
    yield demo, url
    demo.close()


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server[1], verbose=False, download_files=False, analytics_enabled=False)


def ask(client: Client, *args, api_name: str):
    """An API call; its answer is JSON text (see simsearch/app/api.py), read back here."""
    out = client.predict(*args, api_name=api_name)
    assert isinstance(out, str), out
    return json.loads(out)


def call_raw(url: str, api_name: str, data: list) -> str:
    """POST an API call without gradio_client (which would upload local files itself); returns the SSE text."""
    base = url.rstrip("/") + f"/gradio_api/call/{api_name}"
    r = httpx.post(base, json={"data": data}, timeout=30)
    r.raise_for_status()
    return httpx.get(f"{base}/{r.json()['event_id']}", timeout=120).text


# ---------------------------------------------------------------------------------------------- API endpoints

def test_api_names_are_stable(client):
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {"/search_audio", "/search_text", "/classify", "/index_info", "/result_audio"} <= names


def test_default_client_gets_structured_results(server, corpus, tmp_path):
    """Issue 15: a default Client (the one "Use via API" shows) took each result for a file and returned paths."""
    c = Client(server[1], verbose=False, analytics_enabled=False)  # download_files left at its default
    q = corpus / "long" / "long.wav"
    x, sr = sf.read(str(q), start=10 * 16000, frames=10 * 16000, dtype="float32")
    res = json.loads(c.predict(handle_file(str(write(tmp_path / "mid.wav", x, sr))), 3, "ix_spectral",
                               api_name="/search_audio"))
    assert [r["rank"] for r in res] == [1, 2, 3] and all(KEYS <= set(r) for r in res), res
    hit = res[0]
    assert hit["path"] == str(q.resolve()) and hit["offset_s"] == 10.0 and hit["label"] == "long"
    assert isinstance(hit["score"], float)
    text = json.loads(c.predict("white noise", 2, "ix_yamnet", api_name="/search_text"))
    assert text[0]["label"] == "noise" and KEYS <= set(text[0])
    out = json.loads(c.predict(handle_file(str(corpus / "low" / "low0.wav")), 3, "", "ix_spectral",
                               api_name="/classify"))
    assert out["knn"][0]["label"] == "low" and KEYS <= set(out["neighbours"][0])
    # the audio of a result: fetched by index and row id, cut to its window on the server, downloaded by the client
    clip = c.predict("ix_spectral", hit["id"], api_name="/result_audio")
    y, ysr = sf.read(clip, dtype="float32")
    assert ysr == sr and len(y) == round(hit["duration_s"] * sr)
    assert np.allclose(y, x[: len(y)], atol=1 / 2 ** 15)


def test_search_audio_finds_same_class(client, corpus):
    # long.wav starts and ends with noise, so its windows are fair neighbours of a noise burst
    for query, labels in [("low/low1.wav", {"low"}), ("high/high2.flac", {"high"}), ("noise/noise3.wav", {"noise", "long"})]:
        res = ask(client, handle_file(str(corpus / query)), 4, "ix_yamnet", api_name="/search_audio")
        assert [r["rank"] for r in res] == [1, 2, 3, 4]
        assert all(set(r) == KEYS | {"cosine", "match"} for r in res)  # the index keeps landmark fingerprints
        assert res[0]["path"] == str((corpus / query).resolve()) and res[0]["cosine"] > 0.999
        assert res[0]["match"] > res[1]["match"] and res[0]["score"] > res[0]["cosine"]
        assert [r["score"] for r in res] == sorted((r["score"] for r in res), reverse=True)
        assert {r["label"] for r in res[1:]} <= labels, res


def test_search_audio_on_second_index_and_window_offset(client, corpus, tmp_path):
    # the tone in the middle of long.wav is a window at 10 s: its hit carries that offset
    x, sr = sf.read(str(corpus / "long" / "long.wav"), start=10 * 16000, frames=10 * 16000)
    q = write(tmp_path / "middle.wav", x, sr)
    for index in ("ix_yamnet", "ix_spectral"):
        res = ask(client, handle_file(str(q)), 3, index, api_name="/search_audio")
        assert res[0]["path"].endswith("long.wav") and res[0]["offset_s"] == 10.0, (index, res)


def test_search_text_uses_tag_space(client):
    res = ask(client, "white noise", 4, "ix_yamnet", api_name="/search_text")
    assert len(res) == 4 and all(set(r) == KEYS | {"why"} for r in res)
    assert all({"sound", "fused"} <= set(r["why"]) for r in res)  # each hit says why it matched
    assert res[0]["label"] == "noise"
    assert not {r["label"] for r in res} & {"low", "high"}, res
    res = ask(client, "sine wave", 3, "ix_yamnet", api_name="/search_text")
    assert res[0]["label"] == "low", res


def test_search_text_without_text_space_says_so(client):
    with pytest.raises(AppError, match="Text search is not available"):
        ask(client, "white noise", 3, "ix_spectral", api_name="/search_text")


def test_classify_knn_probe_and_zero_shot(client, corpus):
    out = ask(client, handle_file(str(corpus / "noise" / "noise2.wav")), 5, "white noise, sine wave",
                         "ix_yamnet", api_name="/classify")
    assert out["knn"][0]["label"] == "noise"
    assert abs(sum(d["score"] for d in out["knn"]) - 1.0) < 1e-3
    assert len(out["neighbours"]) == 5 and all(set(n) == KEYS for n in out["neighbours"])
    assert out["neighbours"][0]["path"].endswith("noise2.wav")
    assert {d["label"] for d in out["probe"]} == {"low", "high", "noise", "long"}
    assert out["probe"][0]["label"] == "noise"
    assert [d["label"] for d in out["zero_shot"]] == ["white noise", "sine wave"]


def test_classify_without_probe_or_text_space(client, corpus):
    out = ask(client, handle_file(str(corpus / "low" / "low0.wav")), 3, "", "ix_spectral", api_name="/classify")
    assert out["knn"][0]["label"] == "low" and out["probe"] is None and out["zero_shot"] is None
    assert any("no probe" in n for n in out["notes"])
    with pytest.raises(AppError, match="no text space"):
        ask(client, handle_file(str(corpus / "low" / "low0.wav")), 3, "dog", "ix_spectral", api_name="/classify")


def test_index_info(client, indexes):
    info = ask(client, "ix_spectral", api_name="/index_info")
    assert info["encoder"]["name"] == "spectral" and info["counts"]["files"] == 13 and info["dim"] == 168


# ---------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("make, message", [
    (lambda d: d.joinpath("notes.wav").write_text("this is not audio\n" * 20), "not an audio file"),
    (lambda d: d.joinpath("empty.wav").write_bytes(b""), "empty"),
    (lambda d: write(d / "silent.wav", np.zeros(8000, np.float32)), "silent"),
    (lambda d: write(d / "long.wav", tone(300, 25.0, 8000), 8000, subtype="PCM_U8"), "limit is 20 s"),
])
def test_bad_uploads_get_readable_errors(client, tmp_path, make, message):
    make(tmp_path)
    path = next(tmp_path.iterdir())
    with pytest.raises(AppError, match=message) as err:
        ask(client, handle_file(str(path)), 3, "ix_yamnet", api_name="/search_audio")
    assert "Traceback" not in str(err.value)


def test_upload_over_size_cap_is_refused(server, client, tmp_path):
    big = write(tmp_path / "big.wav", tone(300, 18.0, 44100), 44100)  # 1.6 MB, under the duration cap
    assert big.stat().st_size > LIMITS.max_upload_mb * 2 ** 20
    with pytest.raises(Exception, match="exceeds the maximum file size"):
        ask(client, handle_file(str(big)), 3, "ix_yamnet", api_name="/search_audio")
    with big.open("rb") as f:  # the server itself refuses it too, whatever the client checks
        r = httpx.post(server[1].rstrip("/") + "/gradio_api/upload", files={"files": f}, timeout=30)
    assert r.status_code == 413
    with pytest.raises(AudioError, match="the limit is 0.5 MB"):  # and the app's own check, for any path in
        check_upload(big, Limits(max_upload_mb=0.5))


def test_empty_text_and_unknown_index(client, corpus):
    with pytest.raises(AppError, match="type what to search for"):
        ask(client, "   ", 3, "ix_yamnet", api_name="/search_text")
    with pytest.raises(Exception, match="nope"):
        ask(client, "noise", 3, "nope", api_name="/search_text")


# ---------------------------------------------------------------------------------------------- what is served

def test_path_traversal_through_the_api_fails(server, corpus):
    url = server[1].rstrip("/")
    inside = (corpus / "low" / "low0.wav").resolve()
    # nothing is served by its source path, not even indexed audio: results play from copies (see test_app_security)
    for target in [str(inside), "/etc/passwd", f"{corpus}/../../../../etc/passwd", f"{corpus}/%2e%2e/%2e%2e/etc/passwd",
                   str(Path(__file__).resolve())]:
        r = httpx.get(f"{url}/gradio_api/file={target}")
        assert r.status_code in (403, 404), (target, r.status_code)
        assert b"root:" not in r.content
    # naming a server file as the query (instead of uploading it) is refused, inside the indexed folder or not
    for target in ["/etc/passwd", str(inside), f"/tmp/gradio/../..{inside}"]:
        text = call_raw(url, "search_audio", [{"path": target, "meta": {"_type": "gradio.FileData"}}, 3, "ix_yamnet"])
        assert "event: error" in text and "rank" not in text, (target, text)


def test_query_must_come_from_the_upload_folder(corpus, tmp_path):
    limits = Limits(upload_dir=(tmp_path / "uploads").resolve())
    write(tmp_path / "uploads" / "ok.wav", tone(300, 1.0))
    assert check_upload(tmp_path / "uploads" / "ok.wav", limits).name == "ok.wav"
    for bad in [corpus / "low" / "low0.wav", tmp_path / "uploads" / ".." / ".." / "corpus" / "low" / "low0.wav"]:
        with pytest.raises(AudioError, match="only clips uploaded"):
            check_upload(bad, limits)


def test_result_audio_only_inside_indexed_roots(tmp_path):
    """A manifest may name files outside its folder: those hits are listed but their audio is not served."""
    write(tmp_path / "outside" / "far.wav", tone(500, 1.0, seed=1))
    write(tmp_path / "m" / "near.wav", tone(520, 1.0, seed=2))
    pd.DataFrame({"path": ["near.wav", "../outside/far.wav"], "label": ["a", "b"]}).to_csv(tmp_path / "m" / "list.csv",
                                                                                            index=False)
    ix = tmp_path / "ix"
    run_index(tmp_path / "m" / "list.csv", ix, IndexOptions(encoder="spectral", progress=False, num_workers=1))
    pool = IndexPool([ix], warm=False)
    served = pool.get(None)
    assert served.roots == [(tmp_path / "m").resolve()] == source_roots(served.index.info)
    hits = {Path(r["path"]).name: r for r in served.index.search(audio=str(tmp_path / "m" / "near.wav"), k=2)}
    near = result_audio(served, hits["near.wav"], pool.clips)
    assert Path(near).parent == pool.clip_dir  # a copy: the source folder is never handed to Gradio
    assert Path(near).read_bytes() == (tmp_path / "m" / "near.wav").read_bytes()
    assert result_audio(served, hits["far.wav"], pool.clips) is None
    pool.close()
    assert not pool.clip_dir.exists()


def test_window_hit_is_cut_to_its_window(indexes, corpus, tmp_path):
    pool = IndexPool([indexes["spectral"]], warm=False)
    served = pool.get("ix_spectral")
    src, sr = sf.read(str(corpus / "long" / "long.wav"), dtype="float32")
    q = write(tmp_path / "q.wav", src[20 * sr:], sr)
    results, x = find_similar(pool, None, q, 2, Limits())
    hit = results[0]
    assert hit["path"].endswith("long.wav") and hit["offset_s"] == 20.0 and hit["duration_s"] == 5.0
    clip = result_audio(served, hit, pool.clips)
    assert Path(clip).parent == pool.clip_dir
    y, ysr = sf.read(clip, dtype="float32")
    assert ysr == sr and len(y) == 5 * sr
    assert np.allclose(y, src[20 * sr:], atol=1 / 2 ** 15)  # PCM_16 rounding
    low0 = served.index.rows.query("path.str.endswith('low0.wav')")["id"].item()
    whole = result_audio(served, {**hit, "id": low0}, pool.clips)
    assert Path(whole).read_bytes() == (corpus / "low" / "low0.wav").read_bytes()  # short files play as they are
    img = spectrogram_image(x, 16000)
    assert img.ndim == 3 and img.shape[2] == 3 and img.std() > 10  # a drawn picture, not a blank canvas


def test_zero_shot_labels_are_capped(client, corpus):
    """Issue 16: 2000 labels cost a minute of CPU per request; the count and each label's length are capped."""
    clip = handle_file(str(corpus / "noise" / "noise2.wav"))
    many = ", ".join(f"label {i}" for i in range(MAX_LABELS + 1))
    with pytest.raises(AppError, match=f"{MAX_LABELS + 1} zero-shot labels given; the limit is {MAX_LABELS}"):
        ask(client, clip, 3, many, "ix_yamnet", api_name="/classify")
    with pytest.raises(AppError, match=f"keep each label under {MAX_LABEL_CHARS}"):
        ask(client, clip, 3, "dog, " + "x" * (MAX_LABEL_CHARS + 1), "ix_yamnet", api_name="/classify")
    with pytest.raises(SimsearchError, match="characters in all"):
        parse_labels("a," * 100_000)
    assert parse_labels(", ".join(f"l{i}" for i in range(MAX_LABELS))) == [f"l{i}" for i in range(MAX_LABELS)]


def test_query_upload_is_deleted_after_use(server, client, corpus, tmp_path):
    """A call deletes its query upload at once, rather than leaving it for the cache sweep."""
    demo, _ = server
    upload_dir = demo.simsearch_limits.upload_dir
    q = write(tmp_path / "query_to_delete_8f3a.wav", tone(230, 1.0, seed=3))
    ask(client, handle_file(str(q)), 3, "ix_spectral", api_name="/search_audio")
    with pytest.raises(AppError):  # a failed call deletes its upload too
        ask(client, handle_file(str(q)), 3, "x" * 2000, "ix_spectral", api_name="/classify")
    assert not list(upload_dir.rglob(q.name))
    assert demo.delete_cache == (300, 900)  # and uploads never used in a call go within 15 minutes


def test_clip_store_prunes_old_clips_and_removes_its_folder(corpus):
    """Result clips of a long-running app are deleted once unused for the cache period, and all of them on close."""
    import os
    import time

    from simsearch.app.clips import ClipStore

    store = ClipStore(ttl_s=60)
    a = store.clip(corpus / "low" / "low0.wav", 0.0, None)
    assert a.parent == store.dir and a.read_bytes() == (corpus / "low" / "low0.wav").read_bytes()
    assert store.clip(corpus / "low" / "low0.wav", 0.0, None) == a  # reused, not cut again
    old = time.time() - 120
    os.utime(a, (old, old))
    store._last_prune -= 60  # as if 60 s had passed since the last sweep
    b = store.clip(corpus / "long" / "long.wav", 10.0, 10.0)
    assert not a.exists() and b.exists() and sf.info(str(b)).duration == 10.0
    store.close()
    assert not store.dir.exists()


def test_find_index_dirs(indexes, tmp_path):
    base = indexes["yamnet"].parent
    assert find_index_dirs([base]) == sorted([indexes["spectral"].resolve(), indexes["yamnet"].resolve()])
    assert find_index_dirs([indexes["yamnet"]]) == [indexes["yamnet"].resolve()]
    with pytest.raises(SimsearchError, match="no such index folder"):
        find_index_dirs([tmp_path / "missing"])
    with pytest.raises(SimsearchError, match="neither an index folder"):
        find_index_dirs([tmp_path])


def test_serve_command_is_registered(capsys):
    from simsearch.cli.core import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "--max-upload-mb" in capsys.readouterr().out
    assert main(["serve", "--index", "/no/such/index"]) == 2


# ---------------------------------------------------------------- plain /v1 endpoints (rest.py)


def test_rest_search_audio_answers_as_the_gradio_api_does(server, client, corpus):
    """One POST with the clip as its body gives the same hits as the Gradio API's upload + call + event stream."""
    url = server[1].rstrip("/")
    for query, index in [("low/low1.wav", "ix_yamnet"), ("high/high2.flac", "ix_spectral")]:
        body = (corpus / query).read_bytes()
        r = httpx.post(f"{url}/v1/search_audio", params={"k": 4, "index": index}, content=body, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json() == ask(client, handle_file(str(corpus / query)), 4, index, api_name="/search_audio")
        assert r.json()[0]["path"] == str((corpus / query).resolve())
    r = httpx.get(f"{url}/v1/search_text", params={"text": "white noise", "k": 4, "index": "ix_yamnet"}, timeout=60)
    assert r.status_code == 200 and r.json() == ask(client, "white noise", 4, "ix_yamnet", api_name="/search_text")
    assert httpx.get(f"{url}/v1/indexes", timeout=10).json() == ["ix_yamnet", "ix_spectral"]


def test_rest_refuses_big_bad_and_unknown_with_a_reason(server, corpus, tmp_path):
    """Over the cap: 413, whether the size is declared or streamed; not audio or no such index: 400 with a
    readable reason; nothing is left in the upload folder."""
    demo, url = server
    url = url.rstrip("/") + "/v1/search_audio"
    big = write(tmp_path / "big.wav", tone(300, 18.0, 44100), 44100).read_bytes()  # 1.6 MB over the 1 MB cap
    assert httpx.post(url, content=big, timeout=60).status_code == 413

    def chunks():  # no Content-Length: the server counts what arrives
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    r = httpx.post(url, content=chunks(), timeout=60)
    assert r.status_code == 413 and "1 MB" in r.json()["error"]
    r = httpx.post(url, content=b"not audio at all" * 100, timeout=60)
    assert r.status_code == 400 and "Traceback" not in r.text and r.json()["error"]
    r = httpx.post(url, params={"index": "nope"}, content=(corpus / "low/low1.wav").read_bytes(), timeout=60)
    assert r.status_code == 400 and "nope" in r.json()["error"]
    assert httpx.post(url, params={"k": "many"}, content=b"x", timeout=60).status_code == 422  # typed parameters
    host, port = url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port))) as s:  # a client that goes away mid-body
        s.sendall(b"POST /v1/search_audio HTTP/1.1\r\nHost: x\r\nContent-Length: 500000\r\n\r\n" + big[:100000])
    for _ in range(50):
        if not list(demo.simsearch_limits.upload_dir.glob("rest-*")):
            break
        time.sleep(0.1)
    assert not list(demo.simsearch_limits.upload_dir.glob("rest-*"))


def test_rest_gives_up_on_a_body_that_never_ends(server, monkeypatch):
    """A client that declares a body and stops sending gets 408 once the deadline passes; nothing stays behind."""
    from simsearch.app import rest

    monkeypatch.setattr(rest, "BODY_TIMEOUT_S", 1.0)
    demo, url = server
    host, port = url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"POST /v1/search_audio HTTP/1.1\r\nHost: x\r\nContent-Length: 500000\r\n\r\n" + b"\0" * 1000)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < int(
                answer.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0]):
            chunk = s.recv(4096)  # the head and the body may come in separate packets
            assert chunk, answer
            answer += chunk
        answer = answer.decode("latin-1")
    assert answer.startswith("HTTP/1.1 408") and "did not arrive within 1 s" in answer
    assert not list(demo.simsearch_limits.upload_dir.glob("rest-*"))


def test_rest_takes_hostile_files_as_uploads_do(server, tmp_path):
    """The hostile corpus (lying headers, absurd rates, cut files, NaN, non-audio) sent as /v1 bodies: what decodes
    is searched, the rest gets 400 with a one-line reason (413 past the size cap); never a server error."""
    from test_hostile_audio import make_hostile

    url = server[1].rstrip("/") + "/v1/search_audio"
    expected, refused = make_hostile(tmp_path / "hostile"), []
    for name, reason in expected.items():
        body = (tmp_path / "hostile" / name).read_bytes()
        r = httpx.post(url, params={"k": 3, "index": "ix_spectral"}, content=body, timeout=120)
        if len(body) > LIMITS.max_upload_mb * 2 ** 20:
            assert r.status_code == 413, name
            refused.append(name)
        elif r.status_code == 200:  # decodable, within the caps (a header claiming 40 s meets the 20-s cap first)
            assert reason is None and len(r.json()) == 3, (name, r.text)
        else:
            assert r.status_code == 400 and r.json()["error"].startswith("query: "), (name, r.text)
            assert "\n" not in r.json()["error"] and "Traceback" not in r.text, name
            refused.append(name)
    assert {n for n, reason in expected.items() if reason} <= set(refused)  # every undecodable file refused
