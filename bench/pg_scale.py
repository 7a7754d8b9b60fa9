"""PostgreSQL at scale: 10 million tracked rows over 1,000 portals; the "due today" and "warn
today" queries for one portal, and the database side of a full daily run for one portal.

Run: python bench/pg_scale.py [--url postgresql+psycopg://postgres@127.0.0.1:5432/nezabyt_bench]
The database is dropped and recreated (never point it at a database you care about).
Prints a JSON line with the figures; bench/run_all.py folds it into bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time

from sqlalchemy import create_engine, text

from bench.harness import fresh_database

PORTALS = 1000
PER_PORTAL = 10_000
TODAY = dt.date(2026, 11, 22)



def load(engine, portals: int, per_portal: int, progress) -> float:
    t0 = time.perf_counter()
    with engine.begin() as c:
        c.execute(text("""INSERT INTO portal (id, member_id, domain, client_endpoint, server_endpoint, scope,
            status, language, time_zone, installed_at, parked_methods)
            SELECT g, 'm' || g, 'p' || g || '.bitrix24.ru', 'https://p' || g || '.bitrix24.ru/rest/',
                   'https://oauth.bitrix.info/rest/', 'crm', 'active', 'ru', 'Europe/Moscow', now(), '{}'
            FROM generate_series(1, CAST(:n AS int)) g"""), {"n": portals})
        # Load without secondary indexes, then build them: how a restore or a big import would do it.
        for ix in ("ix_tracked_entity_due", "ix_tracked_entity_warn", "ix_tracked_entity_assigned"):
            c.execute(text(f"DROP INDEX {ix}"))
        c.execute(text("ALTER TABLE tracked_entity DROP CONSTRAINT uq_tracked_entity_key"))
    step = 50
    for first in range(1, portals + 1, step):
        last = min(portals, first + step - 1)
        with engine.begin() as c:
            # Due dates spread over 100 days around today, so about 10% are due on any given day
            c.execute(text("""INSERT INTO tracked_entity (portal_id, entity_type, entity_id, status,
                status_set_on, last_call_on, due_on, warn_on, assigned_by_id, open_deals, updated_at)
                SELECT p, CASE WHEN e % 7 = 0 THEN 'company' ELSE 'contact' END, e,
                       (ARRAY['NEW','HOT','WARM','COLD','IN_WORK','LOST'])[1 + (e % 6)],
                       CAST(:today AS date) - (e % 90), CAST(:today AS date) - (e % 30),
                       CAST(:today AS date) + ((e * 7919) % 100) - 9, CAST(:today AS date) + ((e * 7919) % 100) - 12,
                       1 + (e % 12), 0, now()
                FROM generate_series(CAST(:a AS int), CAST(:b AS int)) p, generate_series(1, CAST(:per AS int)) e"""),
                      {"a": first, "b": last, "per": per_portal, "today": TODAY})
        progress(f"loaded portals {last}/{portals}")
    with engine.begin() as c:
        progress("building indexes")
        c.execute(text("ALTER TABLE tracked_entity ADD CONSTRAINT uq_tracked_entity_key "
                       "UNIQUE (portal_id, entity_type, entity_id)"))
        c.execute(text("CREATE INDEX ix_tracked_entity_due ON tracked_entity (portal_id, due_on)"))
        c.execute(text("CREATE INDEX ix_tracked_entity_warn ON tracked_entity (portal_id, warn_on)"))
        c.execute(text("CREATE INDEX ix_tracked_entity_assigned ON tracked_entity (portal_id, assigned_by_id, status)"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("VACUUM ANALYZE tracked_entity"))
    return time.perf_counter() - t0


DUE_SQL = text("SELECT id, entity_type, entity_id, status, status_set_on, last_call_on, due_on, "
               "assigned_by_id FROM tracked_entity WHERE portal_id = :p AND due_on <= :d "
               "AND due_on IS NOT NULL ORDER BY due_on, id")


def time_query(engine, sql, params_list) -> list[float]:
    out = []
    with engine.connect() as c:
        for params in params_list:
            t0 = time.perf_counter()
            rows = c.execute(sql, params).all()
            out.append((time.perf_counter() - t0) * 1000)
            assert rows is not None
    return out


def daily_db_time(engine, portal_id: int) -> dict:
    """The database statements of one portal's daily run: read what is due, write each entity's
    new status and dates, record history and planned writes — one transaction per 500 rows."""
    t0 = time.perf_counter()
    with engine.connect() as c:
        due = c.execute(DUE_SQL, {"p": portal_id, "d": TODAY}).all()
    n = 0
    for i in range(0, len(due), 500):
        chunk = due[i:i + 500]
        with engine.begin() as c:
            c.execute(text("UPDATE tracked_entity SET previous_status = status, status = 'LOST', "
                           "status_set_on = due_on, due_on = NULL, warn_on = NULL WHERE id = :id"),
                      [{"id": r.id} for r in chunk])
            c.execute(text("INSERT INTO status_history (portal_id, entity_type, entity_id, from_status, "
                           "to_status, changed_on, recorded_at, cause) VALUES (:p, :t, :e, :f, 'LOST', :d, now(), 'decay')"),
                      [{"p": portal_id, "t": r.entity_type, "e": r.entity_id, "f": r.status, "d": TODAY} for r in chunk])
            c.execute(text("INSERT INTO outbox (portal_id, key, method, params, status, created_at) "
                           "VALUES (:p, :k, 'crm.contact.update', '{}', 'pending', now())"),
                      [{"p": portal_id, "k": f"daily:{TODAY}:{r.entity_type}:{r.entity_id}"} for r in chunk])
        n += len(chunk)
    return {"rows": n, "ms": round((time.perf_counter() - t0) * 1000, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/nezabyt_bench")
    ap.add_argument("--portals", type=int, default=PORTALS)
    ap.add_argument("--per-portal", type=int, default=PER_PORTAL)
    args = ap.parse_args()

    def progress(msg):
        print(f"  [pg_scale] {msg}", file=sys.stderr, flush=True)

    fresh_database(args.url, "nezabyt_bench")  # dropped and created again, migrated
    engine = create_engine(args.url)
    load_s = load(engine, args.portals, args.per_portal, progress)
    sample = [{"p": 1 + (i * 37) % args.portals, "d": TODAY} for i in range(200)]
    due_ms = time_query(engine, DUE_SQL, sample)
    warn_sql = text("SELECT id FROM tracked_entity WHERE portal_id = :p AND warn_on > :d0 AND warn_on <= :d")
    warn_ms = time_query(engine, warn_sql, [dict(s, d0=TODAY - dt.timedelta(days=1)) for s in sample])
    with engine.connect() as c:
        plan = "\n".join(r[0] for r in c.execute(text("EXPLAIN " + str(DUE_SQL)), {"p": 5, "d": TODAY}))
        total = c.execute(text("SELECT count(*) FROM tracked_entity")).scalar_one()
        due_rows = c.execute(text("SELECT count(*) FROM tracked_entity WHERE portal_id = 5 AND due_on <= :d"),
                             {"d": TODAY}).scalar_one()
    daily = daily_db_time(engine, 7)
    result = {
        "bench": "pg_scale", "rows": total, "portals": args.portals, "load_s": round(load_s, 1),
        "due_rows_per_portal": due_rows,
        "due_query_ms_p50": round(statistics.median(due_ms), 2),
        "due_query_ms_p99": round(sorted(due_ms)[int(len(due_ms) * 0.99) - 1], 2),
        "warn_query_ms_p50": round(statistics.median(warn_ms), 2),
        "daily_run_db": daily, "plan": plan,
    }
    print(json.dumps(result))
    engine.dispose()


if __name__ == "__main__":
    main()
