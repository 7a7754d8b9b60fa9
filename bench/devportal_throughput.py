"""Benchmark: simple REST requests per second the devportal serves with limits off (target >= 500).

The devportal runs in its own process, as `nezabyt devportal --no-limits` does, so the client threads
here do not share its interpreter lock; a pool of requests.Session threads sends the load.
"""
from __future__ import annotations

import argparse
import multiprocessing
import threading
import time

import requests


def run(total: int = 3000, threads: int = 4, method: str = "app.info") -> float:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    from devportal.server import serve_in_child

    server = ctx.Process(target=serve_in_child, args=(child,), kwargs={"limits": False}, daemon=True)
    server.start()
    try:
        if not parent.poll(30):
            raise SystemExit("the devportal did not start")
        base, token = parent.recv()
        url = f"{base}/rest/{method}"
        per_thread = total // threads
        failures: list[int] = []

        def worker():
            with requests.Session() as session:
                for _ in range(per_thread):
                    r = session.post(url, json={"auth": token}, timeout=10)
                    if r.status_code != 200:
                        failures.append(r.status_code)

        with requests.Session() as warm:  # connection set-up out of the measurement
            warm.post(url, json={"auth": token}, timeout=10)
        pool = [threading.Thread(target=worker) for _ in range(threads)]
        started = time.perf_counter()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        elapsed = time.perf_counter() - started
    finally:
        server.terminate()
        server.join(timeout=5)
    if failures:
        raise SystemExit(f"{len(failures)} requests failed: {sorted(set(failures))}")
    return per_thread * threads / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--method", default="app.info")
    args = parser.parse_args()
    rate = run(args.requests, args.threads, args.method)
    print(f"devportal: {rate:.0f} requests/s ({args.requests} x {args.method}, {args.threads} threads, "
          f"limits off)")


if __name__ == "__main__":
    main()
