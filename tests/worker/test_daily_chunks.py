"""The daily run plans and sends chunk by chunk (memory bounded by a chunk, sending from the
start), survives a crash between chunks, keeps a lost client's status and hand-over in one update
across chunks; and the add-on's default pace never overruns the portal's leaky bucket."""
from __future__ import annotations

import datetime as dt
import random
from collections import Counter

import pytest
from sqlalchemy import func, select

from addon import outbox
from addon.models import JobRun, Outbox, StatusHistory
from tests.worker.conftest import DAY0, at
from tests.worker.simulation import outcome, prepare, writes_per_client

CHUNK = 7


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr("worker.daily.PLAN_CHUNK", CHUNK)


def decay_lines(h) -> int:
    with h.services.sessions() as s:
        return s.scalar(select(func.count()).select_from(StatusHistory).where(
            StatusHistory.portal_id == h.portal_id, StatusHistory.cause == "decay"))


def all_due(h, n: int, code: str = "HOT", days_ago: int = 40) -> None:
    """`n` contacts whose status ran out before DAY0 (all due on the same day: keyset ties on id)."""
    for cid in range(1, n + 1):
        h.put_status("contact", cid, code, at(DAY0 - dt.timedelta(days=days_ago), 10))
    h.reindex(at(DAY0, 8))


def test_each_chunk_is_committed_and_sent_before_the_next_is_read(harness, small_chunks, monkeypatch):
    h = harness
    h.dp.seed(departments=2, managers=4, contacts=30, companies=0, months_of_calls=0, deals=0, rng_seed=5)
    h.install()
    all_due(h, 30)
    seen = []
    real = outbox.send_outbox

    def watching(services, client, portal_id, limit=None):
        seen.append((decay_lines(h), len(h.calls("crm.contact.update", in_batch=True))))
        return real(services, client, portal_id, limit)

    monkeypatch.setattr(outbox, "send_outbox", watching)
    summary = h.daily(at(DAY0, 9))
    assert summary.decayed == 30 and summary.writes_sent == 30
    # flush, then one send per chunk of 7 (the last chunk has 2), then the digest's send.
    decayed_at_send = [d for d, _ in seen]
    assert decayed_at_send[1:6] == [7, 14, 21, 28, 30]
    # Each send found the previous chunk's writes already at the portal.
    assert [w for _, w in seen][1:6] == [0, 7, 14, 21, 28]
    assert max(writes_per_client(h).values()) == 1
    with h.services.sessions() as s:
        job = s.scalars(select(JobRun).where(JobRun.kind == "daily")).one()
        assert job.status == "done" and job.progress_done == 30
        assert s.scalar(select(func.count()).select_from(Outbox).where(Outbox.status != "sent")) == 0


class Crash(Exception):
    pass


def test_a_crash_between_chunks_then_a_rerun_equals_an_uninterrupted_run(portal_factory, small_chunks,
                                                                          monkeypatch):
    reference, victim = portal_factory(), portal_factory()
    prepare(reference, contacts=60, companies=10)
    prepare(victim, contacts=60, companies=10)
    reference.daily(at(DAY0, 9, 30))
    expected = outcome(reference)
    expected_writes = writes_per_client(reference)
    assert len(expected_writes) > 3 * CHUNK

    real = outbox.send_outbox
    calls = Counter()

    def dying(services, client, portal_id, limit=None):
        calls["send"] += 1
        if calls["send"] == 4:  # the flush, chunks 1 and 2 sent; chunk 3 committed, not sent
            raise Crash
        return real(services, client, portal_id, limit)

    monkeypatch.setattr(outbox, "send_outbox", dying)
    with pytest.raises(Crash):
        victim.daily(at(DAY0, 9, 30))
    assert 0 < len(writes_per_client(victim)) < len(expected_writes)
    assert victim.dp.notifications == []  # the digest comes after the last chunk
    monkeypatch.setattr(outbox, "send_outbox", real)

    summary = victim.daily(at(DAY0, 9, 45))
    assert outcome(victim) == expected
    assert writes_per_client(victim) == expected_writes
    assert max(writes_per_client(victim).values()) == 1
    assert summary.decayed == len(expected_writes)
    tags = Counter(n["tag"] for n in victim.dp.notifications)
    assert tags and max(tags.values()) == 1


