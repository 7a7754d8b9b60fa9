"""Benchmark: one daily run over 100,000 tracked contacts with 10% due, at Bitrix24's real limit.

Figures: REST calls against the floor ceil(writes / 50) (goal <= 1.02x); wall time against the
rate-limit floor (calls - burst) / rate at the devportal's 2/s burst 50 (goal <= 1.1x); the worker's
peak memory (goal <= 150 MB), measured as the worker process's own high-water resident set size
(VmHWM in /proc/self/status, read inside `nezabyt decay` at its end; it runs as a child process).
NEZABYT_BENCH_RSS_TRACE=1 prints each new RSS high with the code that reached it.

Set-up (not measured): the devportal seeded with 100,000 contacts, Nezabyt installed, the statuses
put on the contacts and the service table filled to match them (as an index would), then the
portal's events unbound so the run's echo events do not load the machine while it is timed.

Run: python -m bench.daily_run [--url sqlite|postgresql+psycopg://...] (default: PostgreSQL
database nezabyt_bench_daily, dropped and created again). The last output line is JSON.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import re
import subprocess
import sys
import time

from bench.harness import (
    Stack,
    at,
    bench_settings,
    emit,
    env_for_child,
    fresh_database,
    progress,
    rate_floor_seconds,
)

DAY = dt.date(2026, 3, 2)


WORKER_WITH_MAXRSS = """
import resource, sys
from addon.cli import main
try:
    import os, tracemalloc
    if os.environ.get("NEZABYT_BENCH_TRACEMALLOC"):
        tracemalloc.start(8)
    if os.environ.get("NEZABYT_BENCH_RSS_TRACE"):
        # Where the resident set grows: every 0.1 s the RSS and the main thread's innermost
        # project frames; each new high is printed with them.
        import threading, time, traceback
        main_ident = threading.get_ident()

        def sample():
            high = 0
            while True:
                with open("/proc/self/statm") as f:
                    rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20
                if rss > high + 4:
                    high = rss
                    frame = sys._current_frames().get(main_ident)
                    where = [f"{fs.filename.rsplit('/', 2)[-1]}:{fs.lineno} {fs.name}"
                             for fs in traceback.extract_stack(frame)
                             if "site-packages" not in fs.filename][-4:] if frame else []
                    print("RSS", rss, "MB", " < ".join(reversed(where)), file=sys.stderr, flush=True)
                    if tracemalloc.is_tracing() and rss > int(os.environ.get("NEZABYT_BENCH_SNAPSHOT_MB", "1e9")):
                        stats = tracemalloc.take_snapshot().statistics("lineno")[:8]
                        print("  python", tracemalloc.get_traced_memory()[0] >> 20, "MB;",
                              "; ".join(f"{st.size >> 20}MB {st.traceback[0]}" for st in stats),
                              file=sys.stderr, flush=True)
                time.sleep(0.005)

        threading.Thread(target=sample, daemon=True).start()
    if os.environ.get("NEZABYT_BENCH_PROFILE"):
        # CPU per function over every thread (a profiler per thread, started by its first event).
        import cProfile, threading
        profiles = [cProfile.Profile(__import__("time").thread_time)]  # CPU time of each thread, not wall

        def start_profiling(*_):
            profile = cProfile.Profile(__import__("time").thread_time)
            profiles.append(profile)
            profile.enable()

        threading.setprofile(start_profiling)
        profiles[0].enable()
    main(args=sys.argv[1:], standalone_mode=False)
    if os.environ.get("NEZABYT_BENCH_PROFILE"):
        import pstats
        profiles[0].disable()
        pstats.Stats(*profiles).dump_stats(os.environ["NEZABYT_BENCH_PROFILE"])
    if os.environ.get("NEZABYT_BENCH_TRACEMALLOC"):
        cur, peak = tracemalloc.get_traced_memory()
        print("TRACED", cur >> 20, peak >> 20, file=sys.stderr)
        for s in tracemalloc.take_snapshot().statistics("traceback")[:3]:
            print("TOP", s.size >> 20, "MB", " | ".join(s.traceback.format()[-6:]), file=sys.stderr)
