"""Leases: one holder per portal, expiry when the holder dies, no waiting between workers."""
from __future__ import annotations

import datetime as dt
import threading

import pytest

from addon.models import Lease
from tests.factories import make_portal
from addon import leases

T0 = dt.datetime(2026, 3, 2, 9, 0)


@pytest.fixture
def portal_id(services):
    with services.sessions() as s:
        p = make_portal(s)
        s.commit()
        return p.id


def at(moment):
    return lambda: moment


def test_one_holder_until_expiry(services, portal_id):
    ttl = dt.timedelta(minutes=5)
    assert leases.claim(services, portal_id, "w1", ttl=ttl, clock=at(T0))
    assert not leases.claim(services, portal_id, "w2", ttl=ttl, clock=at(T0 + dt.timedelta(minutes=4)))
    # The holder may claim again (renewal by claim) ...
    assert leases.claim(services, portal_id, "w1", ttl=ttl, clock=at(T0 + dt.timedelta(minutes=1)))
    # ... and a dead holder's lease expires: another worker takes the portal.
    assert leases.claim(services, portal_id, "w2", ttl=ttl, clock=at(T0 + dt.timedelta(minutes=7)))
    assert not leases.renew(services, portal_id, "w1", ttl=ttl, clock=at(T0 + dt.timedelta(minutes=7)))
    assert leases.renew(services, portal_id, "w2", ttl=ttl, clock=at(T0 + dt.timedelta(minutes=8)))


def test_release_frees_only_our_own(services, portal_id):
    assert leases.claim(services, portal_id, "w1", clock=at(T0))
    leases.release(services, portal_id, "w2")
    assert not leases.claim(services, portal_id, "w2", clock=at(T0))
    leases.release(services, portal_id, "w1")
    assert leases.claim(services, portal_id, "w2", clock=at(T0))


def _moved_clock(monkeypatch):
    """leases.utcnow, as holding() and keep() read it, moved forward by what the test sets."""
    offset = [dt.timedelta(0)]
    real = leases.utcnow
    monkeypatch.setattr(leases, "utcnow", lambda: real() + offset[0])
    return offset, real


def test_holding_context_renews_and_reports_loss(services, portal_id, monkeypatch):
    offset, real = _moved_clock(monkeypatch)
    ttl = dt.timedelta(minutes=5)
    with leases.holding(services, portal_id, "w1", ttl=ttl) as keep:
        assert keep is not None
        offset[0] = dt.timedelta(minutes=2)  # past a third of the lease: keep() renews it
        keep()  # renewing our own lease works
        with services.sessions() as session:
            assert session.get(Lease, (portal_id, "portal")).expires_at > real() + dt.timedelta(minutes=6)
        with leases.holding(services, portal_id, "w2") as other:
            assert other is None  # taken
        # Someone steals it after expiry: keep() says so instead of working on.
        leases.claim(services, portal_id, "w3", clock=lambda: real() + dt.timedelta(hours=1))
        offset[0] = dt.timedelta(minutes=4)
        with pytest.raises(leases.LeaseLost):
            keep()
    # Released on exit only if still ours: w3 keeps it.
    assert not leases.claim(services, portal_id, "w1")


def test_concurrent_claims_have_one_winner(services, portal_id):
    if services.settings.is_sqlite:
        pytest.skip("SQLite runs one worker; concurrent claims are a PostgreSQL matter")
    wins: list[str] = []
    barrier = threading.Barrier(8)

    def worker(name: str) -> None:
        barrier.wait()
        if leases.claim(services, portal_id, name):
            wins.append(name)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1


def test_a_worker_without_the_ping_meets_a_closed_connection_once(settings, portal_id):
    """The worker's engine has no pre-ping (addon.db.make_engine): when PostgreSQL closes its
    connections, the first statement on one fails (its unit fails as a whole and is reported), the
    pool drops what it held, and the next step works on a fresh connection."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from addon.services import build_services

    if settings.is_sqlite:
        pytest.skip("SQLite has no server to close a connection")
    worker = build_services(settings, pre_ping=False)
    try:
        assert not worker.engine.pool._pre_ping
        with worker.engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        admin = build_services(settings)
        with admin.engine.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
        admin.dispose()
        with pytest.raises(DBAPIError) as closed:
            leases.claim(worker, portal_id, "w1")
        assert closed.value.connection_invalidated
        assert leases.claim(worker, portal_id, "w1")
        with worker.engine.connect() as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() != pid
    finally:
        worker.dispose()


def test_keep_renews_only_once_a_third_of_the_lease_has_passed(services, portal_id, monkeypatch):
    """keep() between every chunk would be a statement each; before a third of the lease has
    passed nothing can have taken it, so keep() waits until then (a long run still renews)."""
    offset, _ = _moved_clock(monkeypatch)
    calls = []
    real_renew = leases.renew
    monkeypatch.setattr(leases, "renew", lambda *a, **k: calls.append(1) or real_renew(*a, **k))
    with leases.holding(services, portal_id, "w1", ttl=dt.timedelta(minutes=3)) as keep:
        offset[0] = dt.timedelta(seconds=59)
        for _ in range(5):
            keep()
        assert calls == []
        offset[0] = dt.timedelta(seconds=61)
        keep()
        keep()
        assert calls == [1]
        offset[0] = dt.timedelta(seconds=122)  # a third after that renewal: renewed again
        keep()
        assert calls == [1, 1]