def test_losses_in_every_chunk_keep_status_opened_and_new_assignee_in_one_update(harness, small_chunks):
    h = harness
    info = h.dp.seed(departments=2, managers=6, contacts=20, companies=0, months_of_calls=0, deals=0, rng_seed=7)
    h.install(open_to_all_on_loss=True, transfer_mode="supervisor")
    manager = info["manager_ids"][-1]
    for cid in range(1, 21):
        h.dp.records["contact"][cid]["ASSIGNED_BY_ID"] = str(manager)
        h.dp.records["contact"][cid]["OPENED"] = "N"
        # Odd ones become LOST today, even ones only cool down one step.
        code, days = ("COLD", 95) if cid % 2 else ("HOT", 31)
        h.put_status("contact", cid, code, at(DAY0 - dt.timedelta(days=days), 10))
    h.reindex(at(DAY0, 8))
    summary = h.daily(at(DAY0, 9))
    assert summary.decayed == 20 and summary.losses == summary.transfers == 10
    dept = h.dp.users[manager]["UF_DEPARTMENT"][0]
    head = int(h.dp.departments[dept]["UF_HEAD"])
    updates = Counter(str(c["params"].get("id")) for c in h.calls("crm.contact.update", in_batch=True))
    assert set(updates.values()) == {1}
    for cid in range(1, 21, 2):
        record = h.dp.records["contact"][cid]
        assert h.portal_status("contact", cid) == "LOST"
        assert (record["OPENED"], int(record["ASSIGNED_BY_ID"])) == ("Y", head)
        assert h.row("contact", cid).assigned_by_id == head
    assert all(h.dp.records["contact"][c]["OPENED"] == "N" for c in range(2, 21, 2))


def test_the_default_pace_never_overruns_the_portals_bucket():
    """The add-on's Pace against the devportal's leaky bucket on one simulated clock: requests one
    after another, each reaching the portal after a transit time that varies from 0 to 0.45 s (under a request's 0.5 s share, so the pace, not the way, sets the time)."""
    from devportal.errors import RestError
    from devportal.portal import DevPortal

    from addon.config import Settings
    from addon.bitrix.bucket import Pace

    def run(rps: float, burst: int, seed: int) -> tuple[int, float]:
        rng = random.Random(seed)
        t = [0.0]
        base = dt.datetime(2026, 3, 2, 9, tzinfo=dt.timezone.utc)
        portal = DevPortal(rps=2.0, burst=50, clock=lambda: base + dt.timedelta(seconds=t[0]))
        portal.set_limits(enabled=True)
        pace = Pace(rps, burst, clock=lambda: t[0], sleep=lambda s: t.__setitem__(0, t[0] + max(s, 1e-6)))
        refused = 0
        for _ in range(400):
            pace.acquire()
            sent_at = t[0]
            t[0] = sent_at + rng.uniform(0.0, 0.45)  # on its way
            try:
                portal.take_rate_slot()
            except RestError:
                refused += 1
        return refused, t[0]

    s = Settings.from_env({"NEZABYT_ENV": "test"})
    assert (s.portal_rps, s.portal_burst) == (2.0, 48)
    for seed in range(5):
        refused, took = run(s.portal_rps, s.portal_burst, seed)
        assert refused == 0
        assert took <= (400 - 48) / 2.0 + 1.0  # at the portal's rate: no time given away
    # The whole 50 with no margin is refused as soon as the first request was the slowest on its way.
    assert sum(run(2.0, 50, seed)[0] for seed in range(5)) > 0
