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
    real_outbox, real_planned = outbox.send_outbox, outbox.send_planned

    def watching(services, client, portal_id, limit=None):
        seen.append(("outbox", decay_lines(h), len(h.calls("crm.contact.update", in_batch=True))))
        return real_outbox(services, client, portal_id, limit)

    def watching_planned(services, client, planned):
        seen.append(("planned", decay_lines(h), len(h.calls("crm.contact.update", in_batch=True))))
        return real_planned(services, client, planned)

    monkeypatch.setattr(outbox, "send_outbox", watching)
    monkeypatch.setattr(outbox, "send_planned", watching_planned)
    summary = h.daily(at(DAY0, 9))
    assert summary.decayed == 30 and summary.writes_sent == 30
    # flush, then one send per chunk of 7 (the last chunk has 2), sent as planned (nothing older
    # waits), then the digest's send.
    assert [k for k, _, _ in seen] == ["outbox"] + ["planned"] * 5 + ["outbox"]
    assert [d for _, d, _ in seen][1:6] == [7, 14, 21, 28, 30]
    # Each send found the previous chunk's writes already at the portal.
    assert [w for _, _, w in seen][1:6] == [0, 7, 14, 21, 28]
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

    real, real_planned = outbox.send_outbox, outbox.send_planned
    calls = Counter()

    def dying(*args, send=real):
        calls["send"] += 1
        if calls["send"] == 4:  # the flush, chunks 1 and 2 sent; chunk 3 committed, not sent
            raise Crash
        return send(*args)

    monkeypatch.setattr(outbox, "send_outbox", dying)
    monkeypatch.setattr(outbox, "send_planned", lambda *args: dying(*args, send=real_planned))
    with pytest.raises(Crash):
        victim.daily(at(DAY0, 9, 30))
    assert 0 < len(writes_per_client(victim)) < len(expected_writes)
    assert victim.dp.notifications == []  # the digest comes after the last chunk
    with victim.services.sessions() as s:  # chunk 3 was stored as being sent: the rerun checks it first
        assert s.scalar(select(func.count()).select_from(Outbox).where(Outbox.status == "sending")) == CHUNK
    monkeypatch.setattr(outbox, "send_outbox", real)
    monkeypatch.setattr(outbox, "send_planned", real_planned)

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


def test_a_chunk_queues_behind_older_waiting_writes_and_is_sent_after_them(harness, small_chunks, monkeypatch):
    """A write left waiting from before (its send failed) goes first: the chunk's writes are stored
    pending behind it and sent in order; once nothing waits, the next chunk is sent as planned."""
    h = harness
    h.dp.seed(departments=1, managers=2, contacts=10, companies=0, months_of_calls=0, deals=0, rng_seed=5)
    h.install()
    all_due(h, 10)
    with h.services.sessions() as s:
        outbox.plan_write(s, h.portal_id, "older:1", "crm.contact.update", {"id": 1, "fields": {"COMMENTS": "older"}})
        s.commit()
    seen = []
    real_outbox, real_planned = outbox.send_outbox, outbox.send_planned

    def watching(services, client, portal_id, limit=None):
        seen.append("outbox")
        if len(seen) == 1:
            return 0  # the run's first flush does not get through: the older write still waits
        return real_outbox(services, client, portal_id, limit)

    monkeypatch.setattr(outbox, "send_outbox", watching)
    monkeypatch.setattr(outbox, "send_planned", lambda *args: seen.append("planned") or real_planned(*args))
    summary = h.daily(at(DAY0, 9))
    assert summary.decayed == 10
    assert seen == ["outbox", "outbox", "planned", "outbox"]
    to_1 = [c["params"]["fields"] for c in h.calls("crm.contact.update", in_batch=True)
            if str(c["params"].get("id")) == "1"]
    assert len(to_1) == 2 and to_1[0] == {"COMMENTS": "older"} and "COMMENTS" not in to_1[1]
    assert max(writes_per_client(h).values()) == 1
    with h.services.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Outbox).where(Outbox.status != "sent")) == 0


def test_a_refused_batch_of_planned_writes_leaves_the_unsent_rest_pending(harness, monkeypatch):
    """The portal refuses the second batch before running it (the rate limit): that batch stays
    pending for a retry, the batches after it were never sent and go back to pending (no check
    against the portal needed), and the run's last send delivers them all, each once."""
    from addon.bitrix.batch import BatchCalls, BatchResult
    from addon.bitrix.errors import error_of

    h = harness
    h.dp.seed(departments=1, managers=2, contacts=12, companies=0, months_of_calls=0, deals=0, rng_seed=5)
    h.install()
    all_due(h, 12)
    monkeypatch.setattr(outbox, "SEND_CHUNK", 4)
    real_batch, batches = BatchCalls.batch, Counter()
    states = []

    def refusing_second(client, commands, halt=False):
        if any(m == "crm.contact.update" for m, _ in commands.values()):
            batches["writes"] += 1
            if batches["writes"] == 2:
                with h.services.sessions() as s:
                    states.append(Counter(s.scalars(select(Outbox.status))))
                error = error_of({"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"},
                                 503, "batch")
                return BatchResult(errors={k: error for k in commands})
        return real_batch(client, commands, halt)

    monkeypatch.setattr(BatchCalls, "batch", refusing_second)
    summary = h.daily(at(DAY0, 9))
    assert summary.decayed == 12 and summary.writes_sent == 12
    assert states == [Counter({"sent": 4, "sending": 8})]  # stored as being sent, the first batch marked
    assert h.calls("crm.contact.get", in_batch=True) == []  # nothing needed checking
    assert writes_per_client(h) == {("crm.contact.update", str(i)): 1 for i in range(1, 13)}
    with h.services.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Outbox).where(Outbox.status != "sent")) == 0
