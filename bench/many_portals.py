"""Benchmark: many portals at once. K portals on one devportal (DevPortalFleet: each on its own
loopback address with its own 2/s burst 50 bucket), 150 ms of latency on every REST call, M tracked
contacts each with 10% due at one notification time (09:00 Moscow); `nezabyt worker --once` in
worker processes against PostgreSQL.

Figures:
- pass: one worker over K portals, wall time against the slowest single portal's run alone (an
  identical portal run by itself first). Goal (K=20, M=2,000): <= 1.5x.
- digest lateness: per portal, its last digest message sent, less the moment the workers started
  at the notification time (p50, p99, max). Goal (K=1,000, M=200, 2 workers): p99 and max <= 60 s;
  each worker's peak RSS (VmHWM) <= 250 MB.
- events: once the runs are under way a burst of events is stored for a portal whose notification time has not
  come (stored as the event receiver stores them); each event's stored -> processed time, p99 <= 10 s.

Set-up (not measured): the fleet seeded; one portal installed through the manifest (the status
fields), the others given the same fields and their Portal rows, tokens and settings directly;
statuses put on the contacts and the service table filled to match (as an index would); the portals'
events unbound (the echo of the runs' writes would only load the machine).

Run: python -m bench.many_portals [--portals K] [--tracked M] [--workers N] [--trend 1,10,100]
[--url postgresql+psycopg://...] (default: PostgreSQL nezabyt_bench_many, dropped and created again).
--chart FILE writes an SVG of the trend. Targets 127.0.0.1/8 only; bounded (timeouts on every step).
The last output line is JSON.
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import os
import random
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench.daily_run import WORKER_WITH_MAXRSS
from bench.harness import at, bench_settings, emit, env_for_child, fresh_database, progress

DAY = dt.date(2026, 3, 2)
LATENCY_MS = 150
BURST_EVENTS = 200
WORKER_TIMEOUT = 900


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _p(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(round(q * (len(values) - 1))))], 2)


class Fleet:
    """K+2 portals: the K measured, one run alone first (the baseline), one for the event burst."""

    def __init__(self, url: str, portals: int, tracked: int, say):
        from addon.services import build_services
        from devportal.server import DevPortalFleet

        self.say = say
        self.settings = bench_settings(url, public_url="http://127.0.0.1:9")
        self.services = build_services(self.settings)
        self.k, self.m = portals, tracked
        self.fleet = DevPortalFleet(portals + 2, latency_ms=0, limits=False, tz="Europe/Moscow",
                                    token_ttl=86400 * 30).start()
        self.views = self.fleet.portals
        self.ids: list[int] = []

    @property
    def alone(self):
        return self.views[self.k]

    @property
    def burst(self):
        return self.views[self.k + 1]

    def setup(self) -> None:
        from sqlalchemy import insert

        from addon import rules
        from addon.bitrix.pace import store_plan
        from addon.engine import STATUS_FIELD
        from addon.models import Portal, PortalSettings, TrackedEntity
        from addon.options import Options
        from install.manifest_apply import apply_manifest
        from addon.bitrix.tokens import save_application_token, save_tokens

        t0 = time.perf_counter()
        expires = dt.datetime(2030, 1, 1)
        for i, view in enumerate(self.views):
            dp = view.portal
            dp.set_clock(at(DAY, 7), frozen=True)
            dp.seed(departments=2, managers=6, contacts=self.m, companies=0, months_of_calls=0, deals=0, rng_seed=9)
            tokens = dp.register_app(self.settings.public_url, self.settings.client_id, self.settings.client_secret)
            with self.services.sessions() as session:
                portal = Portal(member_id=dp.member_id, domain=dp.domain, client_endpoint=dp.rest_endpoint,
                                server_endpoint=dp.rest_endpoint, scope=dp.app["scope"], time_zone="+03:00",
                                parked_methods={})
                session.add(portal)
                session.flush()
                save_tokens(session, portal, tokens["access_token"], tokens["refresh_token"], expires)
                save_application_token(session, portal, tokens["application_token"])
                notify = "18:00" if view is self.burst else "09:00"  # the burst's portal is not running
                session.add(PortalSettings(portal_id=portal.id, version=1, dated_version=1, field_items={},
                                           data=Options(time_zone="+03:00", notify_time=notify).to_dict()))
                session.commit()
                self.ids.append(portal.id)
            store_plan(self.services, portal.id, {"LICENSE": dp.license})
        apply_manifest(self.services, self.ids[0])  # the status fields, on the first portal
        with self.services.sessions() as session:
            items = dict(session.get(PortalSettings, self.ids[0]).field_items)
            for pid in self.ids[1:]:
                session.get(PortalSettings, pid).field_items = items
            session.commit()
        fields = self.views[0].portal.userfields
        opts = Options()
        ladder = [("NEW", 10), ("HOT", 30), ("WARM", 60), ("COLD", 90)]
        for view, pid in zip(self.views, self.ids):
            dp = view.portal
            dp.userfields = copy.deepcopy(fields)
            dp.bound_events.clear()
            rng = random.Random(9)  # every portal alike: the alone portal is the measured ones' twin
            rows = []
            for cid, record in dp.records["contact"].items():
                code, days = rng.choice(ladder)
                set_on = DAY - dt.timedelta(days=days) if rng.random() < 0.10 else \
                    DAY - dt.timedelta(days=rng.randint(0, days - 1))
                record[STATUS_FIELD] = items["contact"][code]
                record["DATE_MODIFY"] = dp.iso(at(set_on, 10))
                rows.append({"portal_id": pid, "entity_type": "contact", "entity_id": cid,
                             "assigned_by_id": int(record["ASSIGNED_BY_ID"]), "title": record.get("NAME", ""),
                             **rules.row_values(opts, rules.Entity(status=code, status_set_on=set_on))})
            with self.services.sessions() as session:
                session.execute(insert(TrackedEntity), rows)
                session.commit()
            dp.set_faults(latency_ms=LATENCY_MS)
            dp.set_limits(rps=2.0, burst=50, enabled=True)
            dp.set_clock(at(DAY, 9), frozen=False)  # the buckets drain on a running clock
        self.say(f"set up {len(self.views)} portals x {self.m} tracked in {time.perf_counter() - t0:.0f} s")

    def only_active(self, ids: list[int]) -> None:
        from sqlalchemy import update

        from addon.models import PORTAL_ACTIVE, PORTAL_NEEDS_REAUTH, Portal

        with self.services.sessions() as session:
            session.execute(update(Portal).values(status=PORTAL_NEEDS_REAUTH))
            session.execute(update(Portal).where(Portal.id.in_(ids)).values(status=PORTAL_ACTIVE))
            session.commit()

    def workers(self, n: int, concurrency: int) -> tuple[float, list[float], float]:
        """n `worker --once` processes at once: (their wall, each one's VmHWM in MB, start time)."""
        env = dict(env_for_child(self.settings), NEZABYT_WORKER_CONCURRENCY=str(concurrency),
                   NEZABYT_ALLOW_PRIVATE_PORTALS="1", NEZABYT_PUBLIC_URL=self.settings.public_url)
        cmd = [sys.executable, "-c", WORKER_WITH_MAXRSS, "worker", "--once", "--now", at(DAY, 9, 0).isoformat()]
        start = time.time()
        t0 = time.perf_counter()
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(n)]
        return t0, procs, start

    @staticmethod
    def wait(procs, t0) -> tuple[float, list[float], list[str]]:
        peaks, outs = [], []
        for p in procs:
            out, err = p.communicate(timeout=WORKER_TIMEOUT)
            if p.returncode != 0:
                raise SystemExit(f"worker failed ({p.returncode}):\n{out}\n{err[-3000:]}")
            if os.environ.get("NEZABYT_BENCH_WORKER_LOG"):  # each worker's log, appended, to study a pass
                with open(os.environ["NEZABYT_BENCH_WORKER_LOG"], "a", encoding="utf-8") as f:
                    f.write(err)
            peaks.append(int(re.findall(r"^VMHWM_KB (\d+)$", err, re.M)[-1]) / 1024)
            outs.append(out.strip())
        return time.perf_counter() - t0, peaks, outs

    def when_runs_going(self, procs, timeout: float = 120.0) -> None:
        """Return once the workers' daily runs are under way (a run started), or they ended."""
        from sqlalchemy import func, select

        from addon.models import JobRun

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and all(p.poll() is None for p in procs):
            with self.services.sessions() as session:
                if session.scalar(select(func.count()).select_from(JobRun).where(JobRun.kind == "daily",
                                                                               JobRun.status == "running")):
                    return
            time.sleep(0.1)

    def burst_events(self, n: int) -> None:
        """A manager edits n cards of the burst portal; the receiver stores their events."""
        from sqlalchemy import insert

        from addon.engine import STATUS_FIELD
        from addon.models import PortalSettings, StoredEvent

        dp, pid = self.burst.portal, self.ids[-1]
        with self.services.sessions() as session:
            hot = session.get(PortalSettings, pid).field_items["contact"]["HOT"]
        rows = []
        for cid in range(1, n + 1):
            dp.update_record("contact", cid, {STATUS_FIELD: hot})
            rows.append({"portal_id": pid, "event_name": "ONCRMCONTACTUPDATE", "entity_type": "contact",
                         "entity_id": cid, "payload": {"event": "ONCRMCONTACTUPDATE", "data": {"FIELDS": {"ID": cid}}},
                         "source": "online", "dedupe_key": f"bench:{cid}:{time.time()}", "attempts": 0})
        with self.services.sessions() as session:
            session.execute(insert(StoredEvent), rows)
            session.commit()

    def figures(self, ids: list[int], start: float) -> dict:
        from sqlalchemy import func, select

        from addon.models import JobRun, NotificationLog, StoredEvent

        with self.services.sessions() as session:
            runs = session.execute(select(JobRun.portal_id, JobRun.started_at, JobRun.finished_at, JobRun.status)
                                   .where(JobRun.kind == "daily", JobRun.portal_id.in_(ids))).all()
            sent = dict(session.execute(select(NotificationLog.portal_id, func.max(NotificationLog.sent_at))
                                        .where(NotificationLog.portal_id.in_(ids)).group_by(NotificationLog.portal_id)).all())
            events = session.execute(select(StoredEvent.received_at, StoredEvent.processed_at)
                                     .where(StoredEvent.portal_id == self.ids[-1])).all()
        epoch = dt.datetime.fromtimestamp(start, dt.timezone.utc).replace(tzinfo=None)
        late = [(sent[p] - epoch).total_seconds() for p in ids if sent.get(p)]
        spans = [(f - s).total_seconds() for _, s, f, st in runs if f and s]
        ev = [(p - r).total_seconds() for r, p in events if p]
        return {"runs": len(runs), "runs_done": sum(1 for r in runs if r.status == "done"),
                "portals_with_digest": len(late), "digest_late_p50_s": _p(late, 0.5),
                "digest_late_p99_s": _p(late, 0.99), "digest_late_max_s": _p(late, 1.0),
                "run_seconds_max": _p(spans, 1.0), "run_seconds_p50": _p(spans, 0.5),
                "events": len(events), "events_processed": len(ev), "event_p50_s": _p(ev, 0.5),
                "event_p99_s": _p(ev, 0.99), "event_max_s": _p(ev, 1.0)}

    def close(self) -> None:
        self.fleet.stop()
        self.services.dispose()


