"""Load test: N concurrent clients call the app's search_audio API on localhost for a fixed time; no failures allowed.

    .venv/bin/python scripts/load_app.py --index /tmp/fsdd_yamnet [--clients 50] [--seconds 60]

Each client is its own gradio_client connection looping over distinct clips; the loop is bounded by the
deadline and stops by itself. Prints requests, failures, throughput and latency percentiles as a table.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_app import free_port, percentile, pick_clips  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", required=True, type=Path)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("-k", type=int, default=10)
    args = p.parse_args()

    from gradio_client import Client, handle_file

    from simsearch.app.ui import build_app, launch

    name = args.index.resolve().name
    demo = build_app([args.index])
    _, url, _ = launch(demo, host="127.0.0.1", port=free_port(), block=False, quiet=True)
    clips = pick_clips(args.index, 200)
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + args.seconds

    def client_loop(i: int) -> None:
        client = Client(url, verbose=False, download_files=False, analytics_enabled=False)
        j = i
        while time.monotonic() < deadline:
            clip = clips[j % len(clips)]
            j += args.clients
            t = time.perf_counter()
            try:
                res = json.loads(client.predict(handle_file(str(clip)), args.k, name, api_name="/search_audio"))
                ok = isinstance(res, list) and len(res) == args.k
                err = None if ok else f"bad answer: {str(res)[:80]}"
            except Exception as e:  # noqa: BLE001 - every failure counts, whatever it is
                err = repr(e)[:200]
            with lock:
                (failures.append(err) if err else latencies.append((time.perf_counter() - t) * 1000))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    demo.close()
    print(f"index {args.index} ({name}), {args.clients} concurrent clients for {args.seconds:.0f} s, k={args.k}")
    print("\n| clients | requests | failed | req/s | p50 ms | p95 ms | p99 ms |\n|---:|---:|---:|---:|---:|---:|---:|")
    n = len(latencies)
    print(f"| {args.clients} | {n + len(failures)} | {len(failures)} | {n / wall:.1f} | "
          f"{percentile(latencies, 50):.0f} | {percentile(latencies, 95):.0f} | {percentile(latencies, 99):.0f} |")
    for f in failures[:5]:
        print("failure:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
