"""Load test: N concurrent clients call the app's search_audio API on localhost for a fixed time; no failures allowed.

    .venv/bin/python scripts/load_app.py --index /tmp/fsdd_yamnet [--clients 50] [--seconds 60] [--concurrency N]

The app runs in its own process (`simsearch serve`, as deployed); the clients run in --client-procs processes
of threads, so the load generator's own Python work does not share the server's interpreter. Each client is its
own connection (Gradio's REST API by hand, --client gradio_client, or --client v1: the app's plain endpoint)
looping over distinct clips; the loop is bounded by the deadline and stops by itself.
Prints requests, failures, throughput and latency percentiles as a table.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_app import free_port, percentile, pick_clips  # noqa: E402


class HttpClient:
    """Gradio's REST API by hand (upload, call, read the event stream): the same server path as gradio_client,
    at a fraction of its client-side CPU, so the load generator does not starve the app it measures."""

    def __init__(self, url: str):
        import httpx

        self.http = httpx.Client(base_url=url.rstrip("/") + "/gradio_api", timeout=120)

    def predict(self, clip: str, k: int, name: str) -> str:
        with open(clip, "rb") as f:
            r = self.http.post("/upload", files={"files": (Path(clip).name, f, "audio/wav")})
        r.raise_for_status()
        data = [{"path": r.json()[0], "meta": {"_type": "gradio.FileData"}}, k, name]
        r = self.http.post("/call/search_audio", json={"data": data})
        r.raise_for_status()
        with self.http.stream("GET", f"/call/search_audio/{r.json()['event_id']}") as events:
            event = None
            for line in events.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    if event == "error":
                        raise RuntimeError(f"app error: {line[5:].strip()[:160]}")
                    return json.loads(line[5:])[0]
        raise RuntimeError("the event stream ended without an answer")


class PlainClient:
    """The app's plain /v1/search_audio endpoint (simsearch/app/rest.py): one POST with the clip as its body."""

    def __init__(self, url: str):
        import httpx

        self.http = httpx.Client(base_url=url.rstrip("/") + "/v1", timeout=120)

    def predict(self, clip: str, k: int, name: str) -> str:
        r = self.http.post("/search_audio", params={"k": k, "index": name}, content=Path(clip).read_bytes())
        if r.status_code != 200:
            raise RuntimeError(f"app error {r.status_code}: {r.text[:160]}")
        return r.text


def client_loop(url: str, clips: list[str], i: int, stride: int, k: int, name: str, deadline: float,
                out: list, lock: threading.Lock, kind: str = "http") -> None:
    """One client: its own connection, calling search_audio on distinct clips until the deadline."""
    from gradio_client import Client, handle_file

    if kind in ("http", "v1"):
        client = HttpClient(url) if kind == "http" else PlainClient(url)
        call = client.predict
    else:
        client = Client(url, verbose=False, download_files=False, analytics_enabled=False)
        call = lambda clip, k, name: client.predict(handle_file(clip), k, name, api_name="/search_audio")  # noqa: E731
    j = i
    while time.time() < deadline:
        clip = clips[j % len(clips)]
        j += stride
        t = time.perf_counter()
        try:
            res = json.loads(call(clip, k, name))
            ok = isinstance(res, list) and len(res) == k
            err = None if ok else f"bad answer: {str(res)[:80]}"
        except Exception as e:  # noqa: BLE001 - every failure counts, whatever it is
            err = repr(e)[:200]
        with lock:
            out.append((err, (time.perf_counter() - t) * 1000))


def client_process(url: str, clips: list[str], ids: list[int], stride: int, k: int, name: str,
                   deadline: float, kind: str = "http") -> list:
    """A process of client threads (one per id); returns [(error or None, latency ms)]."""
    out: list = []
    lock = threading.Lock()
    threads = [threading.Thread(target=client_loop, args=(url, clips, i, stride, k, name, deadline, out, lock, kind))
               for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def start_server(index: Path, concurrency: int | None, api_only: bool = False) -> tuple[subprocess.Popen, str]:
    """`simsearch serve` on a free localhost port, returned once it answers."""
    from gradio_client import Client

    port = free_port()
    cmd = [sys.executable, "-m", "simsearch", "serve", "--index", str(index), "--port", str(port)]
    cmd += ["--api-only"] if api_only else []
    proc = subprocess.Popen(cmd + (["--concurrency", str(concurrency)] if concurrency else []),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url, start = f"http://127.0.0.1:{port}/", time.monotonic()
    while time.monotonic() - start < 300:
        if proc.poll() is not None:
            sys.exit(f"the app exited with status {proc.returncode}: {' '.join(cmd)}")
        try:
            Client(url, verbose=False, download_files=False, analytics_enabled=False)
            return proc, url
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(1.0)
    proc.terminate()
    sys.exit("the app did not start within 300 s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", required=True, type=Path)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--concurrency", type=int, help="requests the app runs at once (default: the app's own)")
    p.add_argument("--url", help="load an app already running here instead of starting one")
    p.add_argument("--api-only", action="store_true", help="start the app without its web page (serve --api-only)")
    p.add_argument("--client-procs", type=int, default=4, help="processes the client threads are spread over")
    p.add_argument("--client", choices=["http", "gradio_client", "v1"], default="http",
                   help="http: Gradio's REST API by hand (light); gradio_client: the official client (heavy on CPU); "
                        "v1: the app's plain /v1/search_audio (one POST per search)")
    args = p.parse_args()

    name = args.index.resolve().name
    clips = [str(c) for c in pick_clips(args.index, 200)]
    proc, url = (None, args.url) if args.url else start_server(args.index, args.concurrency, args.api_only)
    try:
        deadline = time.time() + args.seconds
        groups = [list(range(i, args.clients, args.client_procs)) for i in range(args.client_procs)]
        t0 = time.perf_counter()
        with ProcessPoolExecutor(len(groups), mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = [pool.submit(client_process, url, clips, g, args.clients, args.k, name, deadline, args.client)
                     for g in groups if g]
            results = [r for f in parts for r in f.result()]
        wall = time.perf_counter() - t0
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    latencies = [ms for err, ms in results if err is None]
    failures = [err for err, _ in results if err is not None]
    print(f"index {args.index} ({name}), {args.clients} concurrent clients for {args.seconds:.0f} s, k={args.k}, "
          f"app concurrency {args.concurrency or 'default'}{', API only' if args.api_only else ''}, {args.client} clients "
          f"in {args.client_procs} processes")
    print("\n| clients | requests | failed | req/s | p50 ms | p95 ms | p99 ms |\n|---:|---:|---:|---:|---:|---:|---:|")
    n = len(latencies)
    print(f"| {args.clients} | {n + len(failures)} | {len(failures)} | {n / wall:.1f} | "
          f"{percentile(latencies, 50):.0f} | {percentile(latencies, 95):.0f} | {percentile(latencies, 99):.0f} |")
    for f in failures[:5]:
        print("failure:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
