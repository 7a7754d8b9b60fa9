"""Benchmark: event intake under gunicorn on 127.0.0.1 with PostgreSQL, loaded by wrk (a Lua
script POSTs form-encoded ONCRMCONTACTUPDATE events, each for a different contact and instant).
Figures: sustained events/s, p50/p99 time to answer (the medians of --repeats measured runs of
--seconds each, after a warm-up; every run is in the JSON), and every acknowledged event stored
(rows counted in stored_event; zero lost). Goal: >= 1,000 events/s, p99 <= 25 ms.

The load is bounded in time (15 s by default) and only targets 127.0.0.1. wrk is Debian's package
(installed with apt-get when missing). The event path never calls Bitrix24, so no devportal is
needed: the portal row with its application token is created directly.

Run: python -m bench.intake_gunicorn [--url postgresql+psycopg://...] [--seconds 15]
(default: PostgreSQL database nezabyt_bench_intake, dropped and created again).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench.harness import bench_settings, emit, env_for_child, fresh_database, progress, settle_disk

LUA = r"""
-- Each wrk thread POSTs events for its own range of contact IDs, so every event is a new change.
counter = 0
threads = {}

function setup(thread)
  thread:set("thread_no", #threads)
  table.insert(threads, thread)
end

function init(args)
  -- thread_no is set by setup() in this thread's own Lua state
  -- args[1]: where this run's contact IDs start (the warm-up uses its own range)
  counter = (thread_no or 0) * 100000000 + tonumber(args[1] or "0")
end

request = function()
  counter = counter + 1
  local body = "event=ONCRMCONTACTUPDATE&event_handler_id=7&data%5BFIELDS%5D%5BID%5D=" .. counter ..
    "&ts=" .. (1772000000 + counter) ..
    "&auth%5Bdomain%5D=__DOMAIN__&auth%5Bmember_id%5D=__MEMBER__&auth%5Bapplication_token%5D=__TOKEN__" ..
    "&auth%5Bclient_endpoint%5D=https%3A%2F%2F__DOMAIN__%2Frest%2F&auth%5Bstatus%5D=L&auth%5Buser_id%5D=1"
  return wrk.format("POST", "/events", {["Content-Type"] = "application/x-www-form-urlencoded"}, body)
end

done = function(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "non2xx": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, non2xx, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
"""


def ensure_wrk(say) -> str:
    path = shutil.which("wrk")
    if path:
        return path
    say("wrk is missing: apt-get install -y wrk")
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, capture_output=True, timeout=600)
    path = shutil.which("wrk")
    if not path:
        subprocess.run(["apt-get", "update"], check=False, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True, timeout=600)
        path = shutil.which("wrk")
    if not path:
        raise SystemExit("wrk could not be installed")
    return path


WARM_UP_S = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_portal(services) -> tuple[str, str, str]:
    from addon.models import Portal, PortalSettings
    from addon.bitrix.tokens import save_application_token

    member_id, token, domain = secrets.token_hex(16), secrets.token_hex(16), "bench.bitrix24.ru"
    with services.sessions() as session:
        portal = Portal(member_id=member_id, domain=domain, client_endpoint=f"https://{domain}/rest/",
                        server_endpoint="https://oauth.bitrix.info/rest/", scope="crm", time_zone="Europe/Moscow")
        session.add(portal)
        session.flush()
        save_application_token(session, portal, token)
        session.add(PortalSettings(portal_id=portal.id, data={}, field_items={}))
        session.commit()
    return member_id, token, domain


def run(url: str | None = None, seconds: int = 15, workers: int = 2, threads: int = 2, connections: int = 8,
        worker_class: str = "gthread", worker_threads: int = 4, repeats: int = 3) -> dict:
    from sqlalchemy import func, select

    from addon.models import StoredEvent
    from addon.services import build_services

    say = progress("intake")
    wrk = ensure_wrk(say)
    url = fresh_database(url, "nezabyt_bench_intake")
    settings = bench_settings(url)
    services = build_services(settings)
    member_id, token, domain = make_portal(services)
    port = free_port()
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    cmd = [gunicorn, "-w", str(workers), "-k", worker_class, "--threads", str(worker_threads),
           "-b", f"127.0.0.1:{port}", "--log-level", "warning", "addon.web:create_app()"]
    server = subprocess.Popen(cmd, env=env_for_child(settings), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("gunicorn did not start: " + (server.stderr.read().decode()[-2000:] if server.poll()
                                                                is not None else "timeout"))
            time.sleep(0.2)
        settle_disk(url)
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
            f.write(LUA.replace("__DOMAIN__", domain).replace("__MEMBER__", member_id).replace("__TOKEN__", token))
            script = f.name

        def wrk_run(secs: int, first_id: int) -> dict:
            out = subprocess.run([wrk, f"-t{threads}", f"-c{connections}", f"-d{secs}s", "--timeout", "5s",
                                  "-s", script, base + "/events", "--", str(first_id)], capture_output=True,
                                 text=True, timeout=secs + 60)
            line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
            if line is None:
                raise SystemExit(f"wrk gave no result:\n{out.stdout}\n{out.stderr}")
            return json.loads(line[len("WRKJSON "):])

        say(f"gunicorn {' '.join(cmd[1:-1])}; {repeats} x wrk -t{threads} -c{connections} -d{seconds}s after a "
            f"{WARM_UP_S} s warm-up")
        # Warm-up, not counted in the rate (its events are stored and counted as acknowledged): the
        # workers' first connections to PostgreSQL, the statements' server-side preparation.
        warm_w = wrk_run(WARM_UP_S, 50_000_000)
        # Several runs, each on its own contact IDs: the figures are their medians (every run is in
        # the JSON), so one stall of this shared machine does not decide them.
        runs = [wrk_run(seconds, n * 10_000_000) for n in range(repeats)]
        os.unlink(script)
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
    with services.sessions() as session:
        stored = session.scalar(select(func.count()).select_from(StoredEvent))
    services.dispose()
    # The warm-up's events count too: every one answered 200 must be stored.
    acknowledged = sum(w["requests"] - w["non2xx"] for w in [warm_w, *runs])
    per_run = [{"events_per_s": round(w["requests"] / (w["duration_us"] / 1e6), 1), "requests": w["requests"],
                "p50_ms": round(w["p50_us"] / 1000, 2), "p90_ms": round(w["p90_us"] / 1000, 2),
                "p99_ms": round(w["p99_us"] / 1000, 2), "max_ms": round(w["max_us"] / 1000, 1)} for w in runs]

    def median(key: str) -> float:
        return statistics.median(r[key] for r in per_run)

    return {
        "bench": "intake_gunicorn", "seconds": seconds, "repeats": repeats, "runs": per_run,
        "requests": sum(w["requests"] for w in runs), "warm_up_requests": warm_w["requests"],
        "acknowledged": acknowledged, "non2xx": sum(w["non2xx"] for w in [warm_w, *runs]),
        "socket_errors": sum(w["connect_errors"] + w["read_errors"] + w["write_errors"] + w["timeouts"]
                             for w in [warm_w, *runs]),
        # wrk stops counting at its deadline: requests in flight then are answered and stored
        # without being counted, so stored >= acknowledged; lost is what was answered 200 yet not stored.
        "stored": stored, "lost": max(0, acknowledged - stored),
        "answered_after_wrk_stopped": max(0, stored - acknowledged),
        "events_per_s": median("events_per_s"), "p50_ms": median("p50_ms"), "p90_ms": median("p90_ms"),
        "p99_ms": median("p99_ms"), "max_ms": max(r["max_ms"] for r in per_run),
        "gunicorn": f"-w {workers} -k {worker_class} --threads {worker_threads}",
        "wrk": f"-t{threads} -c{connections} -d{seconds}s", "database": "PostgreSQL",
        "goals": {"events_per_s": 1000, "p99_ms": 25},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default=None)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--worker-class", default="gthread")
    ap.add_argument("--worker-threads", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3, help="measured runs; the figures are their medians")
    args = ap.parse_args()
    emit(run(args.url, args.seconds, args.workers, connections=args.connections, worker_class=args.worker_class,
             worker_threads=args.worker_threads, repeats=args.repeats))


if __name__ == "__main__":
    main()
