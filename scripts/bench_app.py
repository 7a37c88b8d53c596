"""Query latency of the web app through its Gradio API (p50/p95 per endpoint), to see that queries stay fast.

    .venv/bin/python scripts/bench_app.py --index /tmp/fsdd_yamnet [-n 50] [-k 10] [--url http://127.0.0.1:7860/]

Starts the app on a free localhost port (unless --url points at a running one), warms each endpoint once,
then times n calls of search_audio (distinct clips from the index's first source folder), search_text and
classify with gradio_client, end to end: upload, queue, model, FAISS, JSON back. For comparison it also times
index_info (no work: what one Gradio call costs by itself) and the same audio queries in-process (no HTTP).
Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import random
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simsearch.audio.decode import AUDIO_EXTENSIONS

TEXT_QUERIES = ["speech", "man speaking", "dog barking", "music", "drum", "whistle", "woman talking", "rain",
                "bird song", "telephone ringing"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pick_clips(index_dir: Path, n: int, seed: int = 0) -> list[Path]:
    """n clips from the index's first source folder, chosen at random (fixed seed)."""
    import json

    sources = json.loads((index_dir / "index.json").read_text()).get("sources", [])
    folder = next((Path(s) for s in sources if Path(s).is_dir()), None)
    if folder is None:
        sys.exit(f"{index_dir}: no source folder to draw query clips from")
    clips = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    random.Random(seed).shuffle(clips)
    return clips[:n]


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    i = min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))
    return xs[i]


def timed(fn, items) -> list[float]:
    out = []
    for it in items:
        t = time.perf_counter()
        fn(it)
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", required=True, type=Path, help="index folder to serve and query")
    p.add_argument("-n", type=int, default=50, help="queries per endpoint (default 50)")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--url", help="time an app already running here instead of starting one")
    args = p.parse_args()

    from gradio_client import Client, handle_file

    from simsearch.app.service import Limits, find_similar
    from simsearch.app.ui import build_app, launch

    name = args.index.resolve().name
    startup = None
    demo = None
    url = args.url
    if url is None:
        t = time.perf_counter()
        demo = build_app([args.index])
        startup = time.perf_counter() - t
        _, url, _ = launch(demo, host="127.0.0.1", port=free_port(), block=False, quiet=True)
    client = Client(url, verbose=False, download_files=False, analytics_enabled=False)
    clips = pick_clips(args.index, args.n)
    texts = [TEXT_QUERIES[i % len(TEXT_QUERIES)] for i in range(args.n)]

    calls = {
        "search_audio": (lambda c: client.predict(handle_file(str(c)), args.k, name, api_name="/search_audio"), clips),
        "search_text": (lambda q: client.predict(q, args.k, name, api_name="/search_text"), texts),
        "classify": (lambda c: client.predict(handle_file(str(c)), args.k, "", name, api_name="/classify"), clips),
        "index_info": (lambda _: client.predict(name, api_name="/index_info"), texts),  # no work: Gradio's overhead
    }
    rows = []
    for endpoint, (fn, items) in calls.items():
        fn(items[0])  # warm: first call pays for lazy imports in the server
        rows.append((f"API `{endpoint}`", timed(fn, items)))
    if demo is not None:
        pool = demo.simsearch_pool
        rows.append(("in-process `find_similar` (no HTTP)",
                     timed(lambda c: find_similar(pool, name, c, args.k, Limits()), clips)))

    print(f"index {args.index} ({name}), k={args.k}, n={args.n} per row"
          + (f", app start-up (index + models load) {startup:.1f} s" if startup is not None else ""))
    print("\n| query | n | p50 ms | p95 ms | mean ms |\n|---|---:|---:|---:|---:|")
    for label, ms in rows:
        print(f"| {label} | {len(ms)} | {percentile(ms, 50):.0f} | {percentile(ms, 95):.0f} | "
              f"{statistics.fmean(ms):.0f} |")
    if demo is not None:
        demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