def run(url: str | None, portals: int, tracked: int, workers: int, concurrency: int, events: bool) -> dict:
    say = progress("many_portals")
    url = fresh_database(url, "nezabyt_bench_many")
    fleet = Fleet(url, portals, tracked, say)
    try:
        fleet.setup()
        # The baseline: the twin portal alone, one worker.
        fleet.only_active([fleet.ids[portals]])
        t0, procs, start = fleet.workers(1, concurrency)
        alone_wall, alone_peak, _ = fleet.wait(procs, t0)
        alone = fleet.figures([fleet.ids[portals]], start)
        say(f"one portal alone: {alone_wall:.1f} s (its run {alone['run_seconds_max']} s)")
        # The K portals and the burst's portal, `workers` processes.
        measured = fleet.ids[:portals]
        fleet.only_active(measured + [fleet.ids[-1]])
        load_before = os.getloadavg()
        # CPU of the pass: this process (the devportal fleet serving it) and the worker processes.
        self_cpu, kids_cpu = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
        t0, procs, start = fleet.workers(workers, concurrency)
        if events:
            fleet.when_runs_going(procs)
            fleet.burst_events(BURST_EVENTS)
        wall, peaks, outs = fleet.wait(procs, t0)
        load_after = os.getloadavg()
        devportal_cpu = _cpu(resource.RUSAGE_SELF) - self_cpu
        workers_cpu = _cpu(resource.RUSAGE_CHILDREN) - kids_cpu
        got = fleet.figures(measured, start)
        say(f"K={portals}: {wall:.1f} s, digest late p99 {got['digest_late_p99_s']} s, max {got['digest_late_max_s']} s,"
            f" events p99 {got['event_p99_s']} s, peak {max(peaks):.0f} MB")
        requests = sum(v.portal.http_requests for v in fleet.views)
        errors = sum(1 for v in fleet.views for c in v.portal.calls if c.get("status") == 503 and not c.get("in_batch"))
        return {"bench": "many_portals", "portals": portals, "tracked": tracked, "due_share": 0.10,
                "workers": workers, "concurrency": concurrency, "latency_ms": LATENCY_MS,
                "pass_wall_s": round(wall, 1), "alone_wall_s": round(alone_wall, 1),
                "alone_run_s": alone["run_seconds_max"], "ratio": round(wall / alone_wall, 2),
                **got, "worker_peak_mb": [round(p, 1) for p in peaks], "alone_peak_mb": round(alone_peak[0], 1),
                "devportal_cpu_s": round(devportal_cpu, 2), "workers_cpu_s": round(workers_cpu, 2),
                "rest_requests": requests, "rest_503": errors, "worker_output": outs,
                "load_average_before": [round(x, 2) for x in load_before],
                "load_average_after": [round(x, 2) for x in load_after],
                "database": "SQLite" if url.startswith("sqlite") else "PostgreSQL"}
    finally:
        fleet.close()


