"""What the workers are doing, per portal: the last event applied, the last daily run (started,
finished, due at), who holds the portal's lease, the REST calls made, and whether the portal is
parked on a rate limit or an error — for `nezabyt worker status` and the settings page."""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select

from addon import engine
from addon.models import JobRun, Lease, Portal, PortalBudget, StoredEvent, utcnow
from addon.leases import worker_of

# A 503 QUERY_LIMIT_EXCEEDED this recent counts as "parked on the rate limit".
LIMITED_FOR = dt.timedelta(minutes=1)


def portal_status(services, portal_ids: list[int] | None = None) -> list[dict[str, Any]]:
    """One dict per portal (all, or `portal_ids`), in portal order; times are naive UTC."""
    now = utcnow()
    out: list[dict[str, Any]] = []
    with services.sessions() as session:
        query = select(Portal).order_by(Portal.id)
        if portal_ids is not None:
            query = query.where(Portal.id.in_(portal_ids))
        portals = session.scalars(query).all()
        ids = [p.id for p in portals]
        if not ids:
            return out
        events = {pid: (last, pending) for pid, last, pending in session.execute(
            select(StoredEvent.portal_id, func.max(StoredEvent.processed_at),
                   func.count(StoredEvent.id).filter(StoredEvent.processed_at.is_(None)))
            .where(StoredEvent.portal_id.in_(ids)).group_by(StoredEvent.portal_id))}
        newest = select(func.max(JobRun.id)).where(JobRun.kind == "daily", JobRun.portal_id.in_(ids)) \
            .group_by(JobRun.portal_id)
        runs = {j.portal_id: j for j in session.scalars(select(JobRun).where(JobRun.id.in_(newest)))}
        leases = {}
        for lease in session.scalars(select(Lease).where(Lease.portal_id.in_(ids), Lease.owner.is_not(None),
                                                         Lease.expires_at > now)):
            leases.setdefault(lease.portal_id, []).append(f"{lease.kind}: {worker_of(lease.owner)}")
        budgets = {b.portal_id: b for b in session.scalars(select(PortalBudget).where(PortalBudget.portal_id.in_(ids)))}
        for p in portals:
            last_event, pending = events.get(p.id, (None, 0))
            run = runs.get(p.id)
            budget = budgets.get(p.id)
            parked = sorted(m for m, until in (p.parked_methods or {}).items()
                            if float(until) > now.replace(tzinfo=dt.timezone.utc).timestamp())
            limited = bool(budget and budget.limited_at and now - budget.limited_at < LIMITED_FOR)
            due_at = None
            if run is not None:
                ctx = engine.load_context(session, p.id)
                day = dt.date.fromisoformat((run.params or {}).get("day", run.key.rsplit(":", 1)[-1]))
                due_at = dt.datetime.combine(day, ctx.opts.notify_clock(), tzinfo=ctx.tz) \
                    .astimezone(dt.timezone.utc).replace(tzinfo=None)
            out.append({
                "portal_id": p.id, "domain": p.domain, "member_id": p.member_id, "status": p.status,
                "plan": budget.plan if budget else None,
                "rps": f"{budget.rps:g}" if budget else None, "burst": budget.burst if budget else None,
                "last_event_processed": last_event, "events_pending": int(pending or 0),
                "daily": None if run is None else {"day": (run.params or {}).get("day"), "status": run.status,
                                                   "due_at": due_at, "started": run.started_at,
                                                   "finished": run.finished_at},
                "lease": leases.get(p.id, []), "calls": int(budget.calls) if budget else 0,
                "rate_limited": limited, "parked_methods": parked,
                "error": (p.status_reason if p.status != "active" else None) or (budget.last_error if budget else None),
            })
    return out


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "—"


def status_text(rows: list[dict[str, Any]]) -> str:
    lines = []
    for r in rows:
        parked = []
        if r["rate_limited"]:
            parked.append("rate limit (503)")
        if r["parked_methods"]:
            parked.append("parked: " + ", ".join(r["parked_methods"]))
        if r["error"]:
            parked.append(f"error: {r['error'][:200]}")
        d = r["daily"]
        daily = "none yet" if d is None else (f"{d['day']} {d['status']}, due at {_when(d['due_at'])}, "
                                              f"started {_when(d['started'])}, finished {_when(d['finished'])}")
        lines += [f"portal {r['portal_id']} {r['domain']} ({r['status']}; plan {r['plan'] or '?'}, {_limits(r)})",
                  f"  last event processed: {_when(r['last_event_processed'])} ({r['events_pending']} pending)",
                  f"  last daily run: {daily}",
                  f"  lease: {', '.join(r['lease']) or 'free'}",
                  f"  calls made: {r['calls']}",
                  f"  parked: {'; '.join(parked) or 'no'}"]
    return "\n".join(lines) if lines else "no portals"


def _limits(row: dict) -> str:
    return f"{row['rps']}/s burst {row['burst']}" if row["rps"] else "?"
