"""Benchmark: REST calls to process a burst of 1,000 entity-update events, against the naive way
(one crm.contact.get per event). Goal: at most 25 calls.

The devportal runs with Bitrix24's real limit (2 requests/s, burst 50) on a running clock; the
worker uses the add-on's default pace. The naive way is run for real too, against the same
portal with the limit off (at 2/s it would take its rate-limit floor, reported next to it).

Run: python bench/events_burst.py [--url sqlite|postgresql+psycopg://...]   (default: PostgreSQL
database nezabyt_bench_events, dropped and created again). The last output line is JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import random
import time

from bench.harness import Stack, at, bench_settings, emit, fresh_database, progress, rate_floor_seconds

DAY = dt.date(2026, 3, 2)


def run(url: str | None = None, events: int = 1000, contacts: int = 1200) -> dict:
    from sqlalchemy import func, select

    from addon.engine import STATUS_FIELD
    from addon.models import StoredEvent
    from addon.bitrix.client import portal_client
    from worker.events import process_events
    from worker.reindex import reindex

    say = progress("events_burst")
    url = fresh_database(url, "nezabyt_bench_events")
    stack = Stack(bench_settings(url)).start(at(DAY, 8))
    try:
        dp = stack.dp
        dp.seed(departments=3, managers=12, contacts=contacts, companies=100, months_of_calls=2, deals=150, rng_seed=5)
        stack.install()
        items = stack.items("contact")
        rng = random.Random(5)
        codes = ["HOT", "WARM", "COLD"]
        with dp.lock:  # the statuses the managers had set, then the base indexed (limit off: setup)
            for record in dp.records["contact"].values():
                record[STATUS_FIELD] = items[rng.choice(codes)]
                record["DATE_MODIFY"] = dp.iso(at(DAY - dt.timedelta(days=rng.randint(1, 20)), 10))
        dp.set_limits(enabled=False)
        reindex(stack.services, stack.portal_id, at(DAY, 8, 30))
        dp.set_clock(at(DAY, 11), frozen=False)  # the leaky bucket drains on a running clock
        dp.set_limits(rps=2.0, burst=50, enabled=True)
        say(f"{contacts} contacts indexed; firing {events} update events")
        ids = rng.sample(sorted(dp.records["contact"]), events)
        for n, cid in enumerate(ids):
            record = dp.records["contact"][cid]
            uid = int(record["ASSIGNED_BY_ID"])
            if n % 5 < 3:  # three in five change the status, the rest edit something else
                dp.act_update("contact", cid, {STATUS_FIELD: items[rng.choice(codes)]}, user_id=uid)
            else:
                dp.act_update("contact", cid, {"COMMENTS": f"звонок {n}"}, user_id=uid)
        dp.wait_for_deliveries(120)
        with stack.services.sessions() as session:
            stored = session.scalar(select(func.count()).select_from(StoredEvent).where(
                StoredEvent.portal_id == stack.portal_id))
        mark = stack.mark()
        t0 = time.perf_counter()
        report = process_events(stack.services, stack.portal_id, at(DAY, 12))
        ours_s = time.perf_counter() - t0
        ours = stack.rest_since(mark)
        say(f"ours: {ours['http_requests']} requests in {ours_s:.1f}s")

        # The naive way: one read per stored event (the portal's limit and our pace off: we count).
        dp.set_limits(enabled=False)
        stack.services.settings = dataclasses.replace(stack.services.settings, portal_rps=1e5, portal_burst=100000)
        with stack.services.sessions() as session:
            event_ids = list(session.scalars(select(StoredEvent.entity_id).where(
                StoredEvent.portal_id == stack.portal_id).order_by(StoredEvent.id)))
        mark = stack.mark()
        t0 = time.perf_counter()
        with portal_client(stack.services, stack.portal_id) as client:
            for eid in event_ids:
                client.call("crm.contact.get", {"id": eid})
        naive_s = time.perf_counter() - t0
        naive = stack.rest_since(mark)
        return {
            "bench": "events_burst", "events_fired": events, "events_stored": stored,
            "events_processed": report.processed, "events_failed": report.failed,
            "ours_http_requests": ours["http_requests"], "ours_commands": ours["commands"],
            "ours_by_method": ours["by_method"], "ours_seconds_at_2rps": round(ours_s, 2),
            "naive_http_requests": naive["http_requests"], "naive_seconds_limit_off": round(naive_s, 2),
            "naive_floor_seconds_at_2rps": rate_floor_seconds(naive["http_requests"]),
            "goal_calls": 25, "goal_met": ours["http_requests"] <= 25,
        }
    finally:
        stack.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default=None)
    ap.add_argument("--events", type=int, default=1000)
    args = ap.parse_args()
    emit(run(args.url, args.events))


if __name__ == "__main__":
    main()
