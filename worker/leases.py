"""Leases: a worker's claim on a portal's work that expires when the worker dies.

A lease is a row (portal, kind) holding an owner and an expiry. It is claimed in a short
transaction with `SELECT ... FOR UPDATE SKIP LOCKED` (PostgreSQL), so two workers never wait on
each other and never both win; then the row lock is released and the expiry alone keeps others
off while the holder works and renews. On SQLite (one worker) the same code runs without the lock
clause. Leases use the real wall clock (process liveness), not the simulated `now` of the jobs.
"""
from __future__ import annotations

import datetime as dt
import secrets
from contextlib import contextmanager
from typing import Callable, Iterator

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from addon.models import Lease, utcnow

DEFAULT_TTL = dt.timedelta(minutes=5)  # claim/renew/release called directly; `holding` takes the setting
# One lease per portal covers its events, its daily run and its re-index: they all write the same
# rows and spend the same REST budget, so one holder at a time.
PORTAL = "portal"


def _ensure_row(services, portal_id: int, kind: str) -> None:
    with services.sessions() as session:
        if session.get(Lease, (portal_id, kind)) is not None:
            return
        session.add(Lease(portal_id=portal_id, kind=kind, owner=None, expires_at=None))
        try:
            session.commit()
        except IntegrityError:  # another worker created it first
            session.rollback()


def claim(services, portal_id: int, owner: str, kind: str = PORTAL, ttl: dt.timedelta = DEFAULT_TTL,
          clock: Callable[[], dt.datetime] = utcnow) -> bool:
    """Take the lease if it is free, expired or already ours. Never blocks."""
    _ensure_row(services, portal_id, kind)
    now = clock()
    with services.sessions() as session:
        lease = session.scalar(select(Lease).where(Lease.portal_id == portal_id, Lease.kind == kind)
                               .with_for_update(skip_locked=True))
        if lease is None:  # locked right now by a worker claiming it
            return False
        if lease.owner not in (None, owner) and lease.expires_at is not None and lease.expires_at > now:
            return False
        lease.owner, lease.expires_at = owner, now + ttl
        session.commit()
        return True


def renew(services, portal_id: int, owner: str, kind: str = PORTAL, ttl: dt.timedelta = DEFAULT_TTL,
          clock: Callable[[], dt.datetime] = utcnow) -> bool:
    """Extend our lease; False if it is no longer ours (we were too slow and someone took it)."""
    with services.sessions() as session:
        lease = session.scalar(select(Lease).where(Lease.portal_id == portal_id, Lease.kind == kind)
                               .with_for_update())
        if lease is None or lease.owner != owner:
            return False
        lease.expires_at = clock() + ttl
        session.commit()
        return True


def release(services, portal_id: int, owner: str, kind: str = PORTAL) -> None:
    with services.sessions() as session:
        lease = session.scalar(select(Lease).where(Lease.portal_id == portal_id, Lease.kind == kind)
                               .with_for_update())
        if lease is not None and lease.owner == owner:
            lease.owner, lease.expires_at = None, None
            session.commit()


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
    The lease lasts `lease_seconds` (a setting) unless renewed."""
    owner = unit_owner(owner or services.settings.worker_id)
    ttl = ttl or dt.timedelta(seconds=services.settings.lease_seconds)
    if not claim(services, portal_id, owner, kind, ttl):
        yield None
        return

    def keep() -> None:
        if not renew(services, portal_id, owner, kind, ttl):
            raise LeaseLost(f"lease {kind} of portal {portal_id} lost")

    try:
        yield keep
    finally:
        release(services, portal_id, owner, kind)
