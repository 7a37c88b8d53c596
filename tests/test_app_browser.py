"""The web app in a real headless Chromium (Debian's /usr/bin/chromium driven by playwright; no browser download)."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} not found; install Debian's chromium (apt-get install chromium)", allow_module_level=True)
from conftest import noise, tone, write  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402  (in the `test` extra; drives /usr/bin/chromium)

from simsearch.app.service import Limits
from simsearch.app.ui import build_app, launch
from simsearch.indexing.job import run_index
from simsearch.indexing.options import IndexOptions

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 120_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    corpus = root / "corpus"
    for i in range(3):
        write(corpus / "low" / f"low{i}.wav", tone(220 + 5 * i, 1.0, seed=i))
        write(corpus / "noise" / f"noise{i}.wav", noise(1.0, seed=20 + i))
    run_index(corpus, root / "ix", IndexOptions(encoder="spectral", progress=False, num_workers=1))
    demo = build_app([root / "ix"], Limits(max_upload_mb=5, max_duration_s=30))
    _, url, _ = launch(demo, host="127.0.0.1", port=free_port(), block=False, quiet=True)
    yield url, corpus
    demo.close()


@pytest.fixture
def page(app_url):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        pg = browser.new_page(viewport={"width": 1280, "height": 900})
        pg.set_default_timeout(TIMEOUT_MS)
        pg.goto(app_url[0], wait_until="domcontentloaded")
        yield pg
        browser.close()


def test_upload_a_clip_and_see_result_rows_with_players(page, app_url, tmp_path):
    _, corpus = app_url
    page.locator("#query-audio input[type=file]").set_input_files(str(corpus / "low" / "low1.wav"))
    page.locator("#query-audio audio, #query-audio .waveform-container, #query-audio button").first.wait_for()
    page.locator("#find-similar").click()
    captions = page.locator(".result-caption")
    captions.nth(2).wait_for(state="visible")
    texts = [captions.nth(i).inner_text() for i in range(3)]
    assert "#1" in texts[0] and "low1.wav" in texts[0] and "same recording" in texts[0], texts
    assert all("label low" in t for t in texts), texts
    assert page.locator(".result-audio").filter(has=page.locator("audio, .waveform-container")).count() >= 3
    # the players load copies from Gradio's cache, never the indexed folder itself
    links = page.locator(".result-audio a[download]").evaluate_all("els => els.map(e => e.href)")
    assert len(links) >= 3 and not any(str(corpus) in h for h in links), links
    for href in links[:3]:
        r = page.request.get(href)
        assert r.status == 200 and r.body()[:4] == b"RIFF", href
    assert page.request.get(links[0].split("file=")[0] + f"file={corpus / 'low' / 'low1.wav'}").status in (403, 404)
    page.locator("#query-spectrogram img").wait_for()
    page.screenshot(path=str(tmp_path / "find_similar.png"), full_page=True)
    assert (tmp_path / "find_similar.png").stat().st_size > 10_000


def test_bad_upload_shows_a_readable_message(page, tmp_path):
    bogus = tmp_path / "notes.wav"
    bogus.write_text("this is a text file, not audio\n" * 50)
    page.locator("#query-audio input[type=file]").set_input_files(str(bogus))
    page.locator("#find-similar").click()
    toast = page.get_by_text("not an audio file this app can read")
    toast.first.wait_for()
    body = page.locator("body").inner_text()
    assert "Traceback" not in body
    page.screenshot(path=str(tmp_path / "bad_upload.png"))  # the viewport, where the toast is


def test_index_tab_shows_encoder_and_counts(page):
    page.get_by_role("tab", name="Index").click()
    table = page.locator("table").filter(has_text="encoder")
    table.first.wait_for()
    text = table.first.inner_text()
    assert "spectral" in text and "6 files, 6 rows" in text, text