finally:
    # The process's own peak: VmHWM, the high-water mark of this address space. Not
    # getrusage(RUSAGE_SELF).ru_maxrss: Linux folds the old address space's peak into it at exec, and
    # the bench starts this process with vfork, so it would report the bench's own peak (the
    # devportal holding 100,000 contacts) whenever that is the larger.
    with open("/proc/self/status") as f:
        print("VMHWM_KB", next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")), file=sys.stderr)
    print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def fill(stack: Stack, contacts: int, due_share: float, rng: random.Random) -> int:
    """Statuses in the portal and the matching service-table rows; `due_share` of them due on DAY."""
    from sqlalchemy import insert

    from addon import rules
    from addon.engine import STATUS_FIELD
    from addon.models import TrackedEntity
    from addon.options import Options

    opts = Options()
    items = stack.items("contact")
    dp = stack.dp
    ladder = [("NEW", 10), ("HOT", 30), ("WARM", 60), ("COLD", 90)]
    rows, due = [], 0
    with dp.lock:
        for cid, record in dp.records["contact"].items():
            code, days = rng.choice(ladder)
            if rng.random() < due_share:
                set_on = DAY - dt.timedelta(days=days)  # due exactly today
                due += 1
            else:
                set_on = DAY - dt.timedelta(days=rng.randint(0, days - 1))
            record[STATUS_FIELD] = items[code]
            record["DATE_MODIFY"] = dp.iso(at(set_on, 10))
            e = rules.Entity(status=code, status_set_on=set_on)
            rows.append({"portal_id": stack.portal_id, "entity_type": "contact", "entity_id": cid,
                         "assigned_by_id": int(record["ASSIGNED_BY_ID"]),
                         "title": f"{record.get('NAME', '')} {record.get('LAST_NAME', '')}".strip(),
                         **rules.row_values(opts, e)})
    with stack.services.sessions() as session:
        for i in range(0, len(rows), 5000):
            session.execute(insert(TrackedEntity), rows[i:i + 5000])
        session.commit()
    return due


def run(url: str | None = None, contacts: int = 100_000, due_share: float = 0.10) -> dict:
    from sqlalchemy import select

    from sqlalchemy import func

    from addon.models import JobRun, Outbox, Portal

    say = progress("daily_run")
    url = fresh_database(url, "nezabyt_bench_daily")
    stack = Stack(bench_settings(url)).start(at(DAY, 7))
    try:
        dp = stack.dp
        t0 = time.perf_counter()
        dp.seed(departments=3, managers=12, contacts=contacts, companies=0, months_of_calls=0, deals=0, rng_seed=9)
        stack.install(unbind_events=True)
        due = fill(stack, contacts, due_share, random.Random(9))
        say(f"set up {contacts} tracked contacts, {due} due, in {time.perf_counter() - t0:.0f}s; running the daily run")
        with stack.services.sessions() as session:
            member_id = session.get(Portal, stack.portal_id).member_id
        now = at(DAY, 9, 0)
        dp.set_clock(now, frozen=False)  # the leaky bucket drains on a running clock
        dp.set_limits(rps=2.0, burst=50, enabled=True)
        mark = stack.mark()
        t0 = time.perf_counter()
        child = subprocess.run(
            [sys.executable, "-c", WORKER_WITH_MAXRSS, "decay", "--portal", member_id,
             "--now", now.isoformat()], env=env_for_child(stack.settings), capture_output=True, text=True,
            timeout=1800)
        process_s = time.perf_counter() - t0
        if child.returncode != 0:
            raise SystemExit(f"nezabyt decay failed:\n{child.stdout}\n{child.stderr[-3000:]}")
        # The worker's own peak (VmHWM in the child): RUSAGE_CHILDREN here would report the largest
        # child this process ever reaped, and the child's own ru_maxrss carries this process's peak
        # over the vfork + exec that started it.
        if os.environ.get("NEZABYT_BENCH_TRACEMALLOC") or os.environ.get("NEZABYT_BENCH_RSS_TRACE"):
            say(child.stderr[-6000:])
        maxrss_mb = int(re.findall(r"^VMHWM_KB (\d+)$", child.stderr, re.M)[-1]) / 1024
        rusage_mb = int(re.findall(r"^MAXRSS_KB (\d+)$", child.stderr, re.M)[-1]) / 1024
        rest = stack.rest_since(mark)
        with stack.services.sessions() as session:
            job = session.scalars(select(JobRun).where(JobRun.portal_id == stack.portal_id,
                                                       JobRun.kind == "daily")).one()
            run_s = (job.finished_at - job.started_at).total_seconds()
            summary = dict(job.summary)
            first_sent, last_sent = session.execute(select(func.min(Outbox.sent_at), func.max(Outbox.sent_at)).where(
                Outbox.portal_id == stack.portal_id)).one()
        # The run's two phases: planning in the database, then sending at the add-on's pace.
        plan_s = (first_sent - job.started_at).total_seconds() if first_sent else None
        send_s = (last_sent - first_sent).total_seconds() if first_sent else None
        pace = stack.settings
        pace_floor_s = max(0.0, (rest["http_requests"] - pace.portal_burst) / pace.portal_rps)
        floor_s = rate_floor_seconds(rest["http_requests"])
        calls_ratio = rest["http_requests"] / rest["floor"] if rest["floor"] else None
        return {
            "bench": "daily_run", "tracked": contacts, "due": due, "decayed": summary.get("decayed"),
            "writes_sent": summary.get("writes_sent"), "messages_sent": summary.get("messages_sent"),
            "http_requests": rest["http_requests"], "commands": rest["commands"], "writes": rest["writes"],
            "calls_floor": rest["floor"], "calls_ratio": round(calls_ratio, 3) if calls_ratio else None,
            "by_method": rest["by_method"], "rest_errors": rest["errors"],
            "run_seconds": round(run_s, 1), "process_seconds": round(process_s, 1),
            "rate_floor_seconds": floor_s, "time_ratio": round(run_s / floor_s, 3) if floor_s else None,
            "plan_seconds": round(plan_s, 1) if plan_s is not None else None,
            "send_seconds": round(send_s, 1) if send_s is not None else None,
            "pace_floor_seconds": round(pace_floor_s, 1),
            "worker_maxrss_mb": round(maxrss_mb, 1), "memory_method": "VmHWM of the nezabyt decay process (/proc/self/status at its end)",
            "ru_maxrss_mb": round(rusage_mb, 1),
            "add_on_pace": {"rps": stack.settings.portal_rps, "burst": stack.settings.portal_burst},
            "database": "SQLite" if stack.settings.is_sqlite else "PostgreSQL",
            "goals": {"calls_ratio": 1.02, "time_ratio": 1.1, "maxrss_mb": 150},
        }
    finally:
        stack.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default=None)
    ap.add_argument("--contacts", type=int, default=100_000)
    args = ap.parse_args()
    emit(run(args.url, args.contacts))


if __name__ == "__main__":
    main()
