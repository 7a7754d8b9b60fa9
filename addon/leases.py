"""Leases: a worker's claim on a portal's work that expires when the worker dies.

A lease is a row (portal, kind) holding an owner and an expiry. It is claimed by one UPDATE whose
subquery takes the row `FOR UPDATE SKIP LOCKED` (PostgreSQL), so two workers never wait on each
other and never both win; the transaction ends at once, and the expiry alone keeps others off
while the holder works and renews (one UPDATE each, as is the release). On SQLite (one worker)
the same code runs without the lock clause. Leases use the real wall clock (process liveness),
not the simulated `now` of the jobs.
"""
from __future__ import annotations

import datetime as dt
import secrets
from contextlib import contextmanager
from typing import Callable, Iterator

from sqlalchemy import bindparam, select, text, update

from addon.models import Lease, utcnow

DEFAULT_TTL = dt.timedelta(minutes=5)  # claim/renew/release called directly; `holding` takes the setting
# One lease per portal covers its events, its daily run and its re-index: they all write the same
# rows and spend the same REST budget, so one holder at a time.
PORTAL = "portal"


_lease = Lease.__table__
# The first claim of a (portal, kind): SQL text, because SQLAlchemy compiles the dialects'
# insert().on_conflict_do_nothing() anew every time (it has no cache key); PostgreSQL and SQLite
# (>= 3.35) share the syntax.
_CREATE = text(f"INSERT INTO {_lease.name} (portal_id, kind, owner, expires_at) "
               "VALUES (:portal_id, :kind, :owner, :expires_at) "
               "ON CONFLICT (portal_id, kind) DO NOTHING RETURNING kind").bindparams(
    *(bindparam(name, type_=_lease.c[name].type) for name in ("portal_id", "kind", "owner", "expires_at")))


# The lease row again, for the claim's SKIP LOCKED subquery: made once (an alias costs a table's
# worth of column copies, and the claim is the worker's most frequent statement).
_UNLOCKED = _lease.alias("unlocked")


def _row(kind: str, portal_id: int):
    return (_lease.c.portal_id == portal_id) & (_lease.c.kind == kind)


def claim(services, portal_id: int, owner: str, kind: str = PORTAL, ttl: dt.timedelta = DEFAULT_TTL,
          clock: Callable[[], dt.datetime] = utcnow) -> bool:
    """Take the lease if it is free, expired or already ours. Never blocks: one UPDATE of the row
    if no other worker has it locked this instant (SKIP LOCKED in its subquery); when it changes
    nothing, an INSERT that only the first claim of a (portal, kind) makes (ON CONFLICT DO
    NOTHING: of two first claims one wins, and a row that exists, held or locked, stays as it is)."""
    now = clock()
    free = (_lease.c.owner.is_(None) | (_lease.c.owner == owner) | _lease.c.expires_at.is_(None)
            | (_lease.c.expires_at <= now))
    unlocked = select(_UNLOCKED.c.portal_id).where(_UNLOCKED.c.portal_id == portal_id, _UNLOCKED.c.kind == kind) \
        .with_for_update(skip_locked=True)
    with services.engine.begin() as conn:
        won = conn.execute(update(_lease).where(_row(kind, portal_id), free, _lease.c.portal_id.in_(unlocked))
                           .values(owner=owner, expires_at=now + ttl)).rowcount
        if not won:
            won = conn.execute(_CREATE, {"portal_id": portal_id, "kind": kind, "owner": owner,
                                         "expires_at": now + ttl}).first() is not None
        return bool(won)


def renew(services, portal_id: int, owner: str, kind: str = PORTAL, ttl: dt.timedelta = DEFAULT_TTL,
          clock: Callable[[], dt.datetime] = utcnow) -> bool:
    """Extend our lease; False if it is no longer ours (we were too slow and someone took it)."""
    with services.engine.begin() as conn:
        return bool(conn.execute(update(_lease).where(_row(kind, portal_id), _lease.c.owner == owner)
                                 .values(expires_at=clock() + ttl)).rowcount)


def release(services, portal_id: int, owner: str, kind: str = PORTAL) -> None:
    with services.engine.begin() as conn:
        conn.execute(update(_lease).where(_row(kind, portal_id), _lease.c.owner == owner)
                     .values(owner=None, expires_at=None))


class LeaseLost(RuntimeError):
    """Our lease expired and another worker holds the portal now: stop touching it."""


def unit_owner(worker: str) -> str:
    """The lease owner of one unit of work of `worker` (see the module's docstring)."""
    return f"{worker}/{secrets.token_hex(3)}"


def worker_of(owner: str | None) -> str | None:
    """The worker that holds a lease (its owner without the unit's token)."""
    return owner.rsplit("/", 1)[0] if owner and "/" in owner else owner


@contextmanager
def holding(services, portal_id: int, owner: str | None = None, kind: str = PORTAL,
            ttl: dt.timedelta | None = None) -> Iterator[Callable[[], None] | None]:
    """`with holding(...) as keep:` — keep is None when the portal is taken; otherwise call
    keep() between chunks of long work to renew the lease (raises LeaseLost if it is gone).
    The lease lasts `lease_seconds` (a setting) unless renewed. keep() renews once a third of
    the lease has passed since it was last claimed or renewed, and does nothing before: no other
    worker can take a lease that has not expired, so the statement would only say it is still ours."""
    owner = unit_owner(owner or services.settings.worker_id)
    ttl = ttl or dt.timedelta(seconds=services.settings.lease_seconds)
    if not claim(services, portal_id, owner, kind, ttl):
        yield None
        return
    renewed = [utcnow()]

    def keep() -> None:
        now = utcnow()
        if dt.timedelta(0) <= now - renewed[0] < ttl / 3:
            return
        if not renew(services, portal_id, owner, kind, ttl, clock=lambda: now):
            raise LeaseLost(f"lease {kind} of portal {portal_id} lost")
        renewed[0] = now

    try:
        yield keep
    finally:
        release(services, portal_id, owner, kind)
