"""Benchmark: a bulk load of 100,000 rows (CSV of contact ID + status) staged and applied to the
portal. Figures: REST calls against the floor ceil(rows / 50) (one crm.contact.update per row, 50 to
a batch) and zero lost: every row applied, every contact in the portal holding its new status,
every one in the service table.

The devportal's limit and the add-on's pace are off here (we count calls; at Bitrix24's 2/s the
same calls would take their rate-limit floor, reported next to them). The portal's events are
unbound after install so the load's 100,000 echoes are not stored while it is timed.

Run: python -m bench.bulkload [--url sqlite|postgresql+psycopg://...] (default: PostgreSQL
database nezabyt_bench_bulk, dropped and created again). The last output line is JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import math
import random
import time

from bench.harness import Stack, at, bench_settings, emit, fresh_database, progress, rate_floor_seconds

DAY = dt.date(2026, 3, 2)


def run(url: str | None = None, rows: int = 100_000) -> dict:
    from sqlalchemy import func, select

    from addon.bulkload.staging import prepare_import
    from addon.engine import STATUS_FIELD
    from addon.models import ImportJob, TrackedEntity
    from addon.options import Options
    from worker.imports import apply_import

    say = progress("bulkload")
    url = fresh_database(url, "nezabyt_bench_bulk")
    stack = Stack(bench_settings(url, portal_rps=1e5, portal_burst=100000), limits=False).start(at(DAY, 8))
    try:
        dp = stack.dp
        dp.seed(departments=3, managers=12, contacts=rows, companies=0, months_of_calls=0, deals=0, rng_seed=11)
        stack.install(unbind_events=True)
        opts = Options()
        names = {s.code: s.name for s in opts.statuses}
        rng = random.Random(11)
        wanted = {cid: rng.choice(["NEW", "HOT", "WARM", "COLD"]) for cid in dp.records["contact"]}
        lines = ["ID;Status;Type"] + [f"{cid};{names[code]};contact" for cid, code in wanted.items()]
        content = ("\n".join(lines) + "\n").encode("utf-8")
        now = at(DAY, 10)
        t0 = time.perf_counter()
        with stack.services.sessions() as session:
            staged = prepare_import(session, None, stack.portal_id, "bench.csv", content, opts, 1, now, DAY)
            session.commit()
        stage_s = time.perf_counter() - t0
        say(f"staged {staged.valid_rows}/{staged.total_rows} rows in {stage_s:.1f}s; applying")
        mark = stack.mark()
        t0 = time.perf_counter()
        summary = apply_import(stack.services, staged.job_id, now)
        apply_s = time.perf_counter() - t0
        rest = stack.rest_since(mark)
        items = stack.items("contact")
        in_portal = sum(1 for cid, code in wanted.items()
                        if str(dp.records["contact"][cid].get(STATUS_FIELD) or "") == str(items[code]))
        with stack.services.sessions() as session:
            job = session.get(ImportJob, staged.job_id)
            tracked = session.scalar(select(func.count()).select_from(TrackedEntity).where(
                TrackedEntity.portal_id == stack.portal_id, TrackedEntity.status.is_not(None)))
            applied = job.applied_rows
        floor = math.ceil(rows / 50)
        return {
            "bench": "bulkload", "rows": rows, "staged_valid": staged.valid_rows, "applied": applied,
            "failed": summary.failed, "in_portal": in_portal, "tracked": tracked,
            "lost": rows - min(applied, in_portal, tracked),
            "http_requests": rest["http_requests"], "commands": rest["commands"], "writes": rest["writes"],
            "calls_floor": floor, "calls_ratio": round(rest["http_requests"] / floor, 3),
            "by_method": rest["by_method"], "stage_seconds": round(stage_s, 1), "apply_seconds": round(apply_s, 1),
            "rate_floor_seconds_at_2rps": rate_floor_seconds(rest["http_requests"]),
        }
    finally:
        stack.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default=None)
    ap.add_argument("--rows", type=int, default=100_000)
    args = ap.parse_args()
    emit(run(args.url, args.rows))


if __name__ == "__main__":
    main()
