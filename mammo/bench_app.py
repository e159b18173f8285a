"""`python -m mammo.bench_app`: many clients calling the demo app's /predict at once.

    python -m mammo.bench_app                          # starts app.py on a free port, 16 clients x 5 calls
    python -m mammo.bench_app --url http://host:7860/ --clients 16 --calls 5 --pipeline cascade

Each client (a thread with its own `gradio_client.Client`) sends `--calls` predictions of one
example DICOM, one after the other; the app runs them one at a time (its queue). Prints the number
of calls that failed and the latency percentiles (seconds from submission to result, queue wait
included) as JSON. A benchmark, not a test: the latencies depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_app(port: int, log: Path) -> subprocess.Popen:
    """`python app.py` on 127.0.0.1:`port`, waiting until its page answers (at most 120 s)."""
    env = {**os.environ, "MAMMO_WARMUP": os.environ.get("MAMMO_WARMUP", "breast,cascade")}
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=REPO, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                return proc
        except OSError:  # not listening yet
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"the app did not answer on port {port} within 120 s; see {log}")


def client_calls(url: str, path: Path, pipeline: str, calls: int) -> list[tuple[float, str]]:
    """(seconds, error or "") for each of `calls` predictions by one client."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        try:
            client.predict(handle_file(str(path)), pipeline, api_name="/predict")
            out.append((time.perf_counter() - start, ""))
        except Exception as err:  # noqa: BLE001 - every failure is counted and reported, not raised
            out.append((time.perf_counter() - start, f"{type(err).__name__}: {err}"))
    return out


def run(url: str, clients: int, calls: int, pipeline: str) -> dict:
    """Every client's calls at once; failures and latency percentiles."""
    from mammo.examples import example_dicoms

    path = example_dicoms()[0]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = [r for batch in pool.map(lambda _: client_calls(url, path, pipeline, calls), range(clients))
                   for r in batch]
    seconds = np.array([s for s, _ in results])
    errors = [e for _, e in results if e]
    return {"pipeline": pipeline, "clients": clients, "calls_per_client": calls, "calls": len(results),
            "errors": len(errors), "first_errors": errors[:3], "wall_seconds": round(time.perf_counter() - start, 1),
            "latency_seconds": {f"p{q}": round(float(np.percentile(seconds, q)), 2) for q in (50, 95, 100)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mammo.bench_app", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running app (default: start app.py on a free local port)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--calls", type=int, default=5, help="predictions per client")
    parser.add_argument("--pipeline", default="breast")
    args = parser.parse_args(argv)
    proc = None
    if args.url is None:
        port = free_port()
        proc = start_app(port, Path(os.environ.get("TMPDIR", "/tmp")) / f"mammo-bench-app-{port}.log")
        args.url = f"http://127.0.0.1:{port}/"
    try:
        report = run(args.url, args.clients, args.calls, args.pipeline)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    print(json.dumps(report, indent=2))
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