def chart(points: list[dict], path: Path) -> None:
    """An SVG line chart: digest lateness (max and p99) and the pass's wall against K (log scale)."""
    w, h, left, bottom, top = 560, 300, 60, 40, 20
    ks = [p["portals"] for p in points]
    series = [("pass wall, s", "pass_wall_s", "#1f77b4"), ("digest late max, s", "digest_late_max_s", "#d62728"),
              ("digest late p99, s", "digest_late_p99_s", "#ff7f0e")]
    ymax = max([60.0] + [float(p.get(key) or 0) for _, key, _ in series for p in points]) * 1.1
    import math

    def x(k):
        span = math.log10(max(ks)) - math.log10(min(ks)) or 1
        return left + (math.log10(k) - math.log10(min(ks))) / span * (w - left - 20)

    def y(v):
        return h - bottom - float(v) / ymax * (h - bottom - top)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
             f'<text x="{left}" y="14">Many portals: M={points[0]["tracked"]} tracked each, 150 ms latency, '
             f'{points[-1]["workers"]} worker(s)</text>',
             f'<line x1="{left}" y1="{h - bottom}" x2="{w - 20}" y2="{h - bottom}" stroke="#333"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="#333"/>',
             f'<line x1="{left}" y1="{y(60):.1f}" x2="{w - 20}" y2="{y(60):.1f}" stroke="#999" stroke-dasharray="4"/>',
             f'<text x="{w - 90}" y="{y(60) - 4:.1f}" fill="#666">goal 60 s</text>']
    for k in ks:
        parts.append(f'<text x="{x(k):.1f}" y="{h - bottom + 16}" text-anchor="middle">K={k}</text>')
    for i, (label, key, color) in enumerate(series):
        pts = [(x(p["portals"]), y(p.get(key) or 0)) for p in points]
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="'
                     + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + '"/>')
        parts += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{color}"/>' for a, b in pts]
        parts.append(f'<text x="{left + 10}" y="{top + 14 + 14 * i}" fill="{color}">{label}</text>')
    for tick in range(0, int(ymax) + 1, max(10, int(ymax / 5) // 10 * 10 or 10)):
        parts.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick}</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default=None)
    ap.add_argument("--portals", type=int, default=20)
    ap.add_argument("--tracked", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--no-events", action="store_true")
    ap.add_argument("--trend", default=None, help="comma-separated K values, e.g. 1,10,100,1000")
    ap.add_argument("--chart", default=None)
    args = ap.parse_args()
    if args.trend:
        points = [run(args.url, int(k), args.tracked, args.workers, args.concurrency, not args.no_events)
                  for k in args.trend.split(",")]
        if args.chart:
            chart(points, Path(args.chart))
        emit({"bench": "many_portals_trend", "points": points})
        return
    emit(run(args.url, args.portals, args.tracked, args.workers, args.concurrency, not args.no_events))


if __name__ == "__main__":
    main()
