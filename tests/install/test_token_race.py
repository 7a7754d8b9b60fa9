"""Concurrent refreshes of one portal's token make ONE call to the auth server: threads on any
database, two OS processes on PostgreSQL (its row lock is what serialises separate machines)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import select, text

from addon.models import Portal
from addon.bitrix.tokens import refresh


def _install(devportal, app_server):
    s = app_server.services.settings
    devportal.portal.install_app(app_server.url, s.client_id, s.client_secret)
    with app_server.services.sessions() as session:
        portal = session.scalars(select(Portal)).one()
        return portal.id, app_server.services.cipher.decrypt(portal.access_token_enc)


def used_refresh_tokens(dp) -> int:
    return sum(1 for info in dp.refresh_tokens.values() if info["used"])


def test_threads_refreshing_the_same_stale_token_make_one_refresh_call(services, devportal, app_server):
    portal_id, stale = _install(devportal, app_server)
    devportal.portal.expire_tokens()
    barrier = threading.Barrier(6)
    results, errors = [], []

    def worker():
        barrier.wait()
        try:
            results.append(refresh(services, portal_id, stale))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert len(results) == 6 and len(set(results)) == 1 and results[0] != stale
    assert used_refresh_tokens(devportal.portal) == 1


SCRIPT = """
import sys
from addon.config import Settings
from addon.services import build_services
from addon.bitrix.tokens import refresh
services = build_services(Settings.from_env())
print(refresh(services, int(sys.argv[1]), sys.argv[2]))
"""


def test_two_processes_refreshing_at_once_make_one_refresh_call(services, devportal, app_server):
    if services.settings.is_sqlite:
        pytest.skip("separate processes are serialised by PostgreSQL's row lock")
    portal_id, stale = _install(devportal, app_server)
    devportal.portal.expire_tokens()
    s = services.settings
    env = {**os.environ, "DATABASE_URL": s.database_url, "NEZABYT_SECRET_KEY": s.secret_key,
           "NEZABYT_CLIENT_ID": s.client_id, "NEZABYT_CLIENT_SECRET": s.client_secret}
    # Hold the portal's row so both processes queue on the lock, then let them race.
    gate = services.engine.connect()
    transaction = gate.begin()
    gate.execute(text("SELECT id FROM portal WHERE id = :id FOR UPDATE"), {"id": portal_id})
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(portal_id), stale], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        deadline = time.monotonic() + 30
        while _waiting_on_locks(services) < 2:  # both are blocked on the row: the race is set
            assert time.monotonic() < deadline, "the processes never reached the lock"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.05)
    finally:
        transaction.commit()
        gate.close()
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    tokens = {out.strip() for out, _ in outputs}
    assert len(tokens) == 1 and stale not in tokens
    assert used_refresh_tokens(devportal.portal) == 1


def _waiting_on_locks(services) -> int:
    with services.engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                 "AND datname = current_database()")).scalar()
