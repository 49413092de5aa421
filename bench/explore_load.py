"""The latent explorer under load: request latency of ``twinvae-explore``'s API from 1 and from 8 clients.

    python bench/explore_load.py --workdir RUN [--backend jax|torch] [--requests 1000] [--clients 8]

The server is the command itself (``python explore.py --workdir RUN --port 0``), in its own process; the
clients are threads here, each with one keep-alive HTTP connection (stdlib ``http.client``), sending the
page's own requests in a fixed mix (for images: hover, click-decode, encode, interpolation, traversal,
samples, nearest; for text: reconstruction greedy and beam, homotopy, samples, nearest, decode). First
every request kind alone from one client (``--single`` of each: the latency of one interaction), then
``--requests`` from ``--clients`` at once (the mix in round robin). Latency is from sending the request
to reading the whole answer. Any non-200 answer is counted as an error. Prints p50 / p95 / p99, the
map's time at start, the machine, its load and each backend's limits (``bench/peak.py``) in the same run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import peak

IMAGE_MIX = {
    "hover (example)": ("/api/example", {"index": 17}),
    "click (decode)": ("/api/decode", {"z": [0.3] * 20}),
    "encode": ("/api/encode", {"input": 5}),
    "interpolate 8": ("/api/interpolate", {"a": 1, "b": 2, "steps": 8, "mode": "spherical"}),
    "traverse 3x9": ("/api/traverse", {"dims": [0, 1, 2], "steps": 9}),
    "sample 16": ("/api/sample", {"n": 16, "seed": 1}),
    "nearest 5": ("/api/nearest", {"input": 9, "k": 5}),
}
SENTENCE = "the company said it expects to report a loss for the third quarter"
TEXT_MIX = {
    "reconstruct greedy": ("/api/encode", {"input": SENTENCE}),
    "reconstruct beam 5": ("/api/encode", {"input": SENTENCE, "method": "beam", "beam_width": 5}),
    "homotopy 8": ("/api/interpolate", {"a": SENTENCE, "b": "prices rose sharply in new york", "steps": 8}),
    "sample 5": ("/api/sample", {"n": 5, "seed": 1}),
    "nearest 5": ("/api/nearest", {"input": 3, "k": 5}),
    "hover (example)": ("/api/example", {"index": 17}),
}


def start_server(workdir: str, backend: str | None) -> tuple[subprocess.Popen, int, str]:
    cmd = [sys.executable, str(ROOT / "explore.py"), "--workdir", workdir, "--port", "0"]
    proc = subprocess.Popen(cmd + (["--backend", backend] if backend else []), cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline()  # "exploring RUN (...) at http://127.0.0.1:PORT/"
    if "http://" not in line:
        proc.kill()
        raise SystemExit(f"explore_load.py: error: the explorer did not start ({line.strip() or 'no output'})")
    return proc, int(line.rsplit(":", 1)[1].strip("/\n ")), line.strip()


def timed(conn: http.client.HTTPConnection, path: str, body: dict) -> tuple[float, int]:
    data = json.dumps(body).encode()
    t0 = time.perf_counter()
    conn.request("POST", path, data, {"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    return time.perf_counter() - t0, response.status


def percentiles(seconds: list[float]) -> str:
    ms = np.array(seconds) * 1e3
    return " / ".join(f"{np.percentile(ms, q):.1f}" for q in (50, 95, 99))


def load_test(port: int, mix: list[tuple[str, dict]], requests: int, clients: int) -> tuple[list[float], int]:
    """``requests`` from ``clients`` threads at once; returns the latencies and the error count."""
    latencies, errors, lock = [], [0], threading.Lock()
    share = [requests // clients + (i < requests % clients) for i in range(clients)]

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        for i in range(share[k]):
            seconds, status = timed(conn, *mix[(k + i) % len(mix)])
            with lock:
                latencies.append(seconds)
                errors[0] += status != 200
        conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--backend", choices=("jax", "torch"))
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--single", type=int, default=40, help="requests of each kind from one client")
    p.add_argument("--no-peak", action="store_true", help="skip bench/peak.py's limits")
    args = p.parse_args()
    print(f"machine: {peak.machine()}; load {peak.load()}")
    if not args.no_peak:
        for backend in ("jax", "torch"):
            print("limit: " + peak.describe(peak.measure(backend)))
    t0 = time.perf_counter()
    proc, port, banner = start_server(args.workdir, args.backend)
    try:
        print(f"{banner} (ready after {time.perf_counter() - t0:.1f} s)")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        conn.request("GET", "/api/info")
        info = json.loads(conn.getresponse().read())
        mix = IMAGE_MIX if info["task"] == "mnist" else TEXT_MIX
        if info["task"] == "mnist":
            mix["click (decode)"] = ("/api/decode", {"z": [0.3] * info["latent_dim"]})
        print(f"map of {info['test_examples']} test examples computed in {info['map_seconds']:.2f} s")
        print(f"one client, {args.single} of each (p50 / p95 / p99 ms):")
        for name, (path, body) in mix.items():
            seconds = [timed(conn, path, body)[0] for _ in range(args.single)]
            print(f"  {name:20s} {percentiles(seconds)}")
        conn.request("GET", "/api/map")
        t = time.perf_counter()
        conn.getresponse().read()
        print(f"  {'map (GET, cached)':20s} {1e3 * (time.perf_counter() - t):.1f}")
        conn.close()
        latencies, errors = load_test(port, list(mix.values()), args.requests, args.clients)
        print(f"{args.requests} requests from {args.clients} clients: p50 / p95 / p99 {percentiles(latencies)} ms, "
              f"{errors} errors")
    finally:
        proc.terminate()
        proc.wait()
    print(f"load after: {peak.load()}")


if __name__ == "__main__":
    main()
